"""Exact dedup across all sources on normalized content (NFKC, case and whitespace folded).

The first row in canonical order (source order in the config, then input order) is kept;
every later copy goes to the ledger as `exact_duplicate` with `duplicate_of` naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate.rows import dedup_keys
from curate.steps import GlobalStep, Verdicts


class ExactDedup(GlobalStep):
    name = "exact_dedup"
    stage = "exact_dedup"
    version = "1"

    def params(self) -> dict[str, Any]:
        return {"normalization": "nfkc+lower+whitespace", "keep": "source_order,input_order"}

    def keys(self, batch: pa.Table) -> pa.Table:
        return pa.table({"dedup_key": dedup_keys(batch)})

    def resolve(self, keys: pa.Table) -> Verdicts:
        frame = pl.from_arrow(keys.select(["id", "dedup_key"]))
        assert isinstance(frame, pl.DataFrame)
        frame = frame.with_columns(
            pl.col("id").first().over("dedup_key").alias("first_id"),
            (pl.int_range(pl.len()).over("dedup_key") > 0).alias("is_copy"),
        )
        copies = np.nonzero(frame["is_copy"].to_numpy())[0]
        twins = frame["first_id"].gather(copies).to_list()
        return Verdicts.reject(len(frame), copies, "exact_duplicate", [{"duplicate_of": t} for t in twins])
