"""A build: the step list from the config, run on an engine, written to the store.

    read/normalize → [row steps] → exact dedup → [later steps] → mixture → split → write

Blocks are read and normalized in parallel and cached under their file's sha256, so an
interrupted build resumes where it stopped and an unchanged source is never re-read. The
main process only holds a small index per row (id, order, verdict, keys); row payloads stay
in the cached blocks until they are written out, so memory is bounded by block size, not by
the data set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate import __version__
from curate.config import MixtureConfig
from curate.dedup.exact import ExactDedup
from curate.dedup.minhash import NearDedup
from curate.engines import passes
from curate.engines.base import Engine
from curate.engines.local import LocalEngine
from curate.errors import UserError
from curate.manifests.manifest import (
    assemble,
    contamination_report,
    stage_entry,
    validation_report,
)
from curate.manifests.store import Store
from curate.mixers.split import assign_splits, output_positions
from curate.mixers.weights import not_sampled_detail, plan_mixture
from curate.progress import Progress
from curate.rows import SPLIT_NAMES
from curate.sources import BlockTask, FileScan, plan_blocks, scan_file, scratch_dir
from curate.steps import GlobalStep, RowStep, Step, Verdicts
from curate.validators.pii import PiiStep
from curate.validators.quality import (
    DegenerationStep,
    JsonFormatStep,
    LanguageStep,
    LeakageStep,
    load_schema,
)
from curate.validators.report import RowStats
from curate.validators.target import Target
from curate.validators.template import TemplateStep

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
# index columns that are not a global step's keys
NOT_KEYS = (
    "group",
    "copies",
    "split",
    *TemplateStep.index_columns,
    "straddles",
    *RowStats.index_columns,
    *PiiStep.index_columns,
    *LanguageStep.index_columns,
)
OUTPUT_SHARD_ROWS = 50_000  # at most; a split's shards are made equal in size


@dataclass(frozen=True)
class BuildResult:
    manifest_id: str
    manifest: dict[str, Any]
    run: dict[str, Any]


def build_steps(
    config: MixtureConfig, target: Target | None = None, store: Store | None = None
) -> list[Step]:
    """The configured steps after read/normalize, in the contract's order."""
    checks = config.validate_
    steps: list[Step] = [RowStats()]
    if checks.pii != "off":
        steps.append(PiiStep(checks.pii))
    if checks.languages:
        steps.append(LanguageStep(checks.languages, checks.language_min_score))
    if checks.label_leakage:
        steps.append(LeakageStep(checks.leakage_min_chars))
    schemas = {
        src.name: load_schema(config.base_dir / src.json_schema)
        for src in config.sources
        if src.json_schema is not None
    }
    if schemas:
        steps.append(JsonFormatStep(schemas))
    if checks.degeneration:
        steps.append(DegenerationStep(checks.degeneration_ngram, checks.degeneration_max_repeated))
    if config.dedup.exact:
        steps.append(ExactDedup())
    if config.dedup.near is not None:
        near = config.dedup.near
        steps.append(NearDedup(near.threshold, near.num_perm, near.ngram))
    if config.dedup.semantic is not None:
        from curate.dedup.semantic import SemanticDedup, resolve_model

        semantic = config.dedup.semantic
        cache = str(store.root / "cache" / "embeddings") if store is not None else None
        steps.append(
            SemanticDedup(semantic.threshold, resolve_model(semantic.model, config.base_dir), cache)
        )
    if config.evals:
        from curate.contamination.index import ContaminationStep, load_eval

        sets = [load_eval(ev.name, config.base_dir / ev.path, ev.fields) for ev in config.evals]
        steps.append(
            ContaminationStep(
                sets,
                config.contamination.ngram,
                config.contamination.threshold,
                str(store.root / "cache" / "contamination") if store is not None else None,
            )
        )
    if target is not None and config.tokenizer is not None:
        assert target.probe is not None
        steps.append(
            TemplateStep(
                target.load_dir,
                target.template,
                target.trust_remote_code,
                target.probe,
                target.special_tokens,
                target.fingerprint,
                config.tokenizer.max_length,
                config.tokenizer.on_too_long,
            )
        )
    return steps


def load_build_target(config: MixtureConfig, store: Store) -> Target | None:
    """The [tokenizer] of the config, loaded, fingerprinted and probed (None without one)."""
    if config.tokenizer is None:
        return None
    from curate.validators.target import load_target

    section = config.tokenizer
    return load_target(
        section.path,
        config.base_dir,
        section.chat_template,
        section.trust_remote_code,
        store.root / "cache" / "tokenizers",
    )


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


def make_engine(name: str, workers: int | None, progress: Progress) -> Engine:
    if name != "local":
        raise UserError(f"engine {name!r} is not available in this version; use --engine local")
    return LocalEngine(workers, progress)


def run_build(
    config: MixtureConfig,
    store: Store,
    *,
    workers: int | None = None,
    engine: str = "local",
    strict: bool = False,
    progress: Progress | None = None,
    parent: str | None = None,
    prescanned: dict[tuple[str, str | None], FileScan] | None = None,
) -> BuildResult:
    started = time.time()
    timings: dict[str, float] = {}
    progress = progress or Progress(enabled=False)
    target = load_build_target(config, store)
    steps = build_steps(config, target, store)
    segs = segments(steps)
    group_field = None if config.split.by == "row" else config.split.by

    with store.temp_dir("build-") as work, make_engine(engine, workers, progress) as eng:
        files = [
            [
                (p, Path(os.path.relpath(p, config.base_dir)).as_posix())
                for p in config.source_files(src)
            ]
            for src in config.sources
        ]
        jobs = [(str(p), scratch_dir(store.root)) for fs in files for p, _ in fs]
        known = prescanned or {}
        missing = [job for job in jobs if job not in known]
        found = dict(zip(missing, eng.map(scan_file, missing, "scan"), strict=True))
        scans = [known[job] if job in known else found[job] for job in jobs]
        tasks: list[BlockTask] = []
        ranks: list[int] = []
        file_entries: list[list[dict[str, Any]]] = []
        for rank, src in enumerate(config.sources):
            mine, scans = scans[: len(files[rank])], scans[len(files[rank]) :]
            shown = [name for _, name in files[rank]]
            src_tasks, entries = plan_blocks(src.name, src.format, shown, mine, strict, src.columns)
            tasks += src_tasks
            ranks += [rank] * len(src_tasks)
            file_entries.append(entries)
        timings["plan"] = time.time() - started

        cache = _block_cache(tasks, store, work, config.validate_.pii != "off")
        first_rows, first_global = segs[0]
        t0 = time.time()
        results = eng.map(
            passes.ingest,
            [
                (t, c, first_rows, first_global, group_field, str(work / f"b{b}-s0.arrow"))
                for b, (t, c) in enumerate(zip(tasks, cache, strict=True))
            ],
            "read",
        )
        indexes = [index for index, _ in results]
        # later passes read a block with the columns the steps added, where they did
        cache = [moved or c for (_, moved), c in zip(results, cache, strict=True)]
        del results
        timings["read"] = time.time() - t0
        state = _index_frame(indexes, ranks)
        del indexes  # the per-block tables now live in `state`: keep memory flat
        stage_counts = [
            stage_entry(
                "read",
                _reader_fingerprint(),
                {"formats": {s.name: s.format for s in config.sources}},
                state,
                "read",
            )
        ]
        t0 = time.time()
        for i, (row_steps, global_step) in enumerate(segs):
            if i > 0:
                state, cache = _run_later_rows(eng, state, cache, row_steps, global_step, work, i)
            for step in row_steps:
                stage_counts.append(
                    stage_entry(step.name, step.fingerprint(), step.params(), state, step.stage)
                )
            if global_step is not None:
                state = _resolve(state, global_step, config)
                # its keys are spent: keep the index small for the steps after it
                state = state.drop(_key_columns(state))
                stage_counts.append(
                    stage_entry(
                        global_step.name,
                        global_step.fingerprint(),
                        global_step.params(),
                        state,
                        global_step.stage,
                    )
                )
        timings["steps"] = time.time() - t0

        t0 = time.time()
        state, mixture_report = _mix(state, config)
        stage_counts.append(
            stage_entry(
                "mixture",
                _params_fingerprint("mixture", config.mixture.model_dump()),
                config.mixture.model_dump(),
                state,
                "mixture",
            )
        )
        state = _split(state, config)
        timings["mix"] = time.time() - t0

        t0 = time.time()
        splits, ledger = _write(eng, state, cache, config.build.seed, work, store)
        validation = validation_report(state, config, cache)
        timings["write"] = time.time() - t0

    manifest = assemble(
        config,
        state,
        file_entries,
        stage_counts,
        mixture_report,
        splits,
        ledger,
        parent,
        target,
        validation,
        contamination_report(state, config, steps),
    )
    # every object this build wrote becomes durable before a manifest can name it
    objects = [s["object"] for split in splits.values() for s in split["shards"]]
    store.sync_objects(objects + [p["object"] for p in ledger["parts"]])
    run = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "engine": engine,
        "workers": eng.workers,
        "store": str(store.root.resolve()),
        "config_dir": str(config.base_dir),
        "seconds": round(time.time() - started, 3),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    manifest_id = store.put_manifest(manifest, run)
    return BuildResult(manifest_id, manifest, run)


def _block_cache(tasks: list[BlockTask], store: Store, work: Path, private: bool) -> list[str]:
    """Where each block's rows are kept as read: the store's cache (an unchanged source is
    never read again), or, for a build that redacts or rejects PII, the build's scratch
    folder, so that no unredacted text outlives the build in the store."""
    if private:
        return [str(work / f"read-{b}.arrow") for b in range(len(tasks))]
    return [str(store.cache_path("blocks", _block_key(t), ".arrow")) for t in tasks]


def _block_key(task: BlockTask) -> str:
    return hashlib.sha256(
        f"{task.fingerprint()}\x00{READER_VERSION}\x00{__version__}".encode()
    ).hexdigest()


def _reader_fingerprint() -> str:
    return hashlib.sha256(f"read\x00{READER_VERSION}".encode()).hexdigest()


def _params_fingerprint(name: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps({"step": name, "params": params}, sort_keys=True).encode()
    ).hexdigest()


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


def _apply_verdicts(
    state: pl.DataFrame, rows: np.ndarray, verdicts: Verdicts, stage: str
) -> pl.DataFrame:
    """Record the rejections of `verdicts` (aligned with `rows` of `state`)."""
    if len(verdicts.rows) == 0:
        return state
    hit = rows[verdicts.rows]
    updates = {
        "reason": pl.Series(verdicts.reason, dtype=pl.String),
        "detail": pl.Series(verdicts.detail, dtype=pl.String),
        "stage": pl.Series(np.full(len(hit), stage, dtype=object), dtype=pl.String),
    }
    return state.with_columns(
        *[state[name].clone().scatter(hit, values) for name, values in updates.items()]
    )


def _key_columns(state: pl.DataFrame) -> list[str]:
    return [c for c in state.columns if c not in EMPTY_INDEX and c not in NOT_KEYS]


def _resolve(state: pl.DataFrame, step: GlobalStep, config: MixtureConfig) -> pl.DataFrame:
    """Run a global step's `resolve` over the keys of the rows still alive."""
    alive = np.nonzero(state["reason"].is_null().to_numpy())[0]
    if len(alive) == 0:
        return state
    names = [s.name for s in config.sources]
    # only what `resolve` is promised: its key columns, id, source and source_rank
    key_columns = _key_columns(state)
    keys = (
        state.select("id", "source_rank", *key_columns)[alive]
        .with_columns(
            pl.col("source_rank")
            .replace_strict(list(range(len(names))), names, return_dtype=pl.String)
            .alias("source")
        )
        .to_arrow()
    )
    return _apply_verdicts(state, alive, step.resolve(keys), step.stage)


def _run_later_rows(
    eng: Engine,
    state: pl.DataFrame,
    cache: list[str],
    row_steps: list[RowStep],
    key_step: GlobalStep | None,
    work: Path,
    segment: int,
) -> tuple[pl.DataFrame, list[str]]:
    alive_all = state["reason"].is_null().to_numpy()
    bounds = _block_bounds(state)
    results: list[tuple[pa.Table, str | None]]
    if key_step is not None and key_step.task_rows is not None and not row_steps:
        size = key_step.task_rows
        tasks = [
            (cache[b], alive_all[a + i : min(a + i + size, z)], key_step, i, min(i + size, z - a))
            for b, (a, z) in enumerate(bounds)
            for i in range(0, z - a, size)
        ]
        updates = eng.map(
            passes.run_keys, tasks, key_step.name, weights=[int(t[1].sum()) for t in tasks]
        )
        results = [(pa.concat_tables([u for u, _ in updates]), None)] if updates else []
        moved: list[str | None] = [None] * len(cache)
    else:
        items = [
            (cache[b], alive_all[a:z], row_steps, key_step, str(work / f"b{b}-s{segment}.arrow"))
            for b, (a, z) in enumerate(bounds)
        ]
        results = eng.map(passes.run_segment, items, "validate")
        moved = [m for _, m in results]
    cache = [m or c for m, c in zip(moved, cache, strict=True)]
    update = pl.from_arrow(pa.concat_tables([u for u, _ in results], promote_options="default"))
    assert isinstance(update, pl.DataFrame)
    merged = state.with_columns(
        *[pl.coalesce(state[c], update[c]).alias(c) for c in ("stage", "reason", "detail")],
        *[update[c] for c in update.columns if c not in ("stage", "reason", "detail")],
    )
    return merged, cache


def _shard_size(rows: int) -> int:
    """Rows per shard for a split of `rows`: all shards of one size, at most
    OUTPUT_SHARD_ROWS, and an even number of them when there are several, so that two or
    more processes finish writing them together (3 equal shards on 2 cores take 2 rounds of
    a third; 4 take 2 rounds of a quarter)."""
    shards = max(1, math.ceil(rows / OUTPUT_SHARD_ROWS))
    if shards > 1 and shards % 2:
        shards += 1
    return max(1, math.ceil(rows / shards))


def _block_bounds(state: pl.DataFrame) -> list[tuple[int, int]]:
    sizes = state.group_by("block", maintain_order=True).len()["len"].to_numpy()
    ends = np.cumsum(sizes)
    return list(zip((ends - sizes).tolist(), ends.tolist(), strict=True))


def _mix(state: pl.DataFrame, config: MixtureConfig) -> tuple[pl.DataFrame, dict[str, Any]]:
    alive = np.nonzero(state["reason"].is_null().to_numpy())[0]
    sizes = None
    if config.mixture.unit == "tokens":
        sizes = state["n_tokens"].to_numpy()[alive] if "n_tokens" in state.columns else None
        if sizes is None:
            sizes = np.zeros(len(alive), dtype=np.int64)
    plan = plan_mixture(
        state["source_rank"].to_numpy()[alive],
        list(config.sources),
        config.mixture,
        config.build.seed,
        sizes,
    )
    copies = np.zeros(state.height, dtype=np.int64)
    copies[alive] = plan.copies
    dropped = alive[plan.copies == 0]
    names = [s.name for s in config.sources]
    ranks = state["source_rank"].to_numpy()[dropped]
    per_source = pa.array(
        [json.dumps(not_sampled_detail(plan.report, name), sort_keys=True) for name in names],
        pa.string(),
    )
    verdicts = Verdicts.reject(
        len(dropped), np.arange(len(dropped)), "not_sampled", per_source.take(pa.array(ranks))
    )
    state = _apply_verdicts(state, dropped, verdicts, "mixture")
    return state.with_columns(pl.Series("copies", copies)), plan.report


def _split(state: pl.DataFrame, config: MixtureConfig) -> pl.DataFrame:
    kept = np.nonzero(state["copies"].to_numpy() > 0)[0]
    groups = state["group"].to_arrow().take(pa.array(kept)) if "group" in state.columns else None
    codes = np.zeros(state.height, dtype=np.int8)
    codes[kept] = assign_splits(
        state["id"].to_arrow().take(pa.array(kept)),
        groups,
        config.split.validation,
        config.build.seed,
    )
    return state.with_columns(pl.Series("split", codes))


def _write(
    eng: Engine, state: pl.DataFrame, cache: list[str], seed: int, work: Path, store: Store
) -> tuple[dict[str, Any], dict[str, Any]]:
    copies = state["copies"].to_numpy()
    output_positions_by_split = output_positions(copies, state["split"].to_numpy(), seed)
    placed = np.concatenate(output_positions_by_split)
    # per row, the positions of its copies: a list array whose offsets are the copy counts
    by_row = placed[np.argsort(placed[:, 0], kind="stable"), 1]
    offsets = np.zeros(state.height + 1, dtype=np.int64)
    np.cumsum(copies, out=offsets[1:])
    positions = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(by_row, pa.int64()))
    # Workers read their block's slice of this file memory-mapped: shipping slices of Arrow
    # arrays to a process would pickle the whole arrays behind them, once per block.
    plan_file = work / "plan.arrow"
    plan = state.select(
        "id", "stage", "reason", "detail", pl.col("split").alias("split_code")
    ).to_arrow()
    passes.write_ipc(plan.append_column("positions", positions), plan_file)
    del plan, positions, placed  # the workers read the file; this process needs neither
    bounds = _block_bounds(state)
    shard_rows = tuple(_shard_size(len(p)) for p in output_positions_by_split)
    items = [
        (cache[b], b, str(plan_file), a, z - a, str(work), shard_rows, str(store.root))
        for b, (a, z) in enumerate(bounds)
    ]
    results = eng.map(passes.emit, items, "write", weights=[z - a for a, z in bounds])

    buckets: dict[tuple[int, int], list[str]] = {}
    for _, parts in results:
        for code, shard, path in parts:
            buckets.setdefault((code, shard), []).append(path)
    keys = sorted(buckets)
    scratch = [str(work / f"shard-{c}-{s:06d}.parquet") for c, s in keys]
    objects = eng.map(
        passes.gather,
        [(buckets[k], f, str(store.root)) for k, f in zip(keys, scratch, strict=True)],
        "shards",
    )
    splits: dict[str, Any] = {name: {"rows": 0, "shards": []} for name in SPLIT_NAMES}
    for (code, _), entry in zip(keys, objects, strict=True):
        split = splits[SPLIT_NAMES[code]]
        split["shards"].append(entry)
        split["rows"] += entry["rows"]
    ledger_parts = [ledger for ledger, _ in results if ledger is not None]
    return splits, {"rows": sum(p["rows"] for p in ledger_parts), "parts": ledger_parts}
