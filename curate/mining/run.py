"""A mining run: logs read, secrets redacted (or rows rejected), every row judged, the
failures, positives and unreadable rows stored as objects, and a record of it all (named by
its sha256) under the store's `runs/mining/`.

Nothing is written before redaction: the stored objects, the record and what the CLI prints
hold no secret a log carried (in turns, answers, tags, or the raw text of a bad row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curate.engines.local import LocalEngine
from curate.errors import UserError
from curate.manifests.store import Store
from curate.mining import traffic
from curate.mining.candidates import (
    INDEX_POINTER,
    INDEX_SCHEMA,
    collapse,
    latest_index,
    prompt_text,
    put_index,
    queue,
)
from curate.mining.clusters import (
    CLUSTER_SCHEMA,
    ClusterSettings,
    cluster,
    most_urgent,
    summaries,
)
from curate.mining.config import cluster_model, load_mine_config
from curate.mining.consistency import answer_rows, disagreement, group_key
from curate.mining.labels import queue_records
from curate.mining.logs import LOG_SCHEMA, LogBlock, plan_logs, read_block
from curate.mining.parts import fetch, put_ordered, slim
from curate.mining.parts import files as parts_files
from curate.mining.parts import path as part_path
from curate.mining.parts import put as put_parts
from curate.mining.rules import RULES, RuleSettings, judge, latency_limit
from curate.progress import Progress
from curate.rows import MESSAGES
from curate.runner import release_freed
from curate.validators.pii import redact_texts

RECORD_VERSION = 2  # 2: clusters, self-consistency, traffic per week and its sample
NEAR_THRESHOLD = 0.8  # Jaccard of word 5-grams at which two failing prompts are one
CLUSTERS_IN_RECORD = 50  # the largest; every cluster's members are in the clusters object


@dataclass
class MiningRun:
    id: str
    record: dict[str, Any]
    store: Store

    @property
    def candidates(self) -> pl.DataFrame:
        """The new candidates, most urgent first (read when asked: a run may find many)."""
        return pl.read_parquet(
            self.store.verified_object(self.record["objects"]["queue"]["object"])
        )

    @property
    def queue(self) -> list[dict[str, Any]]:
        """The new candidates as queue records (`labels.queue_batches` streams them)."""
        return queue_records(self.candidates.to_dicts(), self.id)


def mine(logs: list[Path], config: Path | None, store: Store, fresh: bool = False) -> MiningRun:
    """Judge every row of `logs` by the rules of `config` (mine.toml; defaults without),
    collapse the failures into candidates (with every earlier run's, unless `fresh`) and
    queue the new ones. One mining run at a time per store: the candidate index is read and
    replaced."""
    missing = [str(p) for p in logs if not p.is_file()]
    if missing:
        raise UserError(f"log file not found: {', '.join(missing)}")
    # the objects lock too: `gc` must not take the run's objects before its record names them
    with store.lock("mining", exclusive=True), store.writing():
        return _mine(logs, config, store, fresh)


def _mine(logs: list[Path], config: Path | None, store: Store, fresh: bool) -> MiningRun:
    mine_config, settings, identity = load_mine_config(config)
    step = _contamination(mine_config, config, store)
    # --fresh: an index of this run's candidates alone (earlier runs' stay in their records)
    previous, known = latest_index(store, fresh)
    known_object = store.verified_object(previous) if previous else None
    # scratch in the store: plain copies of compressed logs (unredacted) go with it
    with store.temp_dir("mine-") as work:  # swept if this run is killed
        blocks, shas = plan_logs(logs, str(work))
        items = [(b, settings, mine_config.privacy.pii, str(work), i) for i, b in enumerate(blocks)]
        # this process judges blocks too: judging them only in the pool kept its heap small
        # (120 MB, not 450) but waited ~2 s for the pool to start, and the collapse that
        # follows reuses that heap: the run's peak at 4M rows did not fall (2.50 -> 2.57 GB)
        with LocalEngine(None, Progress(enabled=False)) as engine:
            parts = engine.map(
                judge_block, items, "judge", weights=[b.stop - b.start for b in blocks]
            )
        found = _candidates(work, parts, (known, known_object), step, mine_config, config, store)
        objects = _objects(work, parts, found, store)
        clusters = summaries(found.clustered, found.failures, found.index)
    record = {
        "kind": "mining",
        "version": RECORD_VERSION,
        "logs": [
            {
                "path": str(p.resolve()),  # lineage outlives the working folder
                "sha256": sha,
                "rows": sum(x["per_file"].get(str(p), 0) for x in parts),
            }
            for p, sha in zip(logs, shas, strict=True)
        ],
        "config": identity,
        **_findings(parts, settings, step, found, previous, known),
        "clusters": {
            **found.how,
            "clustered": found.clustered.height,
            "count": len(clusters),
            "top": clusters[:CLUSTERS_IN_RECORD],
        },
        "objects": objects,
    }
    rid = store.put_record("mining", record)
    store.write_pointer(INDEX_POINTER, objects["candidates"]["object"])
    return MiningRun(rid, record, store)


@dataclass
class _Found:
    failures: pl.DataFrame  # slim (`parts.slim`), with uncertainty and candidate
    index: pl.DataFrame  # the new candidate index without its text, with `at` and `new`
    known: Path | None  # the earlier index's object (where its candidates' text is)
    member: pl.Series  # per failure, its candidate (null: it leaked from an eval set)
    leaked: pl.DataFrame  # what the contamination step rejected: their detail
    clustered: pl.DataFrame  # CLUSTER_SCHEMA
    how: dict[str, Any]  # the clustering model, or why there was none
    queued: tuple[pl.DataFrame, np.ndarray]  # the new candidates, their order in the queue
    weeks: pl.DataFrame  # rows and failures per week and model
    sample: pl.DataFrame  # each week's prompt sample


def _candidates(
    work: Path,
    parts: list[dict[str, Any]],
    known: tuple[pl.DataFrame, Path | None],
    step: Any,
    mine_config: Any,
    config: Path | None,
    store: Store,
) -> _Found:
    """The judged blocks' failures collapsed into candidates, clustered and queued."""
    stored = parts_files(work, "failures", parts)
    failures = _with_uncertainty(slim(stored), work, parts)
    texts = (known[1], stored)  # where the prompts and answers are: the runs' objects
    index, member, leaked = collapse(failures, known[0], NEAR_THRESHOLD, work, texts, step)
    failures = failures.with_columns(member)
    release_freed()  # what the collapse's keys and blocks held
    clustered, how = _clusters(index, failures, texts, mine_config, config, store)
    queued = queue(index, failures, clustered if how.get("model") else None)
    weeks, sample = traffic.merge(
        [pl.read_parquet(p) for p in parts_files(work, "weeks", parts)],
        [pl.read_parquet(p) for p in parts_files(work, "sample", parts)],
    )
    return _Found(failures, index, known[1], member, leaked, clustered, how, queued, weeks, sample)


def _objects(
    work: Path, parts: list[dict[str, Any]], found: _Found, store: Store
) -> dict[str, Any]:
    """What the run found, stored: each object named by its sha256."""
    extra = found.failures.select("answers", "u", "json_valid", "candidate")
    failures = parts_files(work, "failures", parts)
    return {
        "failures": put_parts(failures, store, work / "failures.parquet", extra),
        "positives": put_parts(
            parts_files(work, "positives", parts), store, work / "positives.parquet"
        ),
        "unread": put_parts(parts_files(work, "unread", parts), store, work / "unread.parquet"),
        "candidates": put_index(
            found.index, found.known, failures, store, work / "candidates.parquet"
        ),
        "queue": put_ordered(
            found.queued[0],
            failures,
            store,
            work / "queue.parquet",
            _queue_schema(found.queued[0]),
            order=found.queued[1],
        ),
        "clusters": _put(found.clustered.to_arrow(), store),
        "traffic": _put(found.sample.to_arrow(), store),
    }


def _findings(
    parts: list[dict[str, Any]],
    settings: RuleSettings,
    step: Any,
    found: _Found,
    previous: str | None,
    known: pl.DataFrame,
) -> dict[str, Any]:
    """The record's counts: per rule, latency, eval overlaps, candidates, secrets,
    self-consistency and traffic per week."""
    latency, outliers = _latency(parts, settings.latency_mads)
    leaked = found.leaked
    return {
        "counts": {
            **_sum_counts(parts),
            "latency_outliers": len(outliers),
            "refusals_judged": bool(settings.harmful or settings.safe),  # against a list
        },
        "latency_ms": latency,
        "latency_outliers": outliers[:20],
        "contamination": {
            "params": step.params() if step is not None else None,
            "dropped": leaked.height,
            "by_eval": dict(
                sorted(
                    leaked["detail"].str.json_path_match("$.eval_set").value_counts().iter_rows()
                )
            ),
        },
        "candidates": {
            "previous_index": previous,
            "new": int(found.index["new"].sum()),
            "seen_before": int(found.member.is_in(known["candidate"].implode()).sum()),
            "total": found.index.height,
        },
        "pii": _sum_found(parts),
        "consistency": {
            "groups": int(found.failures["answers"].is_not_null().sum()),
            "uncertain": int((found.failures["u"] > 0).sum()),
        },
        "by_week": traffic.by_week(found.weeks),
    }


def _with_uncertainty(
    failures: pl.DataFrame, work: Path, parts: list[dict[str, Any]]
) -> pl.DataFrame:
    """Failures with their prompt's answers, disagreement `u` and JSON validity rate, where
    the prompt got several answers (in the row, or in rows of its request or prompt)."""
    if failures.height == 0:
        return failures.with_columns(
            pl.lit(None, pl.UInt32).alias("answers"),
            pl.lit(0.0).alias("u"),
            pl.lit(None, pl.Float64).alias("json_valid"),
        )
    found = disagreement(parts_files(work, "answers", parts), failures.select("group"))
    # joined on the group alone, then added: the failures' other columns are not copied
    added = failures.select("group").join(found, on="group", how="left", maintain_order="left")
    return failures.with_columns(added["answers"], added["u"].fill_null(0.0), added["json_valid"])


def _clusters(
    index: pl.DataFrame,
    failures: pl.DataFrame,
    texts: tuple[Path | None, list[Path]],
    mine_config: Any,
    config: Path | None,
    store: Store,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The candidates this run saw, clustered (CLUSTER_SCHEMA), and how: the model, or why
    there was none. The prompts of those clustered are read from `texts` (the earlier
    index's object, the failures' part files)."""
    base = config.resolve().parent if config is not None else Path.cwd()
    model, skipped = cluster_model(mine_config.clusters, base)
    if model is None:
        return pl.DataFrame(schema=CLUSTER_SCHEMA), {"model": None, "skipped": skipped}
    section = mine_config.clusters
    settings = ClusterSettings(
        model, section.cosine, section.max_candidates, str(store.root / "cache" / "embeddings")
    )
    seen = index.filter(pl.col("candidate").is_in(failures["candidate"].drop_nulls().implode()))
    chosen = most_urgent(seen, section.max_candidates)
    known, stored = texts
    fresh = chosen.filter(pl.col("at").is_not_null()).select("candidate", "at")
    prompts = [fresh.join(fetch(stored, fresh["at"], ["prompt"]), on="at").drop("at")]
    if known is not None:  # candidates of earlier runs: their prompt is in the old index
        ids = chosen.filter(pl.col("at").is_null())["candidate"].implode()
        earlier = pl.scan_parquet(known).filter(pl.col("candidate").is_in(ids))
        prompts.append(earlier.select("candidate", "prompt").collect())
    chosen = chosen.join(pl.concat(prompts), on="candidate", how="left")
    how = {"model": model.name, "model_sha256": model.sha256, "cosine": section.cosine}
    return cluster(chosen, settings), how


def judge_block(
    block: LogBlock, settings: RuleSettings, pii: str, work: str, number: int
) -> dict[str, Any]:
    """One block of logs read, redacted and judged (in a worker): its failures, positives
    and unreadable rows written to `work`, its counts and latencies returned."""
    logs = read_block(block)
    rows, bad = logs.rows, logs.bad
    found: dict[str, int] = {}
    rejected = 0
    if pii != "off":
        rows, hit = _redact(rows, found)
        bad = bad.set_column(3, "raw", redact_texts(bad.column("raw").combine_chunks())[0])
        bad = bad.set_column(2, "error", redact_texts(bad.column("error").combine_chunks())[0])
        if pii == "reject" and hit.any():
            refused = rows.filter(pa.array(hit)).select(["origin"])
            n = refused.num_rows
            bad = pa.concat_tables(
                [
                    bad,
                    refused.append_column("field", pa.array([""] * n, pa.string()))
                    .append_column("error", pa.array(["pii"] * n, pa.string()))
                    .append_column("raw", pa.nulls(n, pa.string())),
                ]
            )
            rows, rejected = rows.filter(pa.array(~hit)), n
    judged = judge(rows, settings)
    prompts = prompt_text(judged)
    judged = judged.with_columns(group_key(judged["request_id"], prompts), prompts.alias("prompt"))
    out = Path(work)
    answer_rows(judged).write_parquet(part_path(out, "answers", number))
    refusals = int(judged["refused"].sum())
    judged = judged.drop("folded", "parsed", "refused")
    failures = judged.filter(pl.col("reason").is_not_null())
    weeks, sample = traffic.block_traffic(judged, prompts)
    weeks.write_parquet(part_path(out, "weeks", number))
    sample.write_parquet(part_path(out, "sample", number))
    failures.write_parquet(part_path(out, "failures", number))
    judged.filter(pl.col("positive")).write_parquet(part_path(out, "positives", number))
    pl.from_arrow(bad).write_parquet(part_path(out, "unread", number))  # type: ignore[union-attr]
    return {
        "number": number,
        "rows": judged.height,
        "failures": failures.height,
        "by_rule": {r: int(failures["reasons"].list.contains(r).sum()) for r in RULES},
        "by_reason": dict(failures["reason"].value_counts().iter_rows()),
        "positives": int(judged["positive"].sum()),
        "refusals": refusals,
        "unread": bad.num_rows,
        "pii_rejected": rejected,
        "pii": found,
        "per_file": {block.shown: judged.height + bad.num_rows},
        "latency": judged["latency_ms"].to_numpy(),
        # per row its line (4 bytes; the origin text is made for the few outliers only)
        "shown": block.shown,
        "lines": judged["origin"].str.extract(r":(\d+)$").cast(pl.Int32).to_numpy(),
    }


def _sum_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    by_rule: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for p in parts:
        for r, n in p["by_rule"].items():
            by_rule[r] = by_rule.get(r, 0) + n
        for r, n in p["by_reason"].items():
            by_reason[r] = by_reason.get(r, 0) + n
    return {
        "rows": sum(p["rows"] for p in parts),
        "failures": sum(p["failures"] for p in parts),
        "by_rule": {r: by_rule[r] for r in RULES if by_rule.get(r)},
        "by_reason": dict(sorted(by_reason.items())),
        "positives": sum(p["positives"] for p in parts),
        # answers that refuse, every one: judged wrong only against a harmful list
        "refusals": sum(p["refusals"] for p in parts),
        "unread": sum(p["unread"] for p in parts),
        "pii_rejected": sum(p["pii_rejected"] for p in parts),
    }


def _sum_found(parts: list[dict[str, Any]]) -> dict[str, int]:
    found: dict[str, int] = {}
    for p in parts:
        for kind, n in p["pii"].items():
            found[kind] = found.get(kind, 0) + n
    return dict(sorted(found.items()))


def _latency(parts: list[dict[str, Any]], mads: float) -> tuple[dict[str, Any], list[str]]:
    """Latency percentiles over every row, and the rows above median + `mads` MADs."""
    values = np.concatenate([p["latency"] for p in parts]) if parts else np.empty(0)
    known = values[~np.isnan(values)] if len(values) else values
    if len(known) < 3:
        return {}, []
    limit = latency_limit(known, mads)
    above = np.nonzero(np.nan_to_num(values, nan=-np.inf) > limit)[0]
    ends = np.cumsum([len(p["lines"]) for p in parts])
    outliers = []
    for i in above.tolist():  # the few outliers: their block, then their line in it
        b = int(np.searchsorted(ends, i, side="right"))
        at = i - (int(ends[b - 1]) if b else 0)
        outliers.append(f"{parts[b]['shown']}:{parts[b]['lines'][at]}")
    p50, p95, p99 = (float(np.percentile(known, q)) for q in (50, 95, 99))
    return {"p50": p50, "p95": p95, "p99": p99, "outlier_above": round(limit, 3)}, outliers


def _contamination(mine_config: Any, config: Path | None, store: Store) -> Any:
    """The build's contamination step over mine.toml's eval sets (None without any)."""
    if not mine_config.evals or config is None:
        return None
    from curate.contamination.index import ContaminationStep, load_eval

    base = config.resolve().parent
    sets = [load_eval(e.name, base / e.path, e.fields) for e in mine_config.evals]
    settings = mine_config.contamination
    cache = str(store.root / "cache" / "contamination")
    return ContaminationStep(sets, settings.ngram, settings.threshold, cache)


def _queue_schema(queued: pl.DataFrame) -> dict[str, Any]:
    """The queue object's columns: the index's, then what queueing added."""
    added = {c: t for c, t in queued.schema.items() if c not in INDEX_SCHEMA}
    return {**INDEX_SCHEMA, **{c: t for c, t in added.items() if c not in ("at", "new")}}


def _put(table: pa.Table, store: Store) -> dict[str, Any]:
    from curate.engines.passes import write_object

    with store.temp_dir("mine-object-") as tmp:
        entry = write_object(table, tmp / "object.parquet", store.location)
    store.sync_objects([entry["object"]])
    return entry


def _redact(rows: pa.Table, found: dict[str, int]) -> tuple[pa.Table, np.ndarray]:
    """Logs with every secret in turns, answers and tags replaced; which rows held one."""
    hit = np.zeros(rows.num_rows, dtype=bool)

    def count(per_row: dict[int, dict[str, int]], owner: np.ndarray | None = None) -> None:
        for item, kinds in per_row.items():
            hit[owner[item] if owner is not None else item] = True
            for kind, n in kinds.items():
                found[kind] = found.get(kind, 0) + n

    messages = rows.column("messages").combine_chunks()
    items = messages.flatten()
    content, per = redact_texts(pc.fill_null(items.field("content"), ""))
    count(per, _item_rows(messages))
    messages = pa.ListArray.from_arrays(
        messages.offsets,
        pa.StructArray.from_arrays([items.field("role"), content], names=["role", "content"]),
        type=MESSAGES,
    )
    responses = rows.column("responses").combine_chunks()
    answers, per = redact_texts(pc.fill_null(responses.flatten(), ""))
    count(per, _item_rows(responses))
    responses = pa.ListArray.from_arrays(responses.offsets, answers)
    tags, per = redact_texts(rows.column("tags").combine_chunks(), as_json=True)
    count(per)
    out = rows.set_column(LOG_SCHEMA.get_field_index("messages"), "messages", messages)
    out = out.set_column(LOG_SCHEMA.get_field_index("responses"), "responses", responses)
    out = out.set_column(LOG_SCHEMA.get_field_index("tags"), "tags", tags)
    for name in LOGGED_TEXT:  # every other text a log row carries into the queue and report
        column, per = redact_texts(out.column(name).combine_chunks())
        count(per)
        out = out.set_column(LOG_SCHEMA.get_field_index(name), name, column)
    return out.cast(LOG_SCHEMA), hit


# the log fields curate keeps as they were written (not normalized to a fixed set)
LOGGED_TEXT = ("request_id", "model", "timestamp", "expected_format", "finish_reason")


def _item_rows(lists: pa.ListArray) -> np.ndarray:
    """Per item of a list column, the row it belongs to."""
    offsets = lists.offsets.to_numpy()
    return np.repeat(np.arange(len(lists)), np.diff(offsets))
