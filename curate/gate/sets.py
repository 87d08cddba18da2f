"""A gate suite's items, read from an eval set (JSONL, CSV: the reader contamination uses),
filtered, sampled and hashed: the gate's result names the file and its sha256, so a gate
can be repeated on the same items and checked against a training manifest for leaks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.contamination.index import read_eval_table
from curate.errors import UserError
from curate.fsio import sha256_file


@dataclass(frozen=True)
class Items:
    suite: str
    path: str
    sha256: str
    rows: int  # rows of the file that passed `where` (before the sample)
    prompts: list[str]
    references: list[str | None]
    rows_taken: list[int] = field(default_factory=list)  # their row numbers in the file
    extra: list[dict[str, Any]] = field(default_factory=list)  # `fields` asked, per item


def load_items(
    suite: str,
    path: Path,
    prompt_field: str,
    reference_field: str | None = None,
    where: dict[str, str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    fields: tuple[str, ...] = (),
) -> Items:
    """The items of `path` for `suite`: rows matching `where` (column = value), at most
    `limit` of them (a seeded sample, kept in file order), with a prompt that is not empty.
    `fields` (e.g. a probe's `checks`, `options`, `answer`) come back per item in `extra`,
    JSON lists and objects parsed (the reader keeps them as JSON text)."""
    table = read_eval_table(path)
    wanted = [prompt_field, *([reference_field] if reference_field else []), *(where or {})]
    missing = [f for f in wanted if f not in table.column_names]
    if missing:
        raise UserError(
            f"gate suite {suite!r}: {path.name} has no column {', '.join(map(repr, missing))} "
            f"(it has {', '.join(table.column_names) or 'none'})"
        )
    keep = np.ones(table.num_rows, dtype=bool)
    for column, value in (where or {}).items():
        keep &= np.array([str(v) == value for v in _strings(table, column)], dtype=bool)
    prompts = _strings(table, prompt_field)
    keep &= np.array([bool(p and p.strip()) for p in prompts], dtype=bool)
    rows = np.nonzero(keep)[0]
    total = len(rows)
    if limit is not None and total > limit:
        rng = np.random.default_rng([seed, _stable(suite)])
        rows = np.sort(rng.choice(rows, size=limit, replace=False))
    references = _strings(table, reference_field) if reference_field else [None] * table.num_rows
    present = [f for f in fields if f in table.column_names]
    columns = {f: _strings(table, f) for f in present}
    extra = [{f: _parsed(columns[f][i]) for f in present} for i in rows]
    return Items(
        suite,
        str(path),
        sha256_file(path),
        total,
        [str(prompts[i]) for i in rows],
        [references[i] for i in rows],
        rows.tolist(),
        extra,
    )


def _parsed(value: str | None) -> Any:
    if value is not None and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _strings(table: Any, column: str) -> list[str | None]:
    values = table.column(column).to_pylist()
    return [None if v is None else str(v) for v in values]


def _stable(name: str) -> int:
    """A seed part from a name that does not change between processes (hash() does)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
