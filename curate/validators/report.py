"""Row statistics the manifest reports per source (the step never rejects).

- system-prompt consistency: a hash of each row's system prompt (0 for rows without one),
  so the manifest counts the variants per source and shows the most common ones: a model
  trained on several system prompts but served with one behaves unlike its validation;
- length: characters of the row's content, for percentiles when no tokenizer gives tokens.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curate.rows import content_chars, list_offsets
from curate.steps import RowStep, Verdicts


class RowStats(RowStep):
    name = "row_stats"
    stage = "row_stats"
    version = "1"
    index_columns: ClassVar[tuple[str, ...]] = ("system_hash", "n_chars")
    index_only: ClassVar[tuple[str, ...]] = ("system_hash", "n_chars")

    def params(self) -> dict[str, Any]:
        return {}

    def __call__(self, batch: pa.Table) -> Verdicts:
        n = batch.num_rows
        chars = content_chars(batch, ("messages", "chosen", "rejected"))
        hashes = np.zeros(n, dtype=np.uint64)
        messages = batch.column("messages").combine_chunks()
        if messages.null_count < n:
            items = messages.flatten()
            offsets = list_offsets(messages)
            rows = np.nonzero(np.diff(offsets) > 0)[0]
            first = items.take(pa.array(offsets[rows]))
            is_system = pc.fill_null(pc.equal(first.field("role"), "system"), False)
            rows = rows[is_system.to_numpy(zero_copy_only=False)]
            if len(rows):
                prompts = first.filter(is_system).field("content")
                hashed = pl.Series(prompts).hash(0x5157).to_numpy()
                hashes[rows] = np.maximum(hashed, 1)  # 0 stands for "no system prompt"
        columns = pa.table(
            {
                "system_hash": pa.array(hashes, pa.uint64()),
                "n_chars": pa.array(chars, pa.int64()),
            }
        )
        return Verdicts.keep_all(n).with_columns(columns)
