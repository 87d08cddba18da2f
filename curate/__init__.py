"""curate: versioned, content-hashed fine-tuning mixtures.

The public API is imported lazily so that `import curate` (and `curate --help`) stays fast:
    curate.build(config) → BuildResult        curate.load(id, split="train") → datasets.Dataset
    curate.open_manifest(id) → Manifest
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "build", "load", "open_manifest", "verify", "export"]

if TYPE_CHECKING:
    from curate.api import build, export, load, open_manifest, verify


def __getattr__(name: str) -> Any:
    if name in ("build", "load", "open_manifest", "verify", "export"):
        from curate import api

        return getattr(api, name)
    raise AttributeError(f"module 'curate' has no attribute {name!r}")
