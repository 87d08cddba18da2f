"""Checks of mixture.toml that types cannot express: names, paths, weights, roles, splits.

They read the raw TOML, so they run (and report) even where a value has the wrong type.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from curate.config import POSITIVE_ROLES, data_suffix, expand_path, is_hf_dataset_dir
from curate.errors import Problem


def check_semantics(raw: dict[str, Any], base_dir: Path, file: str | None) -> list[Problem]:
    """Checks types cannot express; they read the raw TOML, so they run even when a type is wrong."""
    problems: list[Problem] = []
    sources = raw.get("sources")
    sources = [s for s in sources if isinstance(s, dict)] if isinstance(sources, list) else []
    seen: dict[str, int] = {}
    weights: list[float] = []
    for i, src in enumerate(sources):
        name = src.get("name")
        key = f"sources[{i}]" + (f" ({name!r})" if name else "")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    Problem(
                        f"{key}.name",
                        f"duplicate source name (also sources[{seen[name]}])",
                        name,
                        file,
                    )
                )
            seen.setdefault(name, i)
        weight = src.get("weight")
        if isinstance(weight, int | float) and not isinstance(weight, bool):
            if not math.isfinite(weight) or weight < 0:
                problems.append(
                    Problem(f"{key}.weight", "must be a finite number >= 0", weight, file)
                )
            else:
                weights.append(float(weight))
        path = src.get("path")
        found = expand_path(base_dir, path) if isinstance(path, str) else []
        if isinstance(path, str) and not found:
            problems.append(
                Problem(f"{key}.path", f"no data file matches (looked in {base_dir})", path, file)
            )
        for f in found:
            if f.exists() and not f.is_dir() and not f.is_file():
                problems.append(
                    Problem(
                        f"{key}.path",
                        f"{f} is not a regular file (a device, pipe or socket, or a link to "
                        "one): curate reads only files and save_to_disk folders",
                        path,
                        file,
                    )
                )
                continue
            if not (f.is_dir() and is_hf_dataset_dir(f)) and (f.is_dir() or data_suffix(f) is None):
                problems.append(
                    Problem(
                        f"{key}.path",
                        f"cannot read {f.name}: use .jsonl, .json, .parquet or .csv (optionally .gz, .bz2, .xz) or a save_to_disk folder",
                        path,
                        file,
                    )
                )
    given = [i for i, src in enumerate(sources) if "weight" in src]
    if given and len(given) < len(sources):
        missing = ", ".join(f"sources[{i}]" for i in range(len(sources)) if i not in given)
        problems.append(
            Problem(
                "sources.weight",
                f"give every source a weight, or none (none: every row is kept); missing on {missing}",
                None,
                file,
            )
        )
    elif sources and len(weights) == len(sources) and sum(weights) <= 0:
        problems.append(
            Problem(
                "sources.weight",
                "weights sum to 0: at least one source needs a weight > 0",
                sum(weights),
                file,
            )
        )
    evals = raw.get("evals")
    for i, ev in enumerate(evals if isinstance(evals, list) else []):
        path = ev.get("path") if isinstance(ev, dict) else None
        if isinstance(path, str):
            full = Path(path) if Path(path).is_absolute() else base_dir / path
            if not full.is_file():
                problems.append(
                    Problem(
                        f"evals[{i}].path", f"file not found (looked in {base_dir})", path, file
                    )
                )
    template = _section(raw, "tokenizer").get("chat_template")
    if isinstance(template, str):
        full = Path(template) if Path(template).is_absolute() else base_dir / template
        if not full.is_file():
            problems.append(
                Problem(
                    "tokenizer.chat_template",
                    f"file not found (looked in {base_dir})",
                    template,
                    file,
                )
            )
    problems += _check_split(_section(raw, "split"), sources, file)
    problems += _check_roles(raw, sources, file)
    if _section(raw, "mixture").get("unit") == "tokens" and not raw.get("tokenizer"):
        problems.append(
            Problem(
                "mixture.unit",
                "'tokens' weighs sources by token counts, which need a [tokenizer] section",
                "tokens",
                file,
            )
        )
    for i, src in enumerate(sources):
        schema = src.get("json_schema")
        if isinstance(schema, str):
            key = f"sources[{i}]" + (f" ({src['name']!r})" if src.get("name") else "")
            full = Path(schema) if Path(schema).is_absolute() else base_dir / schema
            try:
                from curate.validators.quality import load_schema

                load_schema(full)
            except (OSError, ValueError) as exc:
                why = "file not found" if isinstance(exc, OSError) else str(exc)
                problems.append(Problem(f"{key}.json_schema", why, schema, file))
    overrides = raw.get("overrides")
    for i, section in enumerate(overrides if isinstance(overrides, list) else []):
        path = section.get("path") if isinstance(section, dict) else None
        if isinstance(path, str):
            full = Path(path) if Path(path).is_absolute() else base_dir / path
            if not full.is_file():
                problems.append(
                    Problem(
                        f"overrides[{i}].path",
                        f"decisions file not found (looked in {base_dir}); `curate review ID "
                        "--decide` writes one",
                        path,
                        file,
                    )
                )
    return problems


def _check_split(
    split: dict[str, Any], sources: list[dict[str, Any]], file: str | None
) -> list[Problem]:
    problems = []
    shares = [split.get(k, 0) for k in ("validation", "test")]
    in_range = all(isinstance(v, int | float) and 0 <= v < 1 for v in shares)
    if in_range and sum(shares) >= 1:
        problems.append(
            Problem(
                "split",
                "validation + test must leave rows to train on (sum < 1)",
                sum(shares),
                file,
            )
        )
    by = split.get("by", "row")
    if split.get("time_cutoff") is not None and by in ("row", "cluster"):
        problems.append(
            Problem(
                "split.time_cutoff",
                'a split by time needs `by = "meta.FIELD"`, the field holding each row\'s time',
                split.get("time_cutoff"),
                file,
            )
        )
    holdout = split.get("holdout_sources") or []
    names = {s.get("name") for s in sources}
    for name in holdout if isinstance(holdout, list) else []:
        if name not in names:
            problems.append(Problem("split.holdout_sources", "no source has this name", name, file))
    held_out = holdout or split.get("time_cutoff") is not None
    if held_out and all(isinstance(v, int | float) for v in shares) and sum(shares) == 0:
        problems.append(
            Problem(
                "split",
                "held-out rows (holdout_sources, time_cutoff) go to validation or test: "
                "give `validation` or `test` a share > 0",
                None,
                file,
            )
        )
    return problems


def _check_roles(
    raw: dict[str, Any], sources: list[dict[str, Any]], file: str | None
) -> list[Problem]:
    mixture = _section(raw, "mixture")
    roles = mixture.get("roles")
    problems = []
    for i, src in enumerate(sources):
        if src.get("max_tokens") is not None and mixture.get("unit", "rows") != "tokens":
            problems.append(
                Problem(
                    f"sources[{i}].max_tokens",
                    'caps tokens of a mixture in tokens: set [mixture] unit = "tokens"',
                    src.get("max_tokens"),
                    file,
                )
            )
    if not isinstance(roles, dict):
        return problems
    present = {s.get("role", "task") for s in sources}
    floors = 0.0
    for role, limits in roles.items():
        if not isinstance(limits, dict):
            continue
        key = f"mixture.roles.{role}"
        lo, hi = limits.get("min_share"), limits.get("max_share")
        if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
            problems.append(Problem(key, f"min_share {lo} is above max_share {hi}", None, file))
        if isinstance(lo, int | float):
            floors += lo
            if lo > 0 and role not in present:
                problems.append(
                    Problem(
                        f"{key}.min_share",
                        f"no source has role {role!r}, so no row can meet this floor; "
                        f'add one (role = "{role}") or remove the floor',
                        lo,
                        file,
                    )
                )
        positive = limits.get("min_positive_share")
        if positive is not None and role != "mined":
            problems.append(
                Problem(
                    f"{key}.min_positive_share",
                    "applies to role 'mined' only (the share of rows the model already handles well)",
                    positive,
                    file,
                )
            )
        elif (
            isinstance(positive, int | float) and positive > 0 and not present & set(POSITIVE_ROLES)
        ):
            problems.append(
                Problem(
                    f"{key}.min_positive_share",
                    "no source has role task, general or replay to supply positive rows",
                    positive,
                    file,
                )
            )
    if floors > 1 + 1e-9:
        problems.append(
            Problem(
                "mixture.roles",
                "the roles' min_share add up to more than 1",
                round(floors, 6),
                file,
            )
        )
    return problems


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    node = raw.get(name)
    return node if isinstance(node, dict) else {}
