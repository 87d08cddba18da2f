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
from curate.steps import ReportView, RowStep, Verdicts


def percentiles(values: np.ndarray) -> dict[str, int]:
    if len(values) == 0:
        return {"p50": 0, "p95": 0, "p99": 0, "max": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99], method="lower")
    return {"p50": int(p50), "p95": int(p95), "p99": int(p99), "max": int(values.max())}


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

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        """Per source, over the rows kept: system-prompt variants (the text of the most
        common, read from the blocks) and length percentiles (tokens where a tokenizer
        counted them, else characters)."""
        from curate.engines.passes import read_ipc

        kept = view.kept
        unit = "tokens" if "n_tokens" in kept.columns else "chars"
        out: dict[str, Any] = {}
        for rank, name in enumerate(view.sources):
            mine = kept.filter(pl.col("source_rank") == rank)
            entry: dict[str, Any] = {}
            if "system_hash" in mine.columns and mine.height:
                variants = (
                    mine.group_by("system_hash")
                    .agg(pl.len().alias("rows"), pl.col("block").first(), pl.col("row").first())
                    .sort(["rows", "system_hash"], descending=[True, False])
                )
                top = []
                for h, rows, block, row in variants.head(3).iter_rows():
                    text = None
                    if h:
                        msgs = read_ipc(view.blocks[block]).column("messages")[row].as_py()
                        text = msgs[0]["content"]
                        text = text if len(text) <= 200 else text[:197] + "..."
                    top.append({"text": text, "rows": int(rows)})
                entry["system_prompts"] = {"variants": variants.height, "top": top}
            column = f"n_{unit}"
            lengths = (
                mine[column].drop_nulls().to_numpy() if column in mine.columns else np.zeros(0)
            )
            entry["lengths"] = {"unit": unit, **percentiles(lengths)}
            out[name] = entry
        return {"validation": out}
