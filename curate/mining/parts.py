"""The per-block files a mining run's workers write, read back without holding them.

A run's memory must not grow with its logs: the failures' text (turns, answers, details)
stays on disk. The run holds a slim frame of its failures (ids, reason, the prompt's user
turns, time, model, origin), fetches the turns and answer of the few failures that become
candidates by position, and writes each stored object block by block (one Parquet row
group per block), so that the object's bytes — and the run's id — do not depend on memory
or threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curate.manifests.store import Store

SLIM = ["log_id", "group", "prompt", "reason", "timestamp", "model", "request_id", "origin"]


def path(work: Path, kind: str, number: int) -> Path:
    """Where block `number` writes its `kind` (failures, positives, answers, ...)."""
    return work / f"{kind}-{number:06d}.parquet"


def files(work: Path, kind: str, parts: list[dict[str, Any]]) -> list[Path]:
    return [path(work, kind, p["number"]) for p in parts]


def slim(paths: list[Path]) -> pl.DataFrame:
    """The failures' SLIM columns, in block order, with `at`: the position in that order."""
    frames = [pl.read_parquet(p, columns=SLIM) for p in paths]
    if not frames:
        return pl.DataFrame(schema={"at": pl.UInt32, "log_id": pl.String})
    return pl.concat(frames).with_row_index("at")


def fetch(paths: list[Path], at: pl.Series) -> pl.DataFrame:
    """The turns (JSON text) and first answer of the failures at positions `at`."""
    return (
        pl.scan_parquet([str(p) for p in paths])
        .with_row_index("at")
        .filter(pl.col("at").is_in(at.implode()))
        .select(
            "at",
            (
                "["
                + pl.col("messages").list.eval(pl.element().struct.json_encode()).list.join(",")
                + "]"
            ).alias("messages"),
            pl.col("responses").list.first().alias("response"),
        )
        .collect()
    )


def put(
    paths: list[Path], store: Store, scratch: Path, extra: pl.DataFrame | None = None
) -> dict[str, Any]:
    """The blocks' rows as one stored object (`extra`: columns added, one row per row)."""
    from curate.engines.passes import PARQUET_OPTIONS

    writer: pq.ParquetWriter | None = None
    rows = 0
    options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
    try:
        for part in paths:
            table = pq.read_table(part)
            if extra is not None:
                for name in extra.columns:
                    column = extra[name].slice(rows, table.num_rows).to_arrow()
                    table = table.append_column(name, column)
            if writer is None:
                writer = pq.ParquetWriter(str(scratch), table.schema, **options)
            writer.write_table(table.cast(writer.schema), row_group_size=max(table.num_rows, 1))
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no blocks: an empty object
        empty = extra.to_arrow() if extra is not None else pa.table({})
        pq.write_table(empty, str(scratch))
    sha = store.put_file(scratch, durable=False)
    store.sync_objects([sha])
    return {"object": sha, "rows": rows}
