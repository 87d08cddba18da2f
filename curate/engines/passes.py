"""The per-block work of a build, as plain functions an engine maps over blocks.

- `ingest`: read and normalize a block (or take it from the cache), run the first segment of
  steps on it, and return its index (ids, order, verdicts, the index columns steps declare)
  and, apart, the keys the next global step needs.
- `run_segment`: run a later segment (row steps after a global step) on a cached block.
- `emit`: split a block into ledger rows and output rows, the latter bucketed by the output
  shard they belong to, so that `gather` can write each shard in its shuffled order with
  bounded memory.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.engines.stepcache import SegmentOut, StepCache, kept_in_block, segment_key
from curate.fsio import atomic_path, discard, is_sealed, seal
from curate.readers import read_block
from curate.rows import BUILD_SCHEMA, ROW_SCHEMA, TOKEN_FIELDS
from curate.sources import BlockTask
from curate.steps import GlobalStep, RowStep

LEDGER_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        *[
            BUILD_SCHEMA.field(n)
            for n in ("kind", "messages", "text", "chosen", "rejected", "meta", "origin", "raw")
        ],
    ]
)
VERDICT_COLUMNS = ("stage", "reason", "detail")


def output_schema(names: list[str]) -> pa.Schema:
    """The rows' schema in the output: the row, plus its tokens when a tokenizer ran."""
    return pa.schema(list(ROW_SCHEMA) + [f for f in TOKEN_FIELDS if f.name in names])


def write_ipc(table: pa.Table, path: Path, temp_dir: Path | None = None) -> None:
    """Arrow IPC file, written atomically (never half-written); not fsynced: these are
    scratch and cache files, which a crash only costs a recomputation of.

    Uncompressed on purpose: they are read back memory-mapped.
    """
    with (
        atomic_path(path, durable=False, temp_dir=temp_dir) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        writer.write_table(table)


def read_ipc(path: str | Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def ingest(
    task: BlockTask,
    cache_file: str,
    row_steps: list[RowStep],
    key_step: GlobalStep | None,
    meta_fields: dict[str, str],
    block_out: str,
    keeps: dict[str, str | None] | None = None,
    cache: StepCache | None = None,
    state: str | None = None,
    spill: tuple[str, int] | None = None,
) -> SegmentOut:
    """Read a block (or take it from the cache) and run the first segment of steps on it.

    Returns the block's index (ids, order, verdicts, the steps' index columns, and the
    `meta_fields` {index column: meta field} a later stage groups or orders by), the next
    global step's keys (or None), and, when a step added or rewrote columns, the file
    (`block_out`, or the step cache's) now holding the block with them, which later passes
    read instead of `cache_file`. With a step `cache` and the block's `state` (its read
    key), an entry made earlier for the same block, steps and decisions is used instead.
    With `spill`, the key step's `spread_keys` go to that file, not back (`keep_keys`).
    """
    table = None
    read = False
    key = None
    if cache is not None and state is not None:
        kept: list = []
        if keeps:  # which decisions name rows of this block: the ids tell
            table, read = _read_block(task, cache_file, cache.scratch)
            kept = kept_in_block(table.column("id"), keeps)
        key = segment_key(state, row_steps, key_step, None, meta_fields, kept)
        if (found := cache.load(key)) is not None:
            if found.block is None and not is_sealed(cache_file):  # later passes read it
                found.read = _read_block(task, cache_file, cache.scratch)[1] or read
            return keep_keys(found, key_step, spill)
        block_out = cache.block_path(key)
    if table is None:
        table, read = _read_block(task, cache_file, Path(block_out).parent)
    index = table.select(["id", "order", *VERDICT_COLUMNS])
    alive = pc.is_null(table.column("reason")).to_numpy(zero_copy_only=False)
    update, keys, augmented = _apply(table, alive, row_steps, key_step, keeps)
    for name in VERDICT_COLUMNS:
        # `update` only holds a verdict where a step decided, or rewrote the evidence of a
        # row rejected while reading (redaction): it comes first
        merged = pc.coalesce(update.column(name), index.column(name))
        index = index.set_column(index.schema.get_field_index(name), name, merged)
    for name in update.column_names:
        if name not in VERDICT_COLUMNS:
            index = index.append_column(name, update.column(name))
    for column, field in meta_fields.items():
        values = pc.utf8_slice_codeunits(
            pc.cast(_meta_field(table.column("meta"), field), pa.string()), 0, 1 << 20
        )
        index = index.append_column(column, values)
    out = _finish(SegmentOut(index, keys, None, key, read=read), augmented, block_out, cache)
    return keep_keys(out, key_step, spill)


def keep_keys(
    out: SegmentOut, key_step: GlobalStep | None, spill: tuple[str, int] | None
) -> SegmentOut:
    """Where a distributed engine resolves `key_step` in parts: its `spread_keys` columns
    written to `spill` (a path, and how many parts its rows are grouped in by the step's
    `partition_by` column: `engines.spread.spill`), only the others sent back."""
    if spill is None or key_step is None or out.keys is None:
        return out
    from curate.engines.spread import spill as write_spill

    path, parts = spill
    spread = [c for c in key_step.spread_keys if c in out.keys.column_names]
    write_spill(out.keys, spread, Path(path), key_step.partition_by, parts)
    return dataclasses.replace(out, keys=out.keys.drop_columns(spread), spilled=path)


def _read_block(task: BlockTask, cache_file: str, scratch: Path) -> tuple[pa.Table, bool]:
    """The block as read: from `cache_file` when it is sealed, else read from its source
    file and cached there. Returns it, and whether the source file was read."""
    path = Path(cache_file)
    if is_sealed(path):  # an entry edited, damaged or never finished is read again
        try:
            return read_ipc(path), False
        except (OSError, pa.ArrowInvalid):
            pass
    discard(path)
    table = read_block(task)
    write_ipc(table, path, temp_dir=scratch)
    seal(path)
    return table, True


def _finish(
    out: SegmentOut, augmented: pa.Table | None, block_out: str, cache: StepCache | None
) -> SegmentOut:
    """Write the block with the steps' columns (if any) and, with a cache, the entry."""
    if augmented is not None:
        scratch = cache.scratch if cache is not None else Path(block_out).parent
        write_ipc(augmented, Path(block_out), temp_dir=scratch)
        out.block = block_out
    if cache is not None and out.state is not None:
        cache.save(out)
    return out


def _meta_field(meta: pa.ChunkedArray, field: str) -> pa.Array:
    import polars as pl

    series = pl.Series(meta.combine_chunks().cast(pa.string()))
    path = "$." + field if field.isidentifier() else f'$["{field}"]'
    return series.str.json_path_match(path).to_arrow()


def run_segment(
    block_file: str,
    alive: np.ndarray,
    row_steps: list[RowStep],
    key_step: GlobalStep | None,
    block_out: str,
    keeps: dict[str, str | None] | None = None,
    cache: StepCache | None = None,
    state: str | None = None,
    spill: tuple[str, int] | None = None,
) -> SegmentOut:
    """A later segment over a block (`alive`: its rows still alive), from the step cache
    when an entry for the block's `state`, these rows, steps and decisions exists; `spill`
    as for `ingest`."""
    table = read_ipc(block_file)
    key = None
    if cache is not None and state is not None:
        kept = kept_in_block(table.column("id"), keeps)
        key = segment_key(state, row_steps, key_step, alive, {}, kept)
        if (found := cache.load(key)) is not None:
            return keep_keys(found, key_step, spill)
        block_out = cache.block_path(key)
    update, keys, augmented = _apply(table, alive, row_steps, key_step, keeps)
    out = _finish(SegmentOut(update, keys, None, key), augmented, block_out, cache)
    return keep_keys(out, key_step, spill)


def run_keys(
    block_file: str, alive: np.ndarray, key_step: GlobalStep, start: int, stop: int
) -> pa.Table:
    """A global step's keys for rows [start, stop) of a block (`alive` covers those rows):
    the engine splits blocks this way for steps whose keys are costly per row."""
    table = read_ipc(block_file).slice(start, stop - start)
    _, keys, _ = _apply(table, alive, [], key_step)
    assert keys is not None
    return keys


def _apply(
    table: pa.Table,
    alive: np.ndarray,
    row_steps: list[RowStep],
    key_step: GlobalStep | None,
    keeps: dict[str, str | None] | None = None,
) -> tuple[pa.Table, pa.Table | None, pa.Table | None]:
    """Row steps in order on the rows still alive, then the next global step's keys.

    Returns, aligned with `table`: stage/reason/detail for rows a row step rejected (null
    elsewhere) with the index columns the steps declare; apart, the key columns of
    `key_step` (null for rows not alive; None without one), which are spent once it
    resolves and must not mix with index columns that live on; and the block with the
    columns the steps added or rewrote (None when no step did).
    """
    n = table.num_rows
    stage = np.full(n, None, dtype=object)
    reason = np.full(n, None, dtype=object)
    detail = np.full(n, None, dtype=object)
    overridden = np.full(n, None, dtype=object)  # the reason a keep decision overturned
    alive = alive.copy()
    changed = False
    index_names: list[str] = []
    stats: dict[str, pa.Array] = {}  # index-only columns, not added to the rows
    dead = np.nonzero(~alive)[0]
    for step in row_steps:
        if step.scrubs_rejected and len(dead):  # what rejected rows keep of their text
            scrubbed = step.scrub_rejected(_rows(table, dead))
            detail[dead] = np.asarray(scrubbed.column("detail").to_pylist(), dtype=object)
            # the block keeps the scrubbed evidence too: a cached block holds no secret
            table = _merge_columns(table, dead, scrubbed)
            changed = True
    for step in row_steps:
        rows = np.nonzero(alive)[0]
        if len(rows) == 0:
            break
        batch = _rows(table, rows)
        verdicts = step(batch)
        if keeps:  # reviewers overturned some of these verdicts: those rows go on
            from curate.review.overrides import spare

            verdicts, spared, escaped = spare(verdicts, batch.column("id"), keeps)
            for r, why in zip(rows[spared], escaped, strict=True):  # the few decided rows
                if overridden[r] is None:  # a row spared twice keeps its first reason
                    overridden[r] = why
        if verdicts.columns is not None:
            columns = verdicts.columns
            for name in step.index_only:
                stats[name] = _scatter(n, rows, columns.column(name).combine_chunks())
            columns = columns.drop_columns(list(step.index_only))
            if columns.num_columns:
                table = _merge_columns(table, rows, columns)
                changed = True
            index_names += [
                c for c in step.index_columns if c not in index_names and c not in stats
            ]
        hit = rows[verdicts.rows]
        stage[hit] = step.stage
        reason[hit] = np.asarray(verdicts.reason.to_pylist(), dtype=object)
        detail[hit] = np.asarray(verdicts.detail.to_pylist(), dtype=object)
        alive[hit] = False
    out = pa.table(
        {
            "stage": pa.array(stage.tolist(), pa.string()),
            "reason": pa.array(reason.tolist(), pa.string()),
            "detail": pa.array(detail.tolist(), pa.string()),
        }
    )
    if keeps:
        out = out.append_column("overridden", pa.array(overridden.tolist(), pa.string()))
    for name in index_names:
        out = out.append_column(name, table.column(name))
    for name, col in stats.items():
        out = out.append_column(name, col)
    keys = None
    if key_step is not None:
        rows = np.nonzero(alive)[0]
        found = key_step.keys(_rows(table, rows))
        keys = pa.table(
            {c: _scatter(n, rows, found.column(c).combine_chunks()) for c in found.column_names}
        )
    return out, keys, (table if changed else None)


def _rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """`rows` of `table` (sorted, unique): the table itself when that is all of them, as
    it usually is (a take would copy the whole block)."""
    return table if len(rows) == table.num_rows else table.take(pa.array(rows))


def _scatter(n: int, rows: np.ndarray, values: pa.Array) -> pa.Array:
    """`values` (one per row in `rows`) at `rows` of an array of `n`, null elsewhere."""
    if len(rows) == n:
        return values
    return pa.concat_arrays([pa.nulls(1, values.type), values]).take(
        pa.array(_scatter_index(n, rows))
    )


def _merge_columns(table: pa.Table, rows: np.ndarray, columns: pa.Table) -> pa.Table:
    """Put a step's columns (one value per row in `rows`) into the block.

    A column the block has is rewritten at `rows` only; a new one is null elsewhere.
    """
    n = table.num_rows
    for name in columns.column_names:
        col = columns.column(name).combine_chunks()
        if name in table.column_names:
            base = table.column(name).combine_chunks()
            take = np.arange(n)
            take[rows] = n + np.arange(len(rows))
            merged = pa.concat_arrays([base, col.cast(base.type)]).take(pa.array(take))
            table = table.set_column(table.schema.get_field_index(name), name, merged)
        else:
            table = table.append_column(name, _scatter(n, rows, col))
    return table


def _scatter_index(n: int, rows: np.ndarray) -> np.ndarray:
    """Index into [null, *values] that puts values at `rows` and null elsewhere."""
    index = np.zeros(n, dtype=np.int64)
    index[rows] = np.arange(1, len(rows) + 1)
    return index


# Dictionary encoding and min/max statistics only for the short columns: on long unique
# texts they cost half the write time and help no reader.
PARQUET_OPTIONS = {
    "compression": "snappy",
    "row_group_size": 8192,
    "write_statistics": ["id", "source", "kind", "stage", "reason"],
    "use_dictionary": [
        "source",
        "kind",
        "stage",
        "reason",
        "messages.list.element.role",
        "chosen.list.element.role",
        "rejected.list.element.role",
    ],
}


def write_object(table: pa.Table, scratch: Path, store: str) -> dict[str, Any]:
    """Write `table` as Parquet and move it into the store under its sha256 (`store`: the
    store's location, a folder or a URI: a worker writes the object itself)."""
    import pyarrow.parquet as pq

    from curate.manifests.store import Store

    scratch.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(scratch), **PARQUET_OPTIONS)
    # made durable by the build, all at once, before its manifest names it
    return {"object": Store(store).put_file(scratch, durable=False), "rows": table.num_rows}


def emit(
    cache_file: str,
    block: int,
    plan_file: str,
    offset: int,
    length: int,
    out_dir: str,
    shard_rows: tuple[int, ...],
    store: str,
) -> tuple[dict[str, Any] | None, list[tuple[int, int, str]]]:
    """Write the block's ledger part to the store and bucket its output rows by (split, shard).

    The block's rows are rows [offset, offset + length) of `plan_file`: final id, stage,
    reason, detail, split code, and the positions of the row's copies in its split (empty
    for rejected rows). A copy at position p of split c goes to shard p // shard_rows[c]. Returns the ledger part's object entry (or None) and the
    (split, shard, path) buckets that `gather` turns into output shards.
    """
    plan = read_ipc(plan_file).slice(offset, length)
    verdicts, positions, splits = (
        plan,
        plan.column("positions").combine_chunks(),
        plan.column("split_code").combine_chunks(),
    )
    table = read_ipc(cache_file)
    for name in ("id", *VERDICT_COLUMNS):
        table = table.set_column(table.schema.get_field_index(name), name, verdicts.column(name))
    out = Path(out_dir)
    ledger = None
    rejected = table.filter(pc.is_valid(table.column("reason")))
    if rejected.num_rows:
        part = rejected.select(LEDGER_SCHEMA.names).cast(LEDGER_SCHEMA)
        ledger = write_object(part, out / "ledger" / f"{block:07d}.parquet", store)
    counts = pc.list_value_length(positions).to_numpy(zero_copy_only=False)
    buckets: list[tuple[int, int, str]] = []
    if counts.sum():
        rows = np.repeat(np.arange(table.num_rows), counts)
        schema = output_schema(table.column_names)
        columns = table.select(schema.names)
        pos = pc.list_flatten(positions).to_numpy(zero_copy_only=False)
        split = np.repeat(splits.to_numpy(zero_copy_only=False), counts)
        shard = pos // np.asarray(shard_rows)[split]
        for code in np.unique(split):
            for s in np.unique(shard[split == code]):
                pick = np.nonzero((split == code) & (shard == s))[0]
                path = out / f"split{int(code)}" / f"{int(s):06d}" / f"{block:07d}.arrow"
                piece = columns.take(pa.array(rows[pick])).cast(schema)  # one copy per piece
                piece = piece.append_column("_position", pa.array(pos[pick], pa.int64()))
                write_ipc(piece, path)
                buckets.append((int(code), int(s), str(path)))
    return ledger, buckets


def gather(parts: list[str], scratch: str, store: str) -> dict[str, Any]:
    """One output shard: concatenate its buckets, put rows in shuffled order, store as Parquet."""
    table = pa.concat_tables([read_ipc(p) for p in parts], promote_options="default")
    table = table.take(pc.sort_indices(table.column("_position"))).drop_columns(["_position"])
    for p in parts:
        os.unlink(p)
    return write_object(table, Path(scratch), store)
