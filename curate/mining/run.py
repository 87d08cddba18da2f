"""A mining run: logs read, secrets redacted (or rows rejected), every row judged, the
failures, positives and unreadable rows stored as objects, and a record of it all (named by
its sha256) under the store's `runs/mining/`.

Nothing is written before redaction: the stored objects, the record and what the CLI prints
hold no secret a log carried (in turns, answers, tags, or the raw text of a bad row).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import UserError
from curate.fsio import sha256_file, write_bytes
from curate.manifests.store import Store
from curate.mining.candidates import INDEX_POINTER, collapse, latest_index, queue
from curate.mining.config import load_mine_config
from curate.mining.labels import queue_records
from curate.mining.logs import LOG_SCHEMA, read_logs
from curate.mining.rules import RULES, judge
from curate.rows import MESSAGES
from curate.validators.pii import redact_texts

RECORD_VERSION = 1
NEAR_THRESHOLD = 0.8  # Jaccard of word 5-grams at which two failing prompts are one


@dataclass
class MiningRun:
    id: str
    record: dict[str, Any]
    queue: list[dict[str, Any]]  # the new candidates, most urgent first (queue records)


def mine(logs: list[Path], config: Path | None, store: Store) -> MiningRun:
    """Judge every row of `logs` by the rules of `config` (mine.toml; defaults without),
    collapse the failures into candidates (with every earlier run's) and queue the new
    ones. One mining run at a time per store: the candidate index is read and replaced."""
    missing = [str(p) for p in logs if not p.is_file()]
    if missing:
        raise UserError(f"log file not found: {', '.join(missing)}")
    lock = store.root / "runs" / "mining.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _mine(logs, config, store)
    finally:
        os.close(fd)


def _mine(logs: list[Path], config: Path | None, store: Store) -> MiningRun:
    mine_config, settings, identity = load_mine_config(config)
    read = read_logs(logs)
    rows, bad = read.rows, read.bad
    pii = mine_config.privacy.pii
    found: dict[str, int] = {}
    rejected = pa.table({n: pa.array([], pa.string()) for n in ("origin", "field", "error", "raw")})
    if pii != "off":
        rows, hit = _redact(rows, found)
        bad = bad.set_column(3, "raw", redact_texts(bad.column("raw").combine_chunks())[0])
        if pii == "reject" and hit.any():
            rejected = pa.table(
                {
                    "origin": rows.column("origin").filter(pa.array(hit)),
                    "field": pa.repeat("", int(hit.sum())),
                    "error": pa.repeat("pii", int(hit.sum())),
                    "raw": pa.nulls(int(hit.sum()), pa.string()),
                }
            )
            rows = rows.filter(pa.array(~hit))
    judged = judge(rows, settings)
    failures = judged.filter(pl.col("reason").is_not_null())
    positives = judged.filter(pl.col("positive"))
    unread = pa.concat_tables([bad, rejected.cast(bad.schema)])
    previous, known = latest_index(store)
    step = _contamination(mine_config, config, store)
    with tempfile.TemporaryDirectory(dir=store.root) as work:
        index, member, leaked = collapse(failures, known, NEAR_THRESHOLD, Path(work), step)
    new = set(index["candidate"].to_list()) - set(known["candidate"].to_list())
    items = queue(index, new, failures)
    objects = {
        name: _put(table, store)
        for name, table in (
            ("failures", failures.with_columns(member.alias("candidate")).to_arrow()),
            ("positives", positives.to_arrow()),
            ("unread", unread),
            ("candidates", index.to_arrow()),
            ("queue", pl.DataFrame(items, schema_overrides=index.schema).to_arrow()),
        )
    }
    by_rule = {r: int(failures["reasons"].list.contains(r).sum()) for r in RULES}
    record = {
        "kind": "mining",
        "version": RECORD_VERSION,
        "logs": [
            {"path": str(p), "sha256": sha256_file(p), "rows": int(n)}
            for p, n in zip(logs, _rows_per_file(rows, bad, logs), strict=True)
        ],
        "config": identity,
        "counts": {
            "rows": judged.height,
            "failures": failures.height,
            "by_rule": {r: n for r, n in by_rule.items() if n},
            "by_reason": dict(sorted(failures["reason"].value_counts().iter_rows())),
            "positives": positives.height,
            "unread": unread.num_rows,
            "pii_rejected": rejected.num_rows,
            "latency_outliers": int(judged["latency_outlier"].sum()),
        },
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
            "new": len(new),
            "seen_before": int(member.is_in(known["candidate"].to_list()).sum()),
            "total": index.height,
        },
        "pii": dict(sorted(found.items())),
        "latency_outliers": judged.filter(pl.col("latency_outlier"))["origin"].to_list()[:20],
        "objects": objects,
    }
    rid = store.put_record("mining", record)
    write_bytes(store.root / "runs" / INDEX_POINTER, objects["candidates"]["object"].encode())
    return MiningRun(rid, record, queue_records(items, rid))


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


def _put(table: pa.Table, store: Store) -> dict[str, Any]:
    from curate.engines.passes import write_object

    with tempfile.TemporaryDirectory(dir=store.root) as tmp:
        entry = write_object(table, Path(tmp) / "object.parquet", str(store.root))
    store.sync_objects([entry["object"]])
    return entry


def _rows_per_file(rows: pa.Table, bad: pa.Table, logs: list[Path]) -> list[int]:
    origins = pl.concat(
        [pl.Series(rows.column("origin").to_pylist()), pl.Series(bad.column("origin").to_pylist())]
    )
    files = origins.str.replace(r":\d+$", "")
    return [int((files == str(p)).sum()) for p in logs]


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
    count(per, _owners(messages))
    messages = pa.ListArray.from_arrays(
        messages.offsets,
        pa.StructArray.from_arrays([items.field("role"), content], names=["role", "content"]),
        type=MESSAGES,
    )
    responses = rows.column("responses").combine_chunks()
    answers, per = redact_texts(pc.fill_null(responses.flatten(), ""))
    count(per, _owners(responses))
    responses = pa.ListArray.from_arrays(responses.offsets, answers)
    tags, per = redact_texts(rows.column("tags").combine_chunks(), as_json=True)
    count(per)
    out = rows.set_column(LOG_SCHEMA.get_field_index("messages"), "messages", messages)
    out = out.set_column(LOG_SCHEMA.get_field_index("responses"), "responses", responses)
    out = out.set_column(LOG_SCHEMA.get_field_index("tags"), "tags", tags)
    return out.cast(LOG_SCHEMA), hit


def _owners(lists: pa.ListArray) -> np.ndarray:
    """Per item of a list column, the row it belongs to."""
    offsets = lists.offsets.to_numpy()
    return np.repeat(np.arange(len(lists)), np.diff(offsets))
