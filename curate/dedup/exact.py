"""Exact dedup across all sources on normalized content (NFKC, case and whitespace folded).

The first row in canonical order (source order in the config, then input order) is kept —
a row of a preferred source (role = "mined") before any other; every other copy goes to the
ledger as `exact_duplicate` with `duplicate_of` naming the kept row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curate.identity import dedup_keys
from curate.steps import GlobalStep, Verdicts

if TYPE_CHECKING:
    from curate.engines.base import Engine
    from curate.engines.spread import KeyParts


class ExactDedup(GlobalStep):
    name = "exact_dedup"
    stage = "exact_dedup"
    version = "1"

    def __init__(self, preferred: tuple[str, ...] = ()):
        # sources whose rows win a tie (role = "mined": a correction is kept, and the
        # task row it repeats goes), before source and input order
        self.preferred = tuple(sorted(preferred))
        self.hashes = ("h1", "h2", "pref") if self.preferred else ("h1", "h2")

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "normalization": "nfkc+lower+whitespace",
            "keep": "source_order,input_order",
        }
        if self.preferred:  # (absent otherwise: a build without them keeps its id)
            out |= {"keep": "preferred,source_order,input_order", "preferred": self.preferred}
        return out

    def keys(self, batch: pa.Table) -> pa.Table:
        keys = dedup_keys(batch)
        if not self.preferred:
            return keys
        pref = pc.is_in(batch.column("source"), pa.array(self.preferred, pa.string()))
        return keys.append_column("pref", pc.fill_null(pref, False))

    # on a distributed engine the hashes stay with the workers, grouped by h1 into parts:
    # copies meet in one task, which sends back only (copy, first) row pairs (`pref` only
    # where some sources are preferred: a key column absent is not spread)
    spread_keys = ("h1", "h2", "pref")
    partition_by = "h1"

    def resolve(self, keys: pa.Table) -> Verdicts:
        rows, first = copies_of(np.arange(keys.num_rows), keys.select(list(self.hashes)))
        return self._verdicts(keys, rows, first)

    def resolve_spread(self, engine: Engine, keys: pa.Table, parts: KeyParts) -> Verdicts:
        tasks = [(parts, p, self.hashes) for p in range(parts.parts)]
        found = engine.map(part_copies, tasks, "exact (parts)")
        rows = np.concatenate([np.empty(0, dtype=np.int64), *[r for r, _ in found]])
        first = np.concatenate([np.empty(0, dtype=np.int64), *[f for _, f in found]])
        order = np.argsort(rows)
        return self._verdicts(keys, rows[order], first[order])

    def _verdicts(self, keys: pa.Table, rows: np.ndarray, first: np.ndarray) -> Verdicts:
        """Reject each copy (`rows`, ascending) naming the first row with its content."""
        if len(rows) == 0:
            return Verdicts.keep_all(keys.num_rows)
        first_ids = pl.Series(keys.column("id").combine_chunks().take(pa.array(first)))
        # ids are hex (+ "#k"), so the JSON needs no escaping
        detail = ('{"duplicate_of": "' + first_ids + '"}').to_arrow().cast(pa.string())
        return Verdicts.reject(keys.num_rows, rows, "exact_duplicate", detail)


def copies_of(rows: np.ndarray, hashes: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Of `rows` (ascending) with their `hashes` (h1, h2, and `pref` where some sources win
    ties): the rows whose content another row has, and the row kept of each — a preferred
    one first, then the earliest."""
    frame = pl.from_arrow(hashes)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(pl.Series("row", rows, pl.Int64))
    if "pref" in frame.columns:
        rank = pl.when(pl.col("pref")).then(pl.lit(0)).otherwise(pl.lit(1))
        first = pl.col("row").sort_by([rank, pl.col("row")]).first().over("h1", "h2")
    else:
        first = pl.col("row").min().over("h1", "h2")
    copies = frame.select("row", first.alias("first")).filter(pl.col("row") != pl.col("first"))
    return copies["row"].to_numpy(), copies["first"].to_numpy()


def part_copies(
    parts: KeyParts, p: int, names: tuple[str, ...] = ("h1", "h2")
) -> tuple[np.ndarray, np.ndarray]:
    """One part's copies (a task of `resolve_spread`): rows with equal hashes share a part."""
    rows, hashes = parts.part(p, list(names))
    return copies_of(rows, hashes) if len(rows) else (rows, rows)
