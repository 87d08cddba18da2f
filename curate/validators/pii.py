"""PII and secrets — emails, phone numbers, payment cards, IBANs, IP addresses, US SSNs
(`personal`), private keys, vendors' tokens (gitleaks' rules), JWTs, assigned passwords and
high-entropy strings (`secrets`) — redacted with typed placeholders (`[EMAIL]`, ...) or
rejected (`pii`).

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
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.rows import MESSAGES, list_offsets
from curate.steps import ReportView, RowStep, Verdicts
from curate.validators import personal, secrets
from curate.validators.personal import is_iban, is_luhn

__all__ = ["KINDS", "PLACEHOLDER", "PiiStep", "find_all", "is_iban", "is_luhn", "redact"]

# what each kind is replaced by, and which of two overlapping finds is kept (first listed)
KINDS = (
    "private_key", "api_key", "secret", "email", "iban", "credit_card", "ssn", "ip_address",
    "phone",
)  # fmt: skip
PLACEHOLDER = {k: f"[{k.upper()}]" for k in KINDS}
_RANK = {k: i for i, k in enumerate(KINDS)}
RULES_VERSION = "gitleaks b58d3f10, curate 3"  # in the step's fingerprint: a new rule set reruns


def candidates(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Which texts of a string column personal data, and which secrets, can be found in:
    a few vectorized RE2 passes (`personal.PREFILTER`, `secrets.prefilters()`); only those
    texts reach Python, and only for what they may hold."""

    seen: dict[str, np.ndarray] = {}

    def match(pattern: str) -> np.ndarray:
        if pattern not in seen:  # a part two passes share is matched once
            found = pc.match_substring_regex(values, pattern)
            seen[pattern] = pc.fill_null(found, False).to_numpy(zero_copy_only=False)
        return seen[pattern].copy()

    def all_of(first: str, *rest: str) -> np.ndarray:
        both = match(first)
        for part in rest:  # matched only over the texts the parts before let through
            where = np.flatnonzero(both)
            found = pc.match_substring_regex(values.take(pa.array(where)), part)
            both[where] = pc.fill_null(found, False).to_numpy(zero_copy_only=False)
        return both

    personal_hit = all_of(personal.STAGE, personal.PREFILTER)
    secret_hit = np.zeros(len(values), dtype=bool)
    for parts in secrets.prefilters():
        secret_hit |= all_of(*parts)
    return personal_hit, secret_hit


def find_all(
    text: str, opened: Any = None, personal_data: bool = True, secret: bool = True
) -> list[tuple[str, int, int]]:
    """Every secret and personal datum in `text` as (kind, start, end), in order; where
    finds overlap, the one of the kind listed first in KINDS (then the longer) is kept.
    `opened`: the gitleaks gates the text opens, when matched in bulk (`redact_many`);
    `personal_data` / `secret`: False where a pre-filter ruled that kind out."""
    found = [
        *(secrets.find(text, opened) if secret else ()),
        *(personal.find(text) if personal_data else ()),
    ]
    found.sort(key=lambda f: (_RANK[f[0]], f[1] - f[2], f[1]))
    kept: list[tuple[str, int, int]] = []
    for kind, start, end in found:
        if end > start and all(end <= s or start >= e for _, s, e in kept):
            kept.append((kind, start, end))
    return sorted(kept, key=lambda f: f[1])


def redact(text: str, opened: Any = None, **only: bool) -> tuple[str, dict[str, int]]:
    """`text` with every PII/secret replaced by its placeholder, and the counts by type
    (`opened`, `only`: as `find_all`'s)."""
    found: dict[str, int] = {}
    parts, last = [], 0
    for kind, start, end in find_all(text, opened, **only):
        parts += [text[last:start], PLACEHOLDER[kind]]
        last = end
        found[kind] = found.get(kind, 0) + 1
    return ("".join(parts) + text[last:], found) if found else (text, found)


def redact_many(
    texts: pa.Array, personal_hit: np.ndarray, secret_hit: np.ndarray
) -> list[tuple[str, dict[str, int]]]:
    """`redact` over a string array (each text with its pre-filters' verdicts), gitleaks'
    gates matched over the texts that may hold a secret at once."""
    asked = np.flatnonzero(secret_hit)
    gates = secrets.gate_hits(texts.take(pa.array(asked)))
    opened: dict[int, list[int]] = {
        int(i): np.flatnonzero(gates[:, k]).tolist() for k, i in enumerate(asked)
    }
    return [
        redact(t, opened.get(i), personal_data=bool(personal_hit[i]), secret=bool(secret_hit[i]))
        for i, t in enumerate(texts.to_pylist())
    ]


def _redact_column(values: pa.Array) -> tuple[pa.Array, dict[int, dict[str, int]]]:
    """A string array with every secret replaced, and per index what was found: only the
    pre-filters' candidates leave Arrow, only the changed texts come back."""
    found: dict[int, dict[str, int]] = {}
    personal_hit, secret_hit = candidates(values)
    rows = np.flatnonzero(personal_hit | secret_hit)
    if not len(rows):
        return values, found
    done = redact_many(values.take(pa.array(rows)), personal_hit[rows], secret_hit[rows])
    changed = np.zeros(len(values), dtype=bool)
    replaced = []
    for row, (text, kinds) in zip(rows.tolist(), done, strict=True):
        if kinds:
            found[row] = kinds
            changed[row] = True
            replaced.append(text)
    if not replaced:
        return values, found
    return pc.replace_with_mask(values, pa.array(changed), pa.array(replaced, pa.string())), found


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
    if not as_json:
        return _redact_column(values)
    personal_hit, secret_hit = candidates(values)
    rows = np.flatnonzero(personal_hit | secret_hit)
    if not len(rows):
        return values, found
    new = values.to_pylist()
    for row in rows.tolist():
        counts: dict[str, int] = {}
        try:
            obj = _redact_value(json.loads(new[row]), counts)
        except (ValueError, RecursionError):  # not JSON after all: redact it as text
            obj, counts = None, {}
        if counts:
            seps = (",", ":") if compact else (", ", ": ")
            new[row] = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=seps)
        elif obj is None:
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
    version = "3"
    index_columns: ClassVar[tuple[str, ...]] = ("pii_types",)
    index_only: ClassVar[tuple[str, ...]] = ("pii_types",)
    scrubs_rejected: ClassVar[bool] = True

    def __init__(self, mode: str):
        self.mode = mode  # redact | reject

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "types": list(KINDS), "rules": RULES_VERSION}

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
        contents, per_item = _redact_column(items.field("content"))
        if not per_item:
            columns[name] = col
            continue
        offsets = list_offsets(col)
        for item, counts in per_item.items():
            _add(found, int(np.searchsorted(offsets, item, side="right") - 1), counts)
        struct = pa.StructArray.from_arrays(
            [items.field("role"), contents], names=["role", "content"]
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
