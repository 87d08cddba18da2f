"""Steps over blocks on an engine: the part of a build that gives every row its verdict.

`run_steps` is public: `curate build` runs it between planning and mixing, and other commands
(failure mining) run dedup, PII and contamination through it over rows of their own.

Steps run in segments: a run of row steps, closed by the global step that follows them. The
first segment runs while blocks are read (`passes.ingest`); each later one reads the blocks
back from the files the previous pass left. The main process holds only a small index per
row (id, order, verdict, the steps' declared index columns); a global step's keys are held
apart, only until it resolves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate.engines import passes
from curate.engines.base import Engine
from curate.engines.stepcache import SegmentOut, StepCache, resolve_key
from curate.sources import BlockTask
from curate.steps import GlobalStep, RowStep, Step, Verdicts

SPREAD_PARTS_PER_WORKER = 2  # parts of a partitioned step's keys (tasks of its resolve)
READER_VERSION = "2"  # bump when reading/normalization changes what a cached block holds
EMPTY_INDEX = {
    "id": pl.String,
    "order": pl.Int64,
    "stage": pl.String,
    "reason": pl.String,
    "detail": pl.String,
    "block": pl.Int32,
    "row": pl.Int32,
    "source_rank": pl.Int32,
}


class ReadStep(Step):
    """Reading and normalizing the sources, as a stage of the manifest like the others."""

    name = "read"
    stage = "read"

    def __init__(self, formats: dict[str, str]):
        self.formats = formats

    def params(self) -> dict[str, Any]:
        return {"formats": self.formats}

    def fingerprint(self) -> str:
        return hashlib.sha256(f"read\x00{READER_VERSION}".encode()).hexdigest()


@dataclass
class StepRun:
    """What `run_steps` decided: per input row (canonical order) its verdict and the index
    columns steps declared; per block, the file now holding its rows; the steps that ran,
    in order (`manifest.stage_entries` counts each one's rows off the index)."""

    index: pl.DataFrame
    blocks: list[str]
    stages: list[Step] = field(default_factory=list)
    # per block, its state in the step cache (None where nothing is cached)
    states: list[str | None] = field(default_factory=list)
    # per block, the file of the next global step's spread keys (distributed engines only)
    spilled: list[str | None] = field(default_factory=list)
    # blocks read from their source files; segments of a block taken from the step cache,
    # or run; whether the write phase took an earlier write's objects (set by the build)
    cache: dict[str, int] = field(
        default_factory=lambda: {"blocks_read": 0, "segments_cached": 0, "segments_run": 0}
    )

    def count(self, outs: list[SegmentOut]) -> None:
        self.cache["blocks_read"] += sum(o.read for o in outs)
        self.cache["segments_cached"] += sum(o.hit for o in outs)
        self.cache["segments_run"] += sum(not o.hit for o in outs)


def segments(steps: list[Step]) -> list[tuple[list[RowStep], GlobalStep | None]]:
    """Runs of row steps, each closed by the global step that follows them (or none)."""
    out: list[tuple[list[RowStep], GlobalStep | None]] = []
    rows: list[RowStep] = []
    for step in steps:
        if isinstance(step, GlobalStep):
            if step.task_rows is not None and rows:  # its keys get a pass of their own
                out.append((rows, None))
                rows = []
            out.append((rows, step))
            rows = []
        else:
            rows.append(step)  # type: ignore[arg-type]
    if rows or not out:
        out.append((rows, None))
    return out


def run_steps(
    engine: Engine,
    reader: ReadStep,
    steps: list[Step],
    tasks: list[BlockTask],
    blocks: list[str],
    ranks: list[int],
    sources: list[str],
    work: Path,
    meta_fields: dict[str, str] | None = None,
    keeps: dict[str, str | None] | None = None,
    cache: Cache | None = None,
) -> StepRun:
    """Read `tasks` (block i cached at `blocks[i]`, of source `ranks[i]`, one of `sources`)
    and run `steps` over their rows; `work` is a scratch folder for the blocks' new files.

    `meta_fields`: {index column: meta field} read into the index for later stages.
    `keeps`: reviewers' keep decisions (base id → reason reviewed) the steps honour.
    `cache`: the step cache and each block's read key, to reuse what an earlier run made.
    """
    segs = segments(steps)
    run, keys = ingest(
        engine, reader, segs[0], tasks, blocks, ranks, work, meta_fields, keeps, cache
    )
    run_segments(engine, run, keys, segs, sources, work, keeps, cache)
    return run


@dataclass(frozen=True)
class Cache:
    """Where step outputs are cached, and the key of each block as read (its state)."""

    steps: StepCache
    states: list[str]


def ingest(
    engine: Engine,
    reader: ReadStep,
    first: tuple[list[RowStep], GlobalStep | None],
    tasks: list[BlockTask],
    blocks: list[str],
    ranks: list[int],
    work: Path,
    meta_fields: dict[str, str] | None = None,
    keeps: dict[str, str | None] | None = None,
    cache: Cache | None = None,
) -> tuple[StepRun, list[pa.Table]]:
    """Read every block and run the `first` segment on it: the index, and the keys of the
    segment's global step, in a list `run_segments` takes them from (empty without one)."""
    first_rows, first_global = first
    states: list[str | None] = list(cache.states) if cache else [None] * len(tasks)
    spill = _spill_paths(engine, first_global, work, len(tasks), 0)
    results = engine.map(
        passes.ingest,
        [
            (
                t,
                c,
                first_rows,
                first_global,
                meta_fields or {},
                str(work / f"b{b}-s0.arrow"),
                keeps,
                cache.steps if cache else None,
                states[b],
                spill[b],
            )
            for b, (t, c) in enumerate(zip(tasks, blocks, strict=True))
        ],
        "read",
    )
    # later passes read a block with the columns the steps added, where they did
    blocks = [r.block or c for r, c in zip(results, blocks, strict=True)]
    keys = _concat([r.keys for r in results])
    index = _index_frame([r.index for r in results], ranks)
    run = StepRun(index, blocks, states=[r.state for r in results])
    run.spilled = [r.spilled for r in results]
    run.count(results)
    del results  # the per-block tables now live in `index`: keep memory flat
    run.stages.append(reader)
    return run, [keys] if keys is not None else []


def run_segments(
    engine: Engine,
    run: StepRun,
    handed: list[pa.Table],
    segs: list[tuple[list[RowStep], GlobalStep | None]],
    sources: list[str],
    work: Path,
    keeps: dict[str, str | None] | None = None,
    cache: Cache | None = None,
) -> None:
    """Every segment's stage entries, and the segments after the first run over the blocks
    (the first ran while reading); each global step resolves over its keys. `handed`
    holds the first segment's keys (`ingest`'s list): `_resolve` takes them from it, so
    that no caller holds them while they are taken apart."""
    for i, (row_steps, global_step) in enumerate(segs):
        if i > 0:
            steps = cache.steps if cache else None
            later = _run_later_rows(engine, run, row_steps, global_step, work, i, keeps, steps)
            handed = [later] if later is not None else []
            del later
        run.stages += row_steps
        if global_step is not None:
            if handed:  # empty only where no block was read
                at = (cache.steps, run.states) if cache is not None else None
                spread = (engine, run.spilled) if any(run.spilled) else None
                run.index = _resolve(run.index, handed, global_step, sources, keeps, at, spread)
            run.spilled = []
            handed = []  # spent: keep memory small for the steps after it
            run.stages.append(global_step)


def _spill_paths(
    engine: Engine, step: GlobalStep | None, work: Path, blocks: int, segment: int
) -> list[tuple[str, int] | None]:
    """Per block, where its keys for `step` stay and in how many parts: on a distributed
    engine, for a step that resolves in parts, a file beside the block (None elsewhere:
    keys come back). Parts only group rows for tasks: the verdicts never depend on them."""
    if not engine.distributed or step is None or not step.spread_keys:
        return [None] * blocks
    parts = max(1, SPREAD_PARTS_PER_WORKER * engine.workers) if step.partition_by else 1
    return [(str(work / f"keys-b{b}-s{segment}.arrow"), parts) for b in range(blocks)]


def _parts_of(files: list[str | None]) -> int:
    """How many parts the spilled files hold (each has as many record batches)."""
    path = next(f for f in files if f is not None)
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).num_record_batches


def _concat(tables: list[pa.Table | None]) -> pa.Table | None:
    present = [t for t in tables if t is not None]
    return pa.concat_tables(present, promote_options="default") if present else None


def _index_frame(indexes: list[pa.Table], ranks: list[int]) -> pl.DataFrame:
    """One row per input row, in canonical order, with final ids (`#k` for later copies)."""
    frames = []
    for block, (index, rank) in enumerate(zip(indexes, ranks, strict=True)):
        frame = pl.from_arrow(index)
        assert isinstance(frame, pl.DataFrame)
        frames.append(
            frame.with_columns(
                pl.lit(block, pl.Int32).alias("block"),
                pl.int_range(pl.len(), dtype=pl.Int32).alias("row"),
                pl.lit(rank, pl.Int32).alias("source_rank"),
            )
        )
    if not frames:  # no input rows at all: an empty build is still a build
        return pl.DataFrame(schema=EMPTY_INDEX)
    state = pl.concat(frames, how="diagonal_relaxed")
    repeated = np.nonzero(state["id"].is_duplicated().to_numpy())[0]
    if len(repeated) == 0:
        return state
    copies = state[repeated].select(
        pl.col("id") + "#" + pl.int_range(pl.len()).over("id").cast(pl.String)
    )["id"]
    is_later = ~copies.str.ends_with("#0").to_numpy()
    return state.with_columns(
        state["id"].clone().scatter(repeated[is_later], copies.filter(pl.Series(is_later)))
    )


def apply_verdicts(
    index: pl.DataFrame, rows: np.ndarray, verdicts: Verdicts, stage: str
) -> pl.DataFrame:
    """Record the rejections of `verdicts` (aligned with `rows` of `index`) and the index
    columns it carries (null for the rows it does not cover)."""
    if verdicts.columns is not None and verdicts.columns.num_columns:
        added = []
        for name in verdicts.columns.column_names:
            values = pl.Series(name, verdicts.columns.column(name).combine_chunks())
            full = values.clear(index.height)
            added.append(full.scatter(rows, values) if len(rows) else full)
        index = index.with_columns(added)
    if len(verdicts.rows) == 0:
        return index
    hit = rows[verdicts.rows]
    updates = {
        "reason": pl.Series(verdicts.reason, dtype=pl.String),
        "detail": pl.Series(verdicts.detail, dtype=pl.String),
        "stage": pl.Series(np.full(len(hit), stage, dtype=object), dtype=pl.String),
    }
    return index.with_columns(
        *[index[name].clone().scatter(hit, values) for name, values in updates.items()]
    )


def _resolve(
    index: pl.DataFrame,
    handed: list[pa.Table],
    step: GlobalStep,
    sources: list[str],
    keeps: dict[str, str | None] | None = None,
    cache: tuple[StepCache, list[str | None]] | None = None,
    spread: tuple[Engine, list[str | None]] | None = None,
) -> pl.DataFrame:
    """Run a global step's `resolve` over the keys of the rows still alive (or take its
    verdicts from the step `cache`, with the blocks' states, when they are known). With
    `spread` (the engine, and per block the file its spread keys were left in), the step
    resolves in parts on the engine instead.

    The keys come `handed` (a list this takes them from): they are the largest thing a
    run holds, so they are let go column by column as the alive rows are taken."""
    is_alive = index["reason"].is_null().to_numpy()
    alive = np.nonzero(is_alive)[0]
    if len(alive) == 0:
        handed.clear()
        return index
    key = resolve_key(step, sources, cache[1], is_alive) if cache is not None else None
    verdicts = cache[0].verdicts(key, len(alive)) if cache is not None and key else None
    if verdicts is not None:
        handed.clear()
    if verdicts is None:
        promised = _promised(index, handed.pop(), is_alive, sources)
        if spread is None:
            verdicts = step.resolve(promised)
        else:
            from curate.engines.spread import KeyParts

            bounds = block_bounds(index)
            rows = [np.nonzero(is_alive[a:z])[0] for a, z in bounds]
            parts = KeyParts(spread[1], rows, _parts_of(spread[1]))
            verdicts = step.resolve_spread(spread[0], promised, parts)
        del promised
        release_freed()
        if cache is not None and key:
            cache[0].save_verdicts(key, verdicts)
    if keeps:  # reviewers overturned some of these verdicts: those rows go on
        from curate.review.overrides import spare

        ids = index["id"].gather(alive).to_arrow()
        verdicts, spared, escaped = spare(verdicts, ids, keeps)
        if len(spared):
            current = (
                index["overridden"].clone()
                if "overridden" in index.columns
                else pl.Series("overridden", [], pl.String).clear(index.height)
            )
            # a row spared more than once (exact, then near dedup) keeps its first reason
            escaped_now = current.clear(index.height).scatter(
                alive[spared], pl.Series(escaped, dtype=pl.String)
            )
            index = index.with_columns(pl.coalesce(current, escaped_now).alias("overridden"))
    return apply_verdicts(index, alive, verdicts, step.stage)


def _promised(
    index: pl.DataFrame, keys: pa.Table, is_alive: np.ndarray, sources: list[str]
) -> pa.Table:
    """Only what `resolve` is promised, for the alive rows: its key columns (one chunk
    each: `steps.whole` takes them without a copy), id, source_rank and source.

    Each key column's blocks are filtered and let go one by one (the caller holds no
    reference): the run holds about twice its largest key column at worst, not its keys
    three times (Arrow's `take` on a chunked column first concatenates it)."""
    rows = (
        index.select("id", "source_rank")
        .filter(pl.Series(is_alive))
        .with_columns(
            pl.col("source_rank")
            .replace_strict(list(range(len(sources))), sources, return_dtype=pl.String)
            .alias("source")
        )
    )
    order = keys.column_names
    names = sorted(order, key=lambda c: -keys.column(c).nbytes)
    taken = {}
    for name in names:  # the largest first, while the least else is held
        chunks = keys.column(name).chunks
        keys = keys.drop_columns([name])
        kept, start = [], 0
        while chunks:
            chunk = chunks.pop(0)
            mask = is_alive[start : start + len(chunk)]
            start += len(chunk)
            kept.append(chunk if mask.all() else chunk.filter(pa.array(mask)))
            del chunk
        taken[name] = kept[0] if len(kept) == 1 else pa.concat_arrays(kept)
        del kept
        release_freed()
    head = rows.to_arrow()
    columns = {"id": head.column("id"), "source_rank": head.column("source_rank")}
    columns |= {name: taken.pop(name) for name in order}
    return pa.table({**columns, "source": head.column("source")})


def release_freed() -> None:
    """Give the memory of freed Arrow buffers back to the system. Arrow's allocator
    (mimalloc) keeps freed pages for reuse; after a global step lets go of its keys that
    is hundreds of MB a run would hold, at 4M mined rows, for nothing."""
    pa.default_memory_pool().release_unused()


def block_bounds(index: pl.DataFrame) -> list[tuple[int, int]]:
    sizes = index.group_by("block", maintain_order=True).len()["len"].to_numpy()
    ends = np.cumsum(sizes)
    return list(zip((ends - sizes).tolist(), ends.tolist(), strict=True))


def _run_later_rows(
    engine: Engine,
    run: StepRun,
    row_steps: list[RowStep],
    key_step: GlobalStep | None,
    work: Path,
    segment: int,
    keeps: dict[str, str | None] | None = None,
    cache: StepCache | None = None,
) -> pa.Table | None:
    """A later segment over the blocks: updates `run` in place, returns the keys of
    `key_step` (None without one)."""
    state = run.index
    alive_all = state["reason"].is_null().to_numpy()
    bounds = block_bounds(state)
    if key_step is not None and key_step.task_rows is not None and not row_steps:
        size = key_step.task_rows
        tasks = [
            (
                run.blocks[b],
                alive_all[a + i : min(a + i + size, z)],
                key_step,
                i,
                min(i + size, z - a),
            )
            for b, (a, z) in enumerate(bounds)
            for i in range(0, z - a, size)
        ]
        found = engine.map(
            passes.run_keys, tasks, key_step.name, weights=[int(t[1].sum()) for t in tasks]
        )
        return _concat(list(found))
    spill = _spill_paths(engine, key_step, work, len(bounds), segment)
    items = [
        (
            run.blocks[b],
            alive_all[a:z],
            row_steps,
            key_step,
            str(work / f"b{b}-s{segment}.arrow"),
            keeps,
            cache,
            run.states[b],
            spill[b],
        )
        for b, (a, z) in enumerate(bounds)
    ]
    results = engine.map(passes.run_segment, items, "validate")
    run.spilled = [r.spilled for r in results]
    run.count(results)
    run.blocks = [r.block or c for r, c in zip(results, run.blocks, strict=True)]
    run.states = [r.state for r in results]
    joined = _concat([r.index for r in results])
    if joined is None:
        return None
    update = pl.from_arrow(joined)
    assert isinstance(update, pl.DataFrame)
    # a column the index has (verdicts, what keep decisions spared) keeps its earlier value
    run.index = state.with_columns(
        *[
            pl.coalesce(state[c], update[c]).alias(c) if c in state.columns else update[c]
            for c in update.columns
        ]
    )
    return _concat([r.keys for r in results])
