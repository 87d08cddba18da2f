"""The per-block files a mining run's workers write, read back without holding them.

A run's memory must not grow with its logs: the failures' text (prompts, turns, answers)
stays on disk. The run holds a slim frame of its failures (ids, reason, time, model,
origin), reads the text of the failures it needs by position (`at`: the place in block
order), and writes each stored object a piece at a time — block by block, or through
bucket files of ORDER_CHUNK rows where an object's order is not the blocks' — so that
what the run holds does not grow with its failures, and an object's bytes (and the
run's id) do not depend on memory or threads.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curate.manifests.store import Store
from curate.runner import release_freed

SLIM = ["log_id", "group", "reason", "timestamp", "model", "request_id", "origin"]
ORDER_CHUNK = 1 << 16  # rows per bucket file (and per row group) of an object in order
TEXT = {"prompt": pl.String, "messages": pl.String, "response": pl.String}


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


def _text(rows: pl.LazyFrame | pl.DataFrame, *keep: str) -> Any:
    """A failure's user turns, turns (JSON text) and first answer (TEXT), after `keep`."""
    turns = pl.col("messages").list.eval(pl.element().struct.json_encode()).list.join(",")
    return rows.select(
        *keep,
        "prompt",
        ("[" + turns + "]").alias("messages"),
        pl.col("responses").list.first().alias("response"),
    )


def fetch(paths: list[Path], at: pl.Series, columns: list[str] | None = None) -> pl.DataFrame:
    """The TEXT `columns` (all by default) of the failures at positions `at`, with `at`:
    one lazy query, so a column not asked for is neither read nor made."""
    scan = pl.scan_parquet([str(p) for p in paths]).with_row_index("at")
    found = _text(scan.filter(pl.col("at").is_in(at.implode())), "at")
    return found.select("at", *(columns or list(TEXT))).collect()


def put_ordered(
    rows: pl.DataFrame,
    paths: list[Path],
    store: Store,
    scratch: Path,
    schema: dict[str, Any],
    head: Iterable[pl.DataFrame] = (),
    order: np.ndarray | None = None,
) -> dict[str, Any]:
    """`rows` (in `order`: positions, as they are without), each with the TEXT of its
    failure (`at`: a position in `paths`), as one stored object of `schema`; `head`'s
    frames are written first.

    One pass over the parts sends each wanted row's text to the bucket file of its place
    in the order (ORDER_CHUNK places each); each bucket is then sorted and written as a
    row group: the run holds one part and one bucket, not every text."""
    if order is None:
        order = np.arange(rows.height)
    at = rows["at"].gather(order)
    wanted = pl.DataFrame([at]).with_row_index("place").sort("at")
    ats = wanted["at"].to_numpy()
    buckets = scratch.parent / f"{scratch.name}.buckets"
    buckets.mkdir(parents=True, exist_ok=True)
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    start = 0
    try:
        for part in paths:
            size = pq.read_metadata(part).num_rows
            lo, hi = (int(x) for x in np.searchsorted(ats, [start, start + size]))
            if hi > lo:
                sel = wanted.slice(lo, hi - lo)
                table = pl.read_parquet(part, columns=["prompt", "messages", "responses"])
                text = _text(table[(sel["at"] - start).cast(pl.Int64)])
                piece = text.with_columns(sel["place"], (sel["place"] // ORDER_CHUNK).alias("k"))
                for (k,), group in piece.partition_by("k", as_dict=True).items():
                    arrow = group.drop("k").to_arrow()
                    if k not in writers:
                        writers[k] = pa.ipc.new_file(str(buckets / f"{k}.arrow"), arrow.schema)
                    writers[k].write_table(arrow)
                release_freed()
            start += size
        for writer in writers.values():
            writer.close()
        pieces = (_bucket(rows, order, k, buckets / f"{k}.arrow") for k in _chunks(len(order)))
        frames = (f.select(list(schema)).to_arrow() for f in chain(head, pieces))
        return put_tables(frames, store, scratch, pl.DataFrame(schema=schema).to_arrow())
    finally:
        shutil.rmtree(buckets, ignore_errors=True)


def _chunks(n: int) -> range:
    return range(-(-n // ORDER_CHUNK))


def _bucket(rows: pl.DataFrame, order: np.ndarray, k: int, file: Path) -> pl.DataFrame:
    """The rows at places k·ORDER_CHUNK… of `order`, with the text their bucket holds."""
    rows = rows[order[k * ORDER_CHUNK : (k + 1) * ORDER_CHUNK]]
    with pa.memory_map(str(file)) as source:
        text = pl.from_arrow(pa.ipc.open_file(source).read_all())
    assert isinstance(text, pl.DataFrame)
    assert text.height == rows.height, f"bucket {k}: {text.height} texts for {rows.height} rows"
    return pl.concat([rows, text.sort("place").drop("place")], how="horizontal")


def put(
    paths: list[Path], store: Store, scratch: Path, extra: pl.DataFrame | None = None
) -> dict[str, Any]:
    """The blocks' rows as one stored object (`extra`: columns added, one row per row)."""

    def tables() -> Iterable[pa.Table]:
        rows = 0
        for part in paths:
            table = pq.read_table(part)
            if extra is not None:
                for name in extra.columns:
                    column = extra[name].slice(rows, table.num_rows).to_arrow()
                    table = table.append_column(name, column)
            rows += table.num_rows
            yield table

    empty = extra.to_arrow() if extra is not None else pa.table({})
    return put_tables(tables(), store, scratch, empty)


def put_tables(
    tables: Iterable[pa.Table], store: Store, scratch: Path, empty: pa.Table
) -> dict[str, Any]:
    """`tables` as one stored object, a row group each (`empty` where there are none)."""
    from curate.engines.passes import PARQUET_OPTIONS

    writer: pq.ParquetWriter | None = None
    rows = 0
    options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
    try:
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(str(scratch), table.schema, **options)
            writer.write_table(table.cast(writer.schema), row_group_size=max(table.num_rows, 1))
            rows += table.num_rows
            del table
            release_freed()  # a row group's buffers: the object's size must not stay held
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no blocks: an empty object
        pq.write_table(empty, str(scratch))
    sha = store.put_file(scratch, durable=False)
    store.sync_objects([sha])
    return {"object": sha, "rows": rows}
