"""Exact dedup across all sources on normalized content (NFKC, case and whitespace folded).

The first row in canonical order (source order in the config, then input order) is kept;
every later copy goes to the ledger as `exact_duplicate` with `duplicate_of` naming it.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa

from curate.identity import dedup_keys
from curate.steps import GlobalStep, Verdicts


class ExactDedup(GlobalStep):
    name = "exact_dedup"
    stage = "exact_dedup"
    version = "1"

    def params(self) -> dict[str, Any]:
        return {"normalization": "nfkc+lower+whitespace", "keep": "source_order,input_order"}

    def keys(self, batch: pa.Table) -> pa.Table:
        return dedup_keys(batch)

    def resolve(self, keys: pa.Table) -> Verdicts:
        frame = pl.from_arrow(keys.select(["id", "h1", "h2"]))
        assert isinstance(frame, pl.DataFrame)
        frame = frame.with_row_index("row")
        first = pl.struct("h1", "h2").is_first_distinct()
        copies = frame.filter(~first)
        if copies.height == 0:
            return Verdicts.keep_all(frame.height)
        originals = frame.filter(first).select("h1", "h2", pl.col("id").alias("first_id"))
        copies = copies.join(originals, on=["h1", "h2"], how="left", maintain_order="left")
        # ids are hex (+ "#k"), so the JSON needs no escaping
        detail = ('{"duplicate_of": "' + copies["first_id"] + '"}').to_arrow().cast(pa.string())
        return Verdicts.reject(frame.height, copies["row"].to_numpy(), "exact_duplicate", detail)
