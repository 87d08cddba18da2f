"""The step interface every stage of a build implements, on any engine.

A step is a small class with a `name`, the ledger `stage` it reports under, its `params`
and a `fingerprint()` (params + code version: the cache key and what the manifest records).
It is either
- a `RowStep`: `__call__(batch) -> Verdicts`, run batch by batch in parallel; or
- a `GlobalStep`: `keys(batch) -> pa.Table` in parallel (hashes, signatures, embeddings),
  then `resolve(keys) -> Verdicts` once over the keys of every row still alive.
Engines own batching, parallelism, counting and the ledger sink; a step only says keep or
reject, with a reason from the ledger vocabulary and its evidence.

A step declares the columns it adds to the build's index (`index_columns`: small per-row
values later stages and the manifest read) and contributes its own sections to the manifest
(`manifest_report`), so the build core knows no step's columns by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import polars as pl

REASONS = (
    "malformed",
    "invalid_schema",
    "no_user_turn",
    "role_marker_in_answer",
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
    "degenerate",
    "override_reject",
    "not_sampled",
)


def repeat_string(value: str, n: int) -> pa.Array:
    """`value` n times, from buffers: pyarrow's scalar and repeat import pandas on first
    use (0.2 s, most of what a rebuild with nothing to do would spend)."""
    data = value.encode()
    offsets = np.arange(n + 1, dtype=np.int64) * len(data)
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data * n)
    ).cast(pa.string())


@dataclass(frozen=True)
class Verdicts:
    """The rejections a step made in a batch of `n` rows (every other row is kept).

    Sparse on purpose: most rows pass most steps, so only rejected rows carry a reason and
    their evidence (a JSON object as text).
    """

    n: int
    rows: np.ndarray  # indices of the rejected rows, ascending
    reason: pa.Array  # string, one per rejected row
    detail: pa.Array  # string (JSON), one per rejected row
    # Per row of the batch (n rows): columns the step adds to the rows (token ids, counts;
    # null where it has none) or rewrites (e.g. redacted `messages`, given for every row).
    columns: pa.Table | None = None

    def with_columns(self, columns: pa.Table) -> Verdicts:
        return dataclasses.replace(self, columns=columns)

    @classmethod
    def keep_all(cls, n: int) -> Verdicts:
        return cls(
            n, np.empty(0, dtype=np.int64), pa.array([], pa.string()), pa.array([], pa.string())
        )

    @classmethod
    def reject(
        cls, n: int, rows: np.ndarray, reason: str, details: list[dict[str, Any]] | pa.Array
    ) -> Verdicts:
        """Reject `rows` of `n` with one reason; `details` are dicts or JSON strings, one per row."""
        rows = np.asarray(rows, dtype=np.int64)
        if not isinstance(details, pa.Array):
            encoded: dict[int, str] = {}  # details are often one shared object per group
            details = pa.array(
                [
                    encoded.get(id(d))
                    or encoded.setdefault(id(d), json.dumps(d, ensure_ascii=False, sort_keys=True))
                    for d in details
                ],
                pa.string(),
            )
        reasons = repeat_string(reason, len(rows))
        if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):
            order = np.argsort(rows, kind="stable")
            rows, details = rows[order], details.take(pa.array(order))
        return cls(n, rows, reasons, details)

    @property
    def kept(self) -> np.ndarray:
        mask = np.ones(self.n, dtype=bool)
        mask[self.rows] = False
        return mask

    def __len__(self) -> int:
        return self.n


@dataclass(frozen=True)
class ReportView:
    """What a step reads to write its part of the manifest: the build's index (one row per
    input row, in canonical order, with `copies` > 0 for rows in the output), the source
    names by rank, and the block files (the latest of each block) for row text."""

    index: pl.DataFrame
    sources: list[str]
    blocks: list[str]

    @property
    def kept(self) -> pl.DataFrame:
        import polars as pl

        return self.index.filter(pl.col("copies") > 0)


class Step:
    name: ClassVar[str]
    stage: ClassVar[str]
    version: ClassVar[str] = "1"
    # Columns the step adds to the build's index, which live on after it ran (a global step
    # gives them in its verdicts' `columns`, one value per alive row).
    index_columns: ClassVar[tuple[str, ...]] = ()

    def params(self) -> dict[str, Any]:
        return {}

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        """Sections this step adds to the manifest, e.g. {"validation": {source: {...}}}:
        merged key by key with the other steps' sections."""
        return {}

    def fingerprint(self) -> str:
        blob = json.dumps(
            {"step": self.name, "version": self.version, "params": self.params()}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()


class RowStep(Step, ABC):
    # `index_columns`: of the columns the step returns, the small ones the build's index
    # keeps (token counts: mixing and the manifest read them); the others stay with the rows.
    # Of those, the ones only the index needs (statistics): they are not added to the rows.
    index_only: ClassVar[tuple[str, ...]] = ()

    # True for a step that also rewrites what rows rejected before it keep in the ledger
    # (their `raw`, `meta` and `detail`): redaction must reach rows that failed to read.
    scrubs_rejected: ClassVar[bool] = False

    @abstractmethod
    def __call__(self, batch: pa.Table) -> Verdicts:
        """Keep or reject each row of `batch` (rows still alive, in BUILD_SCHEMA)."""

    def scrub_rejected(self, batch: pa.Table) -> pa.Table:
        """For `scrubs_rejected` steps: new `raw`, `meta` and `detail` for `batch`, rows
        that were rejected before this step."""
        raise TypeError(f"step {self.name} does not scrub rejected rows")


class IndexStage(Step, ABC):
    """A stage that decides over the whole index once the row and global steps ran:
    reviewer overrides, the mixture, the split. It reads and returns the index (one row per
    input row); rows it rejects get its `stage` and a reason, like a step's."""

    def meta_fields(self) -> dict[str, str]:
        """{index column: meta field} to read into the index while blocks are read."""
        return {}

    @abstractmethod
    def run(self, index: pl.DataFrame) -> pl.DataFrame:
        """The index with this stage's verdicts and columns."""


def whole(column: pa.ChunkedArray) -> pa.Array:
    """A key column as one array, without a copy where it is one chunk already (as
    `runner._resolve` hands them): `combine_chunks` copies even a single chunk."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


class GlobalStep(Step, ABC):
    # Rows per parallel task for `keys` when they are costly per row (embeddings): the
    # engine then runs the step in a pass of its own, each block cut into tasks this size,
    # so that every core has work even when the input is one block. None: a block is a task.
    task_rows: ClassVar[int | None] = None
    # Key columns a distributed engine leaves where they were made (a file per block) for
    # `resolve_spread`, which runs the resolution in parts on the engine; () for steps whose
    # `resolve` takes every key on the driver.
    spread_keys: ClassVar[tuple[str, ...]] = ()
    # A key column (unsigned integers, a hash) by which the spread keys are grouped into
    # parts, so that rows with equal keys meet in one task; None: each task reads columns.
    partition_by: ClassVar[str | None] = None

    @abstractmethod
    def keys(self, batch: pa.Table) -> pa.Table:
        """Per row of `batch` (rows still alive), the columns `resolve` needs."""

    @abstractmethod
    def resolve(self, keys: pa.Table) -> Verdicts:
        """Over all alive rows in canonical order (source order, then input order).

        `keys` holds the columns returned by `keys()` plus `id`, `source` and `source_rank`.
        """

    def resolve_spread(self, engine: Any, keys: pa.Table, parts: Any) -> Verdicts:
        """`resolve`, where the `spread_keys` columns are not in `keys` but in `parts`
        (`dedup.bands.KeyParts`), and the work runs as tasks on `engine`."""
        raise NotImplementedError(f"{self.name} resolves on the driver only")
