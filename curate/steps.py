"""The step interface every stage of a build implements, on any engine.

A step is a small class with a `name`, the ledger `stage` it reports under, its `params`
and a `fingerprint()` (params + code version: the cache key and what the manifest records).
It is either
- a `RowStep`: `__call__(batch) -> Verdicts`, run batch by batch in parallel; or
- a `GlobalStep`: `keys(batch) -> pa.Table` in parallel (hashes, signatures, embeddings),
  then `resolve(keys) -> Verdicts` once over the keys of every row still alive.
Engines own batching, parallelism, counting and the ledger sink; a step only says keep or
reject, with a reason from the ledger vocabulary and its evidence.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REASONS = (
    "malformed",
    "invalid_schema",
    "empty_response",
    "language",
    "pii",
    "exact_duplicate",
    "near_duplicate",
    "semantic_duplicate",
    "contaminated",
    "template_error",
    "missing_eos",
    "special_token_injection",
    "too_long",
    "label_leakage",
    "invalid_format",
    "override_reject",
    "not_sampled",
)


@dataclass(frozen=True)
class Verdicts:
    """Per row: kept (reason null) or rejected with a reason and JSON evidence."""

    reason: pa.Array  # string, null where kept
    detail: pa.Array  # string (JSON), null where kept

    @classmethod
    def keep_all(cls, n: int) -> Verdicts:
        return cls(pa.nulls(n, pa.string()), pa.nulls(n, pa.string()))

    @classmethod
    def reject(cls, n: int, rows: np.ndarray, reason: str, details: list[dict[str, Any]]) -> Verdicts:
        """Reject `rows` (indices) of `n` with one reason and a detail object each."""
        reasons = np.full(n, None, dtype=object)
        texts = np.full(n, None, dtype=object)
        reasons[rows] = reason
        texts[rows] = [json.dumps(d, ensure_ascii=False, sort_keys=True) for d in details]
        return cls(pa.array(reasons.tolist(), pa.string()), pa.array(texts.tolist(), pa.string()))

    @property
    def kept(self) -> np.ndarray:
        return pc.is_null(self.reason).to_numpy(zero_copy_only=False)

    def __len__(self) -> int:
        return len(self.reason)


class Step:
    name: ClassVar[str]
    stage: ClassVar[str]
    version: ClassVar[str] = "1"

    def params(self) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> str:
        blob = json.dumps({"step": self.name, "version": self.version, "params": self.params()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


class RowStep(Step):
    def __call__(self, batch: pa.Table) -> Verdicts:
        raise NotImplementedError


class GlobalStep(Step):
    def keys(self, batch: pa.Table) -> pa.Table:
        """Per row of `batch` (rows still alive), the columns `resolve` needs."""
        raise NotImplementedError

    def resolve(self, keys: pa.Table) -> Verdicts:
        """Over all alive rows in canonical order (source order, then input order).

        `keys` holds the columns returned by `keys()` plus `id`, `source` and `source_rank`.
        """
        raise NotImplementedError
