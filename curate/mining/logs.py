"""Production logs as rows `curate mine` can judge: one schema whatever shape they came in.

Shapes, detected per row:
- flat rows: `prompt` (text) or `messages` (chat turns; a last assistant turn is the answer
  when there is no `response`), `response` (text, or a list of several answers) or
  `responses`, and signals: `request_id`, `latency_ms`, `user_feedback`, `automated_score`,
  `expected_format`, `finish_reason`, `model` / `adapter`, `timestamp`, `tags`;
- OpenAI chat-completion logs as log proxies export them: `{"input": {request: messages, …},
  "output": {chat.completion: choices[i].message, finish_reason, model, …}, "tags": …}`,
  every choice an answer.
A signal may sit at the top level or in `tags` / `metadata`, as log proxies store them.

A row that cannot be read (not JSON, no prompt, no answer, a signal of the wrong type) is
returned apart with its `path:line`, the field and the raw text, never dropped silently.
Files: JSONL, gzip'd JSONL, Parquet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate.errors import UserError
from curate.rows import MESSAGES

LOG_SCHEMA = pa.schema(
    [
        ("log_id", pa.string()),  # 16 hex digits of the sha256 of the row's text
        ("request_id", pa.string()),
        ("messages", MESSAGES),  # the prompt: every turn before the answer
        ("responses", pa.list_(pa.string())),  # one answer, or several for one prompt
        ("latency_ms", pa.float64()),
        ("feedback", pa.string()),  # thumbs_up | thumbs_down | null
        ("score", pa.float64()),  # automated score in [0, 1]
        ("expected_format", pa.string()),  # "json", or a JSON-schema file name
        ("finish_reason", pa.string()),
        ("model", pa.string()),  # model or adapter version
        ("timestamp", pa.string()),
        ("tags", pa.string()),  # JSON object
        ("origin", pa.string()),  # path:line
    ]
)
BAD_SCHEMA = pa.schema(
    [("origin", pa.string()), ("field", pa.string()), ("error", pa.string()), ("raw", pa.string())]
)
FEEDBACK = {
    "thumbs_up": "thumbs_up",
    "up": "thumbs_up",
    "positive": "thumbs_up",
    "thumbs_down": "thumbs_down",
    "down": "thumbs_down",
    "negative": "thumbs_down",
}
ROLES = ("system", "user", "assistant", "tool")


class LogError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass
class Logs:
    """The rows read (LOG_SCHEMA) and the rows that could not be (BAD_SCHEMA)."""

    rows: pa.Table
    bad: pa.Table


@dataclass(frozen=True)
class LogBlock:
    """A slice of one log file to read on its own: bytes [start, stop) of a JSONL file (or
    of its plain copy) whose first line is `first_line`, or rows [start, stop) of a Parquet
    file."""

    path: str  # the file to read
    shown: str  # the file as origins name it
    kind: str  # jsonl | parquet
    start: int
    stop: int
    first_line: int


def plan_logs(paths: list[Path], scratch: str) -> tuple[list[LogBlock], list[str]]:
    """The blocks of every log file (a compressed one read from a plain copy in `scratch`),
    and each file's sha256."""
    from curate.sources import scan_file

    blocks, shas = [], []
    for path in paths:
        read, kind, sha, _, ranges = scan_file(str(path), scratch)
        if kind not in ("jsonl", "parquet"):
            raise UserError(f"{path}: logs are JSONL (.jsonl, .jsonl.gz) or Parquet")
        shas.append(sha)
        blocks += [LogBlock(read, str(path), kind, a, b, line) for a, b, line in ranges]
    return blocks, shas


def read_logs(paths: list[Path], scratch: str | None = None) -> Logs:
    """Every row of `paths` in file order (one process; `curate mine` reads blocks in
    parallel with `read_block`)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        blocks, _ = plan_logs(paths, scratch or tmp)
        parts = [read_block(b) for b in blocks]
    return Logs(
        pa.concat_tables([p.rows for p in parts]) if parts else LOG_SCHEMA.empty_table(),
        pa.concat_tables([p.bad for p in parts]) if parts else BAD_SCHEMA.empty_table(),
    )


def read_block(block: LogBlock, fast: bool = True) -> Logs:
    """The rows of one block, normalized, and those that could not be. Flat rows are
    decoded all at once (`decode.decode_flat`; `fast=False` reads every row in Python, the
    same rows out), the others one by one."""
    if block.kind == "parquet":
        return _normalized(_parquet_records(block), block.shown)
    with open(block.path, "rb") as fh:
        fh.seek(block.start)
        data = fh.read(block.stop - block.start)
    texts = [raw.decode("utf-8", errors="replace").rstrip("\r") for raw in data.split(b"\n")]
    numbered = [(i, t) for i, t in enumerate(texts, start=block.first_line) if t.strip()]
    if not fast or not numbered:
        return _normalized(_parsed(numbered), block.shown)
    from curate.mining.decode import decode_flat, decode_proxy, eligible, eligible_proxy

    lines = pl.Series([t for _, t in numbered], dtype=pl.String)
    origins = pl.Series([f"{block.shown}:{i}" for i, _ in numbered], dtype=pl.String)
    redo = np.ones(len(numbered), dtype=bool)  # lines read in Python, one by one
    quick = []
    flat = eligible(lines).to_numpy()
    for ok, decode in (
        (flat, decode_flat),
        (eligible_proxy(lines).to_numpy() & ~flat, decode_proxy),
    ):
        decoded = decode(lines.filter(ok), origins.filter(ok)) if ok.any() else None
        if decoded is None:  # a type polars will not coerce: these lines go to Python
            continue
        table, again = decoded
        quick.append(table)
        redo[np.nonzero(ok)[0][~again.to_numpy()]] = False
    rest = _normalized(_parsed([n for n, r in zip(numbered, redo, strict=True) if r]), block.shown)
    rows = pa.concat_tables([*quick, rest.rows])
    line = pl.Series(rows.column("origin")).str.extract(r":(\d+)$").cast(pl.Int64)
    return Logs(rows.take(pa.array(line.arg_sort().to_numpy())), rest.bad)


def _normalized(records: Iterator[tuple[int, str, Any]], shown: str) -> Logs:
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for line, raw, obj in records:
        origin = f"{shown}:{line}"
        try:
            if isinstance(obj, _NotJson):
                raise LogError("", obj.message)
            if not isinstance(obj, dict):
                raise LogError("", f"a log row is a JSON object, not {type(obj).__name__}")
            row = normalize(obj, raw)
            _check_encodable(row)
            good.append({**row, "origin": origin})
        except LogError as exc:
            bad.append({"origin": origin, "field": exc.field, "error": str(exc), "raw": raw})
    return Logs(
        pa.Table.from_pylist(good, schema=LOG_SCHEMA), pa.Table.from_pylist(bad, schema=BAD_SCHEMA)
    )


def _check_encodable(row: dict[str, Any]) -> None:
    """A row whose text cannot be stored as UTF-8 (a lone surrogate such as `\\ud800`
    escaped in its JSON) is one unreadable row, not the end of the run."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
        raise LogError("", f"text holds {bad}, a lone surrogate: not valid Unicode") from None


def _parquet_records(block: LogBlock) -> Iterator[tuple[int, str, Any]]:
    """(record number, its JSON text, the record) per row of a Parquet block."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(block.path)
    groups, at, first = [], 0, None  # the row groups holding rows [start, stop)
    for g in range(file.num_row_groups):
        n = file.metadata.row_group(g).num_rows
        if at < block.stop and at + n > block.start:
            groups.append(g)
            first = at if first is None else first
        at += n
    table = file.read_row_groups(groups).slice(block.start - (first or 0))
    table = table.slice(0, block.stop - block.start)
    for i, row in enumerate(table.to_pylist(), start=block.first_line):
        yield i, json.dumps(row, default=str, ensure_ascii=False), _decoded(row)


def _parsed(numbered: list[tuple[int, str]]) -> Iterator[tuple[int, str, Any]]:
    """(line number, text, parsed value or an error marker) per non-empty line."""
    for i, text in numbered:
        try:
            yield i, text, json.loads(text)
        except json.JSONDecodeError as exc:
            yield i, text, _NotJson(f"not JSON: {exc.msg} at column {exc.colno}")
        except RecursionError:
            yield i, text, _NotJson("JSON nested too deeply to be a log row")


class _NotJson:
    def __init__(self, message: str):
        self.message = message


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    """Parquet logs often keep nested fields as JSON text: decode those that are."""
    out = dict(row)
    for key in ("input", "output", "messages", "tags", "metadata", "responses"):
        value = out.get(key)
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(json.JSONDecodeError):  # text after all: kept as is
                out[key] = json.loads(value)
    return out


def normalize(obj: dict[str, Any], raw: str) -> dict[str, Any]:
    """One log row (`raw`: its text) in LOG_SCHEMA (less `origin`), or a LogError naming
    the field."""
    proxy = isinstance(obj.get("input"), dict) and isinstance(obj.get("output"), dict)
    messages, responses, finish = _openai(obj) if proxy else _flat(obj)
    bags = [obj, *(b for b in (obj.get("tags"), obj.get("metadata")) if isinstance(b, dict))]
    if proxy:
        bags.append(obj["output"])

    def signal(*keys: str) -> Any:
        for bag in bags:
            for key in keys:
                if bag.get(key) is not None:
                    return bag[key]
        return None

    return {
        "log_id": hashlib.sha256(raw.encode()).hexdigest()[:16],
        "request_id": _text(signal("request_id", "id"), "request_id"),
        "messages": messages,
        "responses": responses,
        "latency_ms": _number(signal("latency_ms", "latency"), "latency_ms"),
        "feedback": _feedback(signal("user_feedback", "feedback")),
        "score": _score(signal("automated_score", "score")),
        "expected_format": _text(signal("expected_format"), "expected_format"),
        "finish_reason": finish or _text(signal("finish_reason"), "finish_reason"),
        "model": _text(signal("adapter", "model"), "model"),
        "timestamp": _text(signal("timestamp", "created_at", "created"), "timestamp"),
        "tags": _tags_text(obj),
    }


def _tags_text(obj: dict[str, Any]) -> str | None:
    """A row's tags and metadata, merged (metadata wins), as JSON text with sorted keys."""
    merged: dict[str, Any] = {}
    for key in ("tags", "metadata"):
        if isinstance(obj.get(key), dict):
            merged.update(obj[key])
    return json.dumps(merged, sort_keys=True, ensure_ascii=False, default=str) if merged else None


def _openai(obj: dict[str, Any]) -> tuple[list[dict[str, str]], list[str], str | None]:
    messages = _turns(obj["input"].get("messages"), "input.messages")
    choices = obj["output"].get("choices")
    if not isinstance(choices, list) or not choices:
        raise LogError("output.choices", "output.choices: no choice to read the answer from")
    responses = []
    for i, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if content is not None and not isinstance(content, str):
            raise LogError(f"output.choices[{i}].message.content", "the answer is not text")
        responses.append(content or "")
    first = choices[0] if isinstance(choices[0], dict) else {}
    return messages, responses, _text(first.get("finish_reason"), "finish_reason")


def _flat(obj: dict[str, Any]) -> tuple[list[dict[str, str]], list[str], None]:
    if obj.get("messages") is not None:
        messages = _turns(obj["messages"], "messages")
    elif isinstance(obj.get("prompt"), str):
        messages = [{"role": "user", "content": obj["prompt"]}]
    else:
        raise LogError("prompt", "no prompt: neither `messages` nor `prompt` (nor `input`)")
    answer = obj.get("responses", obj.get("response", obj.get("completion")))
    if answer is None and messages and messages[-1]["role"] == "assistant":
        answer, messages = messages[-1]["content"], messages[:-1]
    if isinstance(answer, str):
        return messages, [answer], None
    if isinstance(answer, list) and answer and all(isinstance(a, str) for a in answer):
        return messages, answer, None
    raise LogError("response", "no answer: `response` is missing or not text (or a list of texts)")


def _turns(value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise LogError(field, f"{field}: a non-empty list of turns is expected")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES:
            raise LogError(f"{field}[{i}].role", f"{field}[{i}]: a turn needs a role in {ROLES}")
        content = turn.get("content")
        if isinstance(content, list):  # content parts: their text, in order
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content is not None and not isinstance(content, str):
            raise LogError(f"{field}[{i}].content", f"{field}[{i}].content is not text")
        turns.append({"role": turn["role"], "content": content or ""})
    return turns


def _text(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise LogError(field, f"{field}: text expected, not {type(value).__name__}")


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise LogError(field, f"{field}: a number expected, not {type(value).__name__}")
    try:
        return float(value)
    except ValueError:
        raise LogError(field, f"{field}: {value!r} is not a number") from None


def _score(value: Any) -> float | None:
    score = _number(value, "automated_score")
    if score is not None and not 0 <= score <= 1:
        raise LogError("automated_score", f"automated_score: {score} is outside [0, 1]")
    return score


def _feedback(value: Any) -> str | None:
    if value is None:
        return None
    found = FEEDBACK.get(str(value).strip().lower()) if isinstance(value, str) else None
    if found is None:
        raise LogError(
            "user_feedback", f"user_feedback: {value!r} is not thumbs_up, thumbs_down or null"
        )
    return found
