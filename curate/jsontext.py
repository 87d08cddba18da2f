"""Untrusted JSON text, taken apart safely: depth bounds, lists record by record, text checks.

Readers hand every line or record of a user's file to a parser. Three things in such text
crash parsers rather than fail cleanly, and are answered here before any parser sees them:
nesting thousands of levels deep (Arrow's reader segfaults, Python's recursion runs out),
lone surrogates (`"\\ud800"` parses, then cannot be encoded as UTF-8 anywhere), and bytes
where text belongs (a Parquet binary column). A JSON list file is split record by record
when it cannot be parsed whole, so one bad record costs one row, not the file.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np

MAX_DEPTH = 64  # real chat data nests 3-6 levels; deeper is an attack or a bug
# a JSON string, or one of the characters that structure JSON
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]')
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_CHUNK = 1 << 22
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def too_deep_lines(data: bytes, starts: np.ndarray, ends: np.ndarray) -> bool:
    """Whether any line [start, end) of `data` nests deeper than MAX_DEPTH.

    A line can only be that deep if it opens more than MAX_DEPTH brackets; those lines
    (rare: long code in strings, or an attack) are measured exactly. Bracket positions are
    found in fixed chunks with reused buffers: a whole-block temporary would cost more in
    fresh memory than the scan itself.
    """
    if not len(starts):
        return False
    buf = np.frombuffer(data, dtype=np.uint8)
    found = []
    square = np.empty(min(len(buf), _CHUNK), dtype=bool)
    curly = np.empty_like(square)
    for offset in range(0, len(buf), _CHUNK):
        part = buf[offset : offset + _CHUNK]
        a, b = square[: len(part)], curly[: len(part)]
        np.equal(part, 91, out=a)  # [
        np.equal(part, 123, out=b)  # {
        np.logical_or(a, b, out=b)
        found.append(np.flatnonzero(b) + offset)
    opens = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    if len(opens) <= MAX_DEPTH:
        return False
    per_line = np.bincount(np.searchsorted(starts, opens, side="right") - 1, minlength=len(starts))
    return any(
        json_depth(data[starts[i] : ends[i]].decode("utf-8", "surrogateescape")) > MAX_DEPTH
        for i in np.flatnonzero(per_line > MAX_DEPTH).tolist()
    )


def json_depth(text: str) -> int:
    """How deep the JSON text nests (brackets inside strings do not count)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0 if "[" not in text and "{" not in text else 1  # cheap: cannot be too deep
    skeleton = _STRINGS.sub("", text).encode("utf-8", "surrogateescape")
    depth = np.cumsum(_OPEN[np.frombuffer(skeleton, dtype=np.uint8)], dtype=np.int64)
    return int(depth.max()) if len(depth) else 0


def loads(text: str) -> Any:
    """`json.loads`, refusing text that nests deeper than MAX_DEPTH (ValueError)."""
    if json_depth(text) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return json.loads(text)


class Broken:
    """A record of a JSON list that could not be taken: why, and its text (cut at 1,000
    characters) for the ledger."""

    def __init__(self, error: str, text: str):
        self.error, self.text = error, text[:1000]


def list_records(text: str) -> list[tuple[int, Any]] | None:
    """The records of a JSON list, as (record number, value or `Broken`).

    Parsed whole when it can be; otherwise record by record, so that a record that is
    broken, too deep or not valid text is one error and its neighbours are kept. A list
    wrapped in a one-key object (`{"data": [...]}`) is unwrapped. None when the text is not
    a JSON list at all.
    """
    try:
        data = loads(text)
    except (ValueError, RecursionError):
        return _split_records(text)
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        return None
    return [(i + 1, obj) for i, obj in enumerate(data)]


def _split_records(text: str) -> list[tuple[int, Any]] | None:
    pos = _skip_space(text, 0)
    if text.startswith("{", pos):  # {"data": [...]}: find the list after the one key
        m = re.compile(r'\{\s*"(?:[^"\\]|\\.)*"\s*:\s*\[').match(text, pos)
        if m is None:
            return None
        pos = m.end()
    elif text.startswith("[", pos):
        pos += 1
    else:
        return None
    records: list[tuple[int, Any]] = []
    while True:
        pos = _skip_space(text, pos)
        if pos >= len(text) or text[pos] == "]":
            return records
        end, depth = _value_end(text, pos)
        number = len(records) + 1
        if end is None:  # the rest cannot be cut into records
            records.append((number, Broken(f"broken JSON from record {number} on", text[pos:])))
            return records
        chunk = text[pos:end]
        if depth > MAX_DEPTH:
            records.append((number, Broken(f"nested deeper than {MAX_DEPTH} levels", chunk)))
        else:
            try:
                records.append((number, json.loads(chunk)))
            except ValueError as exc:
                records.append((number, Broken(f"broken JSON: {exc}", chunk)))
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == ",":
            pos += 1


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _value_end(text: str, pos: int) -> tuple[int | None, int]:
    """Where the JSON value starting at `pos` ends, and how deep it nests."""
    depth = deepest = 0
    for m in _TOKENS.finditer(text, pos):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            if depth == 0:  # the list's own end: a scalar record ends before it
                return m.start(), deepest
            depth -= 1
            if depth == 0:
                return m.end(), deepest
        elif c == "," and depth == 0:
            return m.start(), deepest
    return None, deepest


_SURROGATE = re.compile("[\ud800-\udfff]|\\\\[uU][dD][89a-fA-F]")
_SURROGATE_BYTES = re.compile(rb"\\[uU][dD][89a-fA-F]")


def may_hold_surrogates(text: str | bytes) -> bool:
    """Whether JSON text can decode to a lone surrogate (an escape `\\udXXX`, or one that
    stands for an undecodable byte): one search, so that records are checked one by one
    (`invalid_text_field`) only where it can."""
    pattern = _SURROGATE_BYTES if isinstance(text, bytes) else _SURROGATE
    return pattern.search(text) is not None  # type: ignore[arg-type]


def invalid_text_field(value: Any, path: str = "") -> str | None:
    """The first field whose text cannot be encoded as UTF-8 (a lone surrogate, or a byte
    that was not UTF-8), or None. Cheap when there is none: one encode of the whole value."""
    try:
        json.dumps(value, ensure_ascii=False, default=plain).encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    if isinstance(value, str):
        return path or "(value)"
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if invalid_text_field(k) is not None:
                return where
            if (found := invalid_text_field(v, where)) is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            if found := invalid_text_field(v, f"{path}[{i}]"):
                return found
    return None


def plain(value: Any) -> Any:
    """`default=` for json.dumps: bytes as text when they are UTF-8, else `base64:…`."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(data).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")


def text_of_bytes(value: Any) -> Any:
    """A value read from a columnar file with its UTF-8 bytes taken as text (recursively);
    bytes that are not UTF-8 stay bytes, for the schema check to reject."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, dict):
        return {k: text_of_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [text_of_bytes(v) for v in value]
    return value
