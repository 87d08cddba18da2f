"""Out to labelers and back: the annotation queue, and labels imported as a mined source.

The queue is JSONL (Argilla-compatible records: `fields`, `metadata`, `suggestions`) and CSV.
Labeling is editing queue items: `"correction": "<the right answer>"` (or
`"correction_messages": [...]`), or `"decision": "discard"`; Argilla exports map to the same
(`responses` per question, or flattened `correction.responses`). `import_labels` writes
`DIR/NAME/`: `rows.jsonl` (the prompt with its correction, a chat row), `pairs.jsonl`
(chosen = the correction, rejected = the logged answer), `source.toml` (a ready
`[[sources]]` block, `role = "mined"`, `max_repeats = 3`) and `lineage.json` (log files and
their sha256, the mining run, its rules, the label file's sha256).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curate.errors import UserError
from curate.fsio import atomic_path, claim_output_dir, sha256_file, write_bytes
from curate.manifests.store import Store

SOURCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
QUEUE_FILES = ["queue.jsonl", "queue.csv"]
QUEUE_BATCH = 4096  # queue records made and written at a time
CSV_COLUMNS = [
    "id",
    "reason",
    "priority",
    "count",
    "cluster_label",
    "prompt",
    "response",
    "correction",
    "decision",
    "mining_run",
]


def queue_records(items: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [
        {
            "id": item["candidate"],
            "fields": {"prompt": item["prompt"], "response": item["response"]},
            "messages": json.loads(item["messages"]) if item.get("messages") else None,
            "metadata": {
                "reason": item["reason"],
                "priority": item["priority"],
                "count": item["count"],
                "cluster": item.get("cluster"),
                "cluster_label": item.get("label"),
                "cluster_size": item.get("cluster_size"),
                "uncertainty": item["u"],
                "answers": item.get("answers"),
                "json_valid_rate": item.get("json_valid"),
                "request_id": item["request_id"],
                "origin": item["origin"],
                "model": item["model"],
                "mining_run": run_id,
            },
            "suggestions": [{"question_name": "correction", "value": item["response"]}],
            "correction": None,
            "decision": None,
        }
        for item in items
    ]


def queue_batches(
    store: Store, record: dict[str, Any], run_id: str
) -> Iterator[list[dict[str, Any]]]:
    """The queue of a mining run as records, a batch at a time, read from its object."""
    queue = pq.ParquetFile(store.verified_object(record["objects"]["queue"]["object"]))
    for batch in queue.iter_batches(QUEUE_BATCH):
        yield queue_records(batch.to_pylist(), run_id)


def write_queue(batches: Iterable[list[dict[str, Any]]], out: Path, overwrite: bool) -> list[Path]:
    """queue.jsonl and queue.csv in `out` (a new or empty folder, or `overwrite`), written
    a batch of records at a time; each file appears whole or not at all."""
    claim_output_dir(out, QUEUE_FILES, overwrite, flag="--queue")
    with (
        atomic_path(out / "queue.jsonl") as lines_path,
        atomic_path(out / "queue.csv") as csv_path,
        open(lines_path, "w", encoding="utf-8") as lines,
        open(csv_path, "w", encoding="utf-8", newline="") as table,
    ):
        writer = csv.writer(table)
        writer.writerow(CSV_COLUMNS)
        for records in batches:
            lines.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            writer.writerows(_csv_row(r) for r in records)
    return [out / name for name in QUEUE_FILES]


def _csv_row(record: dict[str, Any]) -> list[Any]:
    meta = record["metadata"]
    return [
        record["id"],
        meta["reason"],
        meta["priority"],
        meta["count"],
        meta.get("cluster_label") or "",
        record["fields"]["prompt"],
        record["fields"]["response"],
        "",
        "",
        meta["mining_run"],
    ]


def import_labels(
    labeled: Path, name: str, out: Path, store: Store, overwrite: bool = False
) -> dict[str, Any]:
    """`labeled` (queue items a labeler edited: JSONL, or the CSV) as the source `name`;
    its lineage names the mining runs (in `store`) the items came from, their log files
    and rules."""
    check_source_name(name)
    if not labeled.is_file():
        raise UserError(f"label file not found (or not a regular file): {labeled}")
    items = _read_labeled(labeled)
    rows, pairs, discarded, unlabeled, runs = [], [], 0, 0, set()
    for line, item in items:
        where = f"{labeled}:{line}"
        _check_shapes(item, where)
        runs.add((item.get("metadata") or {}).get("mining_run"))
        decision = _answer(item, "decision")
        correction = _answer(item, "correction")
        turns = _answer(item, "correction_messages")
        _check_answer(correction, turns, decision, where)
        if decision == "discard":
            discarded += 1
            continue
        if not correction and not turns:
            unlabeled += 1
            continue
        prompt = item.get("messages") or [
            {"role": "user", "content": _field(item, "prompt", where)}
        ]
        answer = (
            turns if isinstance(turns, list) else [{"role": "assistant", "content": correction}]
        )
        meta = {"candidate": item.get("id"), "reason": (item.get("metadata") or {}).get("reason")}
        rows.append({"messages": [*prompt, *answer], **meta})
        logged = _field(item, "response", where)
        chosen = answer[-1]["content"] if answer else correction
        if chosen and chosen != logged:
            pairs.append(
                {
                    "prompt": _field(item, "prompt", where),
                    "chosen": chosen,
                    "rejected": logged,
                    **meta,
                }
            )
    found_runs = _runs(store, sorted(r for r in runs if r))
    folder = out / name
    claim_output_dir(
        folder, ["rows.jsonl", "pairs.jsonl", "source.toml", "lineage.json"], overwrite
    )
    for file, found in (("rows.jsonl", rows), ("pairs.jsonl", pairs)):
        write_bytes(
            folder / file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in found).encode()
        )
    shown = os.path.relpath(folder / "rows.jsonl")
    write_bytes(folder / "source.toml", _source_block(name, shown).encode())
    lineage = {
        "mining_runs": sorted(found_runs),
        "runs": found_runs,
        "labels": {"path": str(labeled), "sha256": sha256_file(labeled)},
        "rows": len(rows),
        "pairs": len(pairs),
        "discarded": discarded,
        "unlabeled": unlabeled,
    }
    write_bytes(folder / "lineage.json", json.dumps(lineage, indent=2, sort_keys=True).encode())
    return {"folder": str(folder), **lineage}


def _runs(store: Store, ids: list[str]) -> dict[str, Any]:
    """Per mining run: the log files it read (path, sha256, rows) and the rules it judged
    by (mine.toml's settings; the fingerprint of its lists and schemas)."""
    import hashlib

    from curate.errors import UnknownIdError
    from curate.manifests.store import canonical_json

    out = {}
    for rid in ids:
        try:
            record = store.read_record("mining", rid)
        except UnknownIdError:
            raise UserError(
                f"the labels come from mining run {rid[:12]}, which is not in store "
                f"{store.location}: pass --store (the store `curate mine` wrote to)"
            ) from None
        config = record["config"]
        out[rid] = {
            "logs": record["logs"],
            "rules": config.get("rules"),
            "formats": config.get("formats"),
            "config_sha256": hashlib.sha256(canonical_json(config)).hexdigest(),
        }
    return out


def check_source_name(name: str) -> None:
    """A source name is also a folder under --out: simple, one path component."""
    if not SOURCE_NAME.fullmatch(name) or name in (".", ".."):
        raise UserError(
            f"--as {name!r}: a source name is letters, digits and - _ . (not . or ..), at "
            "most 100 characters; it names the folder written under --out"
        )


def _source_block(name: str, path: str) -> str:
    """The `[[sources]]` block, written by a TOML writer (a name or path is data, never
    TOML syntax)."""
    import tomlkit

    source = tomlkit.table()
    source.add("name", name)
    source.add("path", path)
    source.add("format", "chat")
    source.add("role", "mined")
    source.add("max_repeats", 3)
    source["max_repeats"].comment("corrections upsampled up to 3x, the usual practice")
    sources = tomlkit.aot()
    sources.append(source)
    doc = tomlkit.document()
    doc.add(
        tomlkit.comment("corrections of failures found by `curate mine`; append to mixture.toml")
    )
    doc.add("sources", sources)
    doc.add(tomlkit.comment("weight = 0.1"))
    return tomlkit.dumps(doc)


def _read_labeled(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return [
                (
                    i,
                    {
                        "id": r["id"],
                        "fields": {"prompt": r["prompt"], "response": r["response"]},
                        "metadata": {"reason": r.get("reason"), "mining_run": r.get("mining_run")},
                        "correction": r.get("correction") or None,
                        "decision": r.get("decision") or None,
                    },
                )
                for i, r in enumerate(csv.DictReader(fh), start=2)
            ]
    out = []
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    for i, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{i}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise UserError(f"{path}:{i}: JSON nested too deeply to be a labeled item") from None
        if not isinstance(item, dict):
            raise UserError(f"{path}:{i}: a labeled item is a JSON object")
        out.append((i, item))
    return out


def _answer(item: dict[str, Any], question: str) -> Any:
    """A labeler's answer to `question`: the item's own key, Argilla's `responses` (a list
    of {question_name, value} or {question: [{value}]}), or a flattened export's
    `question.responses`."""
    if item.get(question) not in (None, ""):
        return item[question]
    responses = item.get("responses")
    if isinstance(responses, list):
        for r in responses:
            if isinstance(r, dict) and r.get("question_name") == question:
                return r.get("value")
    if isinstance(responses, dict) and responses.get(question):
        first = responses[question][0]
        return first.get("value") if isinstance(first, dict) else first
    flat = item.get(f"{question}.responses")
    if isinstance(flat, list) and flat:
        return flat[0]
    return None


def _field(item: dict[str, Any], name: str, where: str) -> str:
    fields = item.get("fields") or {}
    value = fields.get(name, item.get(name))
    if not isinstance(value, str):
        raise UserError(f"{where}: item {item.get('id')!r} has no `{name}` text")
    return value


def _check_shapes(item: dict[str, Any], where: str) -> None:
    """The parts of a labeled item curate reads, each of the shape the queue wrote."""
    fields = item.get("fields")
    if fields is not None and not isinstance(fields, dict):
        raise UserError(f"{where}: field `fields` is {_kind(fields)}, not an object")
    if not isinstance(item.get("metadata") or {}, dict):
        raise UserError(f"{where}: field `metadata` is {_kind(item['metadata'])}, not an object")
    if item.get("messages") is not None:
        _check_turns(item["messages"], "messages", where)


def _check_turns(turns: Any, name: str, where: str) -> None:
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: field `{name}` is {_kind(turns)}, not a list of turns")
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise UserError(f"{where}: field `{name}[{k}]` is {_kind(turn)}, not a turn object")
        for key in ("role", "content"):
            if not isinstance(turn.get(key), str):
                raise UserError(f"{where}: field `{name}[{k}].{key}` is missing or not text")


def _check_answer(correction: Any, turns: Any, decision: Any, where: str) -> None:
    """A labeler's answer: a correction is text, corrected turns a list of turns, a
    decision text; anything else is refused, never written into a source as it is."""
    if correction not in (None, "") and not isinstance(correction, str):
        raise UserError(
            f"{where}: field `correction` is {_kind(correction)}; give the right answer as "
            "text, or the turns as `correction_messages`"
        )
    if turns not in (None, ""):
        _check_turns(turns, "correction_messages", where)
    if decision not in (None, "") and not isinstance(decision, str):
        raise UserError(f"{where}: field `decision` is {_kind(decision)}, not text")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )
