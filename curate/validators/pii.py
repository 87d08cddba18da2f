"""PII and secrets: emails, phone numbers, credit cards (Luhn), IBANs (mod 97), API keys and
tokens, private keys — redacted with typed placeholders (`[EMAIL]`, ...) or rejected (`pii`).

A vectorized RE2 pre-filter over every message finds the few contents that may hold one;
only those are scanned with the exact patterns and checksums in Python. In both modes the
row's content is rewritten, so neither the output nor the ledger keeps the secret: the
ledger's evidence is the types and counts found. That covers every text curate stores or
prints of a row: its turns and text, the extra fields kept in `meta`, and for rows rejected
while reading (malformed, invalid schema, empty), their raw line and the evidence in
`detail` (`scrub_rejected`).
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.rows import MESSAGES, list_offsets
from curate.steps import ReportView, RowStep, Verdicts

# (type, exact pattern, RE2 pre-filter that matches whenever the exact one can)
PATTERNS: list[tuple[str, str, str]] = [
    (
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
        r"PRIVATE KEY-----",
    ),
    (
        "api_key",
        r"\b(?:AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}"
        r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|sk_live_[0-9A-Za-z]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
        r"|AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
        r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]{20,}=*",
        r"AKIA|gh[pousr]_|github_pat_|sk-|sk_live_|xox[abprs]-|AIza|eyJ|(?i)bearer",
    ),
    ("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", r"@"),
    ("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", r"[A-Z]{2}\d{2}"),
    ("credit_card", r"(?<![\d.])(?:\d[ -]?){12,18}\d(?!\d|\.\d)", r"\d[ -]?\d[ -]?\d[ -]?\d"),
    (
        "phone",
        r"(?<![\w.+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?!\w|\.\d)",
        r"\d[ .-]\d|\)\s?\d",
    ),
]
PLACEHOLDER = {t: f"[{t.upper()}]" for t, _, _ in PATTERNS}
_EXACT = [(t, re.compile(p)) for t, p, _ in PATTERNS]
_PREFILTER = "|".join(f"(?:{f})" for _, _, f in PATTERNS)


def is_luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_iban(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _accept(kind: str, match: str) -> bool:
    if kind == "credit_card":
        digits = re.sub(r"\D", "", match)
        return 13 <= len(digits) <= 19 and is_luhn(digits)
    if kind == "iban":
        return is_iban(match)
    if kind == "phone":  # digits with spaces only are as likely a list of numbers
        digits = re.sub(r"\D", "", match)
        return 9 <= len(digits) <= 15 and any(c in match for c in "+()-.")
    return True


_NUMERIC = ("credit_card", "phone")
_OPERATORS = set("=+-*/×÷<>")


def _in_arithmetic(m: re.Match[str]) -> bool:
    """`1000-200-400 = 400`: digits and dashes inside a calculation, not a phone or card."""
    text = m.string
    after = text[m.end() : m.end() + 4].lstrip()
    before = text[max(0, m.start() - 4) : m.start()].rstrip()
    return bool(after and after[0] in _OPERATORS) or bool(before and before[-1] in _OPERATORS)


def redact(text: str) -> tuple[str, dict[str, int]]:
    """`text` with every PII/secret replaced by its placeholder, and the counts by type."""
    found: dict[str, int] = {}
    for kind, pattern in _EXACT:

        def sub(m: re.Match[str], kind: str = kind) -> str:
            if not _accept(kind, m.group(0)) or (kind in _NUMERIC and _in_arithmetic(m)):
                return m.group(0)
            found[kind] = found.get(kind, 0) + 1
            return PLACEHOLDER[kind]

        text = pattern.sub(sub, text)
    return text, found


def _redact_value(value: Any, found: dict[str, int]) -> Any:
    """A JSON value with every string (and number that reads as PII) redacted."""
    if isinstance(value, str):
        text, counts = redact(value)
        _merge(found, counts)
        return text
    if isinstance(value, list):
        return [_redact_value(v, found) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v, found) for k, v in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        text, counts = redact(str(value))
        if counts:  # a card or phone number stored as a number
            _merge(found, counts)
            return text
    return value


def _redact_strings(values: pa.Array, as_json: bool, compact: bool) -> tuple[pa.Array, dict]:
    """Redact a string column: as text, or (`as_json`) the strings inside each JSON value,
    re-serialized the way curate wrote it (`compact`: meta's separators, else detail's)."""
    found: dict[int, dict[str, int]] = {}
    if values.null_count == len(values):
        return values, found
    hit = pc.fill_null(pc.match_substring_regex(values, _PREFILTER), False)
    rows = np.nonzero(hit.to_numpy(zero_copy_only=False))[0]
    if not len(rows):
        return values, found
    new = values.to_pylist()
    for row in rows.tolist():
        counts: dict[str, int] = {}
        if as_json:
            try:
                obj = _redact_value(json.loads(new[row]), counts)
            except ValueError:  # not JSON after all: redact it as text
                obj, counts = None, {}
            if counts:
                seps = (",", ":") if compact else (", ", ": ")
                new[row] = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=seps)
            elif obj is None:
                new[row], counts = redact(new[row])
        else:
            new[row], counts = redact(new[row])
        if counts:
            _add(found, row, counts)
    return pa.array(new, pa.string()), found


def redact_texts(values: pa.Array, as_json: bool = False) -> tuple[pa.Array, dict]:
    """A string column with every secret replaced (`as_json`: the strings inside each JSON
    value); per row, what was found by type."""
    return _redact_strings(values, as_json=as_json, compact=True)


class PiiStep(RowStep):
    name = "pii"
    stage = "pii"
    version = "2"
    index_columns: ClassVar[tuple[str, ...]] = ("pii_types",)
    index_only: ClassVar[tuple[str, ...]] = ("pii_types",)
    scrubs_rejected: ClassVar[bool] = True

    def __init__(self, mode: str):
        self.mode = mode  # redact | reject

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "types": [t for t, _, _ in PATTERNS]}

    def __call__(self, batch: pa.Table) -> Verdicts:
        n = batch.num_rows
        columns, found = _redact_payload(batch)
        types = [",".join(sorted(found[r])) if r in found else None for r in range(n)]
        columns["pii_types"] = pa.array(types, pa.string())
        table = pa.table(columns)
        if self.mode != "reject" or not found:
            return Verdicts.keep_all(n).with_columns(table)
        hit_rows = sorted(found)
        details = [{"types": found[r], "redacted": True} for r in hit_rows]
        return Verdicts.reject(n, np.asarray(hit_rows), "pii", details).with_columns(table)

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        """Per source, over every row read (kept or not): rows with PII, by type."""
        import polars as pl

        if "pii_types" not in view.index.columns:
            return {}
        out = {}
        for rank, name in enumerate(view.sources):
            found = view.index.filter(
                (pl.col("source_rank") == rank) & pl.col("pii_types").is_not_null()
            )["pii_types"]
            by_type: dict[str, int] = {}
            for types in found.to_list():
                for t in types.split(","):
                    by_type[t] = by_type.get(t, 0) + 1
            out[name] = {"pii": {"rows": found.len(), "by_type": dict(sorted(by_type.items()))}}
        return {"validation": out}

    def scrub_rejected(self, batch: pa.Table) -> pa.Table:
        """Rows rejected before this step (while reading) keep their payload, raw text,
        meta and evidence in the ledger: all redacted here, in both modes."""
        columns, _ = _redact_payload(batch)
        columns["raw"], _ = _redact_strings(batch.column("raw").combine_chunks(), False, False)
        columns["detail"], _ = _redact_strings(batch.column("detail").combine_chunks(), True, False)
        return pa.table(columns)


def _redact_payload(batch: pa.Table) -> tuple[dict[str, pa.Array], dict[int, dict[str, int]]]:
    """The row's turns, text and meta with every secret replaced; what was found per row."""
    found: dict[int, dict[str, int]] = {}
    columns: dict[str, pa.Array] = {}
    for name in ("messages", "chosen", "rejected"):
        col = batch.column(name).combine_chunks()
        if col.null_count == len(col):
            columns[name] = col
            continue
        items = col.flatten()
        contents = pc.fill_null(items.field("content"), "")
        hit = np.nonzero(
            pc.match_substring_regex(contents, _PREFILTER).to_numpy(zero_copy_only=False)
        )[0]
        new = contents.to_pylist() if len(hit) else None
        offsets = list_offsets(col)
        for item in hit.tolist():
            text, counts = redact(new[item])  # type: ignore[index]
            if counts:
                new[item] = text  # type: ignore[index]
                _add(found, int(np.searchsorted(offsets, item, side="right") - 1), counts)
        if new is None:
            columns[name] = col
            continue
        struct = pa.StructArray.from_arrays(
            [items.field("role"), pa.array(new, pa.string())], names=["role", "content"]
        )
        columns[name] = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()), struct, type=MESSAGES, mask=col.is_null()
        )
    for name, as_json in (("text", False), ("meta", True)):
        columns[name], in_column = _redact_strings(
            batch.column(name).combine_chunks(), as_json=as_json, compact=True
        )
        for row, counts in in_column.items():
            _add(found, row, counts)
    return columns, found


def _merge(into: dict[str, int], counts: dict[str, int]) -> None:
    for kind, n in counts.items():
        into[kind] = into.get(kind, 0) + n


def _add(found: dict[int, dict[str, int]], row: int, counts: dict[str, int]) -> None:
    _merge(found.setdefault(row, {}), counts)
