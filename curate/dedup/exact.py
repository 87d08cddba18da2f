"""Exact dedup across all sources on normalized content (NFKC, case and whitespace folded).

The first row in canonical order (source order in the config, then input order) is kept;
every later copy goes to the ledger as `exact_duplicate` with `duplicate_of` naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate.identity import dedup_keys
from curate.steps import GlobalStep, Verdicts

if TYPE_CHECKING:
    from curate.engines.base import Engine
    from curate.engines.spread import KeyParts


class ExactDedup(GlobalStep):
    name = "exact_dedup"
    stage = "exact_dedup"
    version = "1"

    def params(self) -> dict[str, Any]:
        return {"normalization": "nfkc+lower+whitespace", "keep": "source_order,input_order"}

    def keys(self, batch: pa.Table) -> pa.Table:
        return dedup_keys(batch)

    # on a distributed engine the hashes stay with the workers, grouped by h1 into parts:
    # copies meet in one task, which sends back only (copy, first) row pairs
    spread_keys = ("h1", "h2")
    partition_by = "h1"

    def resolve(self, keys: pa.Table) -> Verdicts:
        rows, first = copies_of(np.arange(keys.num_rows), keys.select(["h1", "h2"]))
        return self._verdicts(keys, rows, first)

    def resolve_spread(self, engine: Engine, keys: pa.Table, parts: KeyParts) -> Verdicts:
        found = engine.map(part_copies, [(parts, p) for p in range(parts.parts)], "exact (parts)")
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
    """Of `rows` (ascending) with their `hashes` (h1, h2): the rows whose content an earlier
    row has, and that earliest row of each."""
    frame = pl.from_arrow(hashes)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(pl.Series("row", rows, pl.Int64))
    first = pl.col("row").min().over("h1", "h2")
    copies = frame.select("row", first.alias("first")).filter(pl.col("row") != pl.col("first"))
    return copies["row"].to_numpy(), copies["first"].to_numpy()


def part_copies(parts: KeyParts, p: int) -> tuple[np.ndarray, np.ndarray]:
    """One part's copies (a task of `resolve_spread`): rows with equal hashes share a part."""
    rows, hashes = parts.part(p, ["h1", "h2"])
    return copies_of(rows, hashes) if len(rows) else (rows, rows)
