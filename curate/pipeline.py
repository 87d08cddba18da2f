"""A build: plan → ingest → segments → mixture → split → write → assemble.

Blocks are read and normalized in parallel and cached under their file's sha256, so an
interrupted build resumes where it stopped and an unchanged source is never re-read. The
main process only holds a small index per row (id, order, verdict, the columns steps declare);
row payloads stay in the cached blocks until they are written out, so memory is bounded by
block size, not by the data set. Each phase is a function of the `Build` below; new
capabilities are steps or index stages, not new code in `run_build`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from curate import __version__
from curate.config import MixtureConfig
from curate.dedup.exact import ExactDedup
from curate.dedup.minhash import NearDedup, SplitClusters
from curate.engines.base import Engine
from curate.engines.local import LocalEngine
from curate.engines.stepcache import StepCache
from curate.errors import UserError
from curate.manifests.lineage import source_lineage
from curate.manifests.manifest import assemble as assemble_manifest
from curate.manifests.manifest import (
    manifest_objects,
    merge_reports,
    misread_sources,
    stage_entries,
)
from curate.manifests.store import Store
from curate.mixers.stages import MixtureStage, SplitStage
from curate.progress import Progress
from curate.runner import (
    READER_VERSION,
    Cache,
    ReadStep,
    StepRun,
    ingest,
    run_segments,
    segments,
)
from curate.sources import BlockTask, FileScan, plan_blocks, scan_file, scratch_dir
from curate.steps import IndexStage, ReportView, Step
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

if TYPE_CHECKING:
    from curate.writer import Written


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
    if config.dedup.exact:  # a mined correction wins its tie with the row it repeats
        steps.append(ExactDedup(tuple(s.name for s in config.sources if s.role == "mined")))
    # a split by cluster joins rows at its looser threshold on the same signatures
    loose = config.split.cluster_threshold if config.split.by == "cluster" else None
    on = config.split.cluster_on
    if config.dedup.near is not None:
        near = config.dedup.near
        steps.append(NearDedup(near.threshold, near.num_perm, near.ngram, loose, on))
    elif loose is not None:
        steps.append(SplitClusters(loose, cluster_on=on))
    if config.dedup.semantic is not None:
        from curate.dedup.semantic import SemanticDedup, resolve_model

        semantic = config.dedup.semantic
        cache = str(store.root / "cache" / "embeddings") if store is not None else None
        model = resolve_model(semantic.model, config.base_dir)
        cosine = config.split.cluster_cosine if loose is not None else None
        steps.append(SemanticDedup(semantic.threshold, model, cache, cosine))
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


def make_engine(
    name: str,
    workers: int | None,
    progress: Progress,
    address: str | None = None,
    logs: Path | None = None,
) -> Engine:
    """The engine a build runs on; `address` (Ray only): local, auto or a cluster's address;
    `logs`: where a Ray started here leaves its logs."""
    if name == "ray":
        from curate.engines.ray import RayEngine

        return RayEngine(workers, progress, address or "local", logs)
    if name != "local":
        raise UserError(f"unknown engine {name!r}: use --engine local or --engine ray")
    if address is not None:
        raise UserError("--address is for --engine ray")
    return LocalEngine(workers, progress)


@dataclass
class Build:
    """What the phases of one build share; each phase reads it and fills in its part."""

    config: MixtureConfig
    store: Store
    engine: Engine
    work: Path
    strict: bool
    prescanned: dict[tuple[str, str | None], FileScan]
    target: Target | None
    steps: list[Step]
    stages: list[IndexStage]  # after the steps, over the whole index: mixture, split
    parent: str | None = None
    keeps: dict[str, str | None] = field(default_factory=dict)  # reviewers' keep decisions
    tasks: list[BlockTask] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    files: list[list[dict[str, Any]]] = field(default_factory=list)
    lineage: list[dict[str, Any] | None] = field(default_factory=list)  # per source
    run: StepRun | None = None
    # the first global step's keys, ingest to segments (a list `run_segments` takes from)
    keys: list[pa.Table] = field(default_factory=list)
    cache: Cache | None = None  # the step cache (None for builds that handle PII)
    written: Written | None = None
    split_index: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    report: bool = True  # write the HTML report (an object the manifest names)

    @property
    def sources(self) -> list[str]:
        return [s.name for s in self.config.sources]

    @property
    def result(self) -> StepRun:
        assert self.run is not None, "ingest has not run"
        return self.run


def run_build(
    config: MixtureConfig,
    store: Store,
    *,
    workers: int | None = None,
    engine: str = "local",
    address: str | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    parent: str | None = None,
    prescanned: dict[tuple[str, str | None], FileScan] | None = None,
    report: bool = True,
    allow_empty: bool = False,
) -> BuildResult:
    """Build, store the manifest and return it. A build with no row out is an error
    (`EmptyBuild`, exit 2, its manifest stored as the evidence) unless `allow_empty`."""
    started = time.time()
    timings: dict[str, float] = {}
    store.check()
    target = load_build_target(config, store)
    steps = build_steps(config, target, store)
    stages: list[IndexStage] = [MixtureStage(config), SplitStage(config)]
    overrides = None
    if config.overrides:
        from curate.review.overrides import OverrideStage, load_overrides

        overrides = load_overrides(config)
        stages.insert(0, OverrideStage(overrides))
    shown = progress or Progress(enabled=False)
    eng = make_engine(engine, workers, shown, address, store.root / "logs" / "ray")
    # the object lock, held until the manifest names every object: `curate gc` waits
    with store.writing():
        with store.temp_dir("build-") as work, eng:
            build = Build(
                config, store, eng, work, strict, prescanned or {}, target, steps, stages, parent
            )
            build.keeps = overrides.keeps if overrides is not None else {}
            build.report = report
            for name, phase in PHASES:
                t0 = time.time()
                phase(build)
                timings[name] = time.time() - t0
        run = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "python": platform.python_version(),
            "engine": engine,
            **eng.describe(),
            "store": store.name,
            "config_dir": str(config.base_dir),
            "seconds": round(time.time() - started, 3),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "cache": build.result.cache,
        }
        manifest_id = store.put_manifest(build.manifest, run)
    if build.manifest["counts"]["rows_out"] == 0 and not allow_empty:
        raise EmptyBuild(manifest_id, build.manifest, store)
    if misread := misread_sources(build.manifest):
        name, n, rows_in = misread[0]
        raise UserError(
            f"build {manifest_id[:12]}: source {name!r} (format auto) reads {n} of {rows_in} "
            f"rows as conversations nobody asked (no user turn, or an answer holding "
            f"'\\n\\nHuman:'): {_one_rejection(store, build.manifest, 'read')}. Give the "
            "source its `format` (or map its fields with `columns`); the manifest is stored: "
            f"`curate review {manifest_id[:12]} --source {name}`"
        )
    return BuildResult(manifest_id, build.manifest, run)


class EmptyBuild(UserError):
    """A build that rejected every row: the step that rejected most, its reasons and one
    rejected row, and how to look at the rest (the manifest is stored, with its ledger)."""

    def __init__(self, manifest_id: str, manifest: dict[str, Any], store: Store):
        self.manifest_id = manifest_id
        short = manifest_id[:12]
        stages = [e for e in manifest["stages"] if e["rejected"]]
        rows_in = manifest["counts"]["rows_in"]
        if not stages:
            super().__init__(
                f"build {short}: no rows out: the sources hold no rows ({rows_in} read); "
                "check the sources' paths and formats"
            )
            return
        worst = max(stages, key=lambda e: sum(e["rejected"].values()))
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(worst["rejected"].items()))
        example = _one_rejection(store, manifest, worst.get("stage", worst["name"]))
        super().__init__(
            f"build {short}: no rows out: all {rows_in} input rows were rejected. Step "
            f"{worst['name']} rejected {sum(worst['rejected'].values())} ({reasons}); "
            f"{example}. `curate review {short}` shows them with their evidence (the "
            "manifest is stored); `--allow-empty` accepts a build without rows."
        )


def _one_rejection(store: Store, manifest: dict[str, Any], stage: str) -> str:
    """One ledger row of `stage`, as `source 'a' (a.jsonl:3): reason {detail}`."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for part in manifest["ledger"]["parts"]:
        table = pq.read_table(
            store.verified_object(part["object"]),
            columns=["source", "stage", "reason", "detail", "origin"],
        )
        hit = table.filter(pc.equal(table.column("stage"), stage))
        if hit.num_rows:
            row = hit.slice(0, 1).to_pylist()[0]
            detail = (row["detail"] or "")[:200]
            return f"e.g. source {row['source']!r} ({row['origin']}): {row['reason']} {detail}"
    return "no example in the ledger"


def plan(build: Build) -> None:
    """Scan every source file (hash, size, line offsets) and cut it into block tasks."""
    config = build.config
    files = [
        [
            (p, Path(os.path.relpath(p, config.base_dir)).as_posix())
            for p in config.source_files(src)
        ]
        for src in config.sources
    ]
    jobs = [(str(p), scratch_dir(build.store.root)) for fs in files for p, _ in fs]
    known = build.prescanned
    missing = [job for job in jobs if job not in known]
    found = dict(zip(missing, build.engine.map(scan_file, missing, "scan"), strict=True))
    scans = [known[job] if job in known else found[job] for job in jobs]
    for rank, src in enumerate(config.sources):
        mine, scans = scans[: len(files[rank])], scans[len(files[rank]) :]
        shown = [name for _, name in files[rank]]
        tasks, entries = plan_blocks(src.name, src.format, shown, mine, build.strict, src.columns)
        build.tasks += tasks
        build.ranks += [rank] * len(tasks)
        build.files.append(entries)
        build.lineage.append(source_lineage([p for p, _ in files[rank]]))


def ingest_phase(build: Build) -> None:
    """Read every block (or take it from the cache) and run the first segment of steps."""
    private = build.config.validate_.pii != "off"
    blocks = _block_cache(build.tasks, build.store, build.work, private)
    if not private or _redacts_first(build.steps):
        # a redacting build caches what its first segment made: the PII step runs in it,
        # so the block it keeps holds redacted text only (its rows as read stay in scratch)
        steps = StepCache(str(build.store.root / "cache" / "steps"), str(build.work))
        build.cache = Cache(steps, [_block_key(t) for t in build.tasks])
    reader = ReadStep({s.name: s.format for s in build.config.sources})
    meta_fields = {k: v for stage in build.stages for k, v in stage.meta_fields().items()}
    first = segments(build.steps)[0]
    build.run, build.keys = ingest(
        build.engine,
        reader,
        first,
        build.tasks,
        blocks,
        build.ranks,
        build.work,
        meta_fields,
        build.keeps,
        build.cache,
    )


def segments_phase(build: Build) -> None:
    """The steps after the first segment, and every global step's resolution."""
    segs = segments(build.steps)
    run_segments(
        build.engine,
        build.result,
        build.keys,
        segs,
        build.sources,
        build.work,
        build.keeps,
        build.cache,
    )
    build.keys = []


def index_stages(build: Build) -> None:
    """Reviewer overrides, mixture and split: decisions over the whole index."""
    run = build.result
    for stage in build.stages:
        run.index = stage.run(run.index)
        run.stages.append(stage)


def write(build: Build) -> None:
    """Shards of every split and the ledger, into the store."""
    from curate.writer import write_outputs, write_split_index

    run = build.result
    cache = (build.cache.steps, run.states) if build.cache is not None else None
    written = write_outputs(
        build.engine,
        run.index,
        run.blocks,
        build.config.build.seed,
        build.work,
        build.store,
        cache,
    )
    run.cache["outputs_reused"] = int(written.reused)
    build.written = written
    build.split_index = write_split_index(run.index, build.work, build.store)


def assemble(build: Build) -> None:
    """The manifest; every object the build wrote is made durable before it names them."""
    run, written = build.result, build.written
    assert written is not None, "write has not run"
    view = ReportView(run.index, build.sources, run.blocks)
    reports = merge_reports([s.manifest_report(view) for s in [*build.steps, *build.stages]])
    manifest = assemble_manifest(
        build.config,
        run.index,
        build.files,
        stage_entries(run.stages, run.index),
        written.splits,
        written.ledger,
        build.parent,
        build.target,
        reports,
        build.lineage,
    )
    manifest["split_index"] = build.split_index
    if build.parent is None:  # not given: the latest build of this name, if any
        from curate.manifests.lineage import inferred_parent

        manifest["parent"] = inferred_parent(build.store, manifest)
    build.store.sync_objects(manifest_objects(manifest))
    if build.cache is not None:
        written.remember(build.cache.steps)
    build.manifest = manifest


def report(build: Build) -> None:
    """The HTML report, from the manifest and the objects it names (already durable)."""
    if build.report:
        from curate.report import stored_report

        build.manifest["report"] = stored_report(build.manifest, build.store)


PHASES = (
    ("plan", plan),
    ("ingest", ingest_phase),
    ("segments", segments_phase),
    ("stages", index_stages),  # mixture, split
    ("write", write),
    ("assemble", assemble),
    ("report", report),
)


def _redacts_first(steps: list[Any]) -> bool:
    """The PII step is in the first segment (before any global step), so no cached step
    output holds a row's text as read."""
    row_steps, _ = segments(steps)[0]
    return any(isinstance(s, PiiStep) for s in row_steps)


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
