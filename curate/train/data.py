"""Training data from a manifest: the stored token ids and trained spans, packed.

Nothing is re-rendered or re-tokenized: each row's `input_ids` and `mask_spans` are the ones
the build validated. Labels are the token ids inside the trained spans and -100 elsewhere.

Packing is best-fit decreasing over the whole split: examples sorted by length (longest
first, then input order), each put in the fullest bin it still fits in (a segment tree over
the bins' free space finds it in O(log bins)). A pack is one row, padding-free: its
examples' tokens back to back, position ids restarting at 0 for each example. transformers
reads restarting position ids (with no attention mask) as packed sequences and masks
attention across examples, for every attention implementation; the first label of each
example is -100, so no example predicts the next one's first token. A packed batch then
gives every example exactly the loss it has alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.tokens import IGNORE, flat_spans, labels_from_spans

__all__ = ["IGNORE", "Examples", "build_packs", "collate", "pack_bfd", "read_examples"]


@dataclass
class Examples:
    """Token ids and labels of a split's rows, flattened (row i is [offsets[i], offsets[i+1]))."""

    ids: np.ndarray  # int64
    labels: np.ndarray  # int64, IGNORE outside the trained spans
    offsets: np.ndarray  # int64, rows + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.ids[a:b], self.labels[a:b]

    def subset(self, rows: np.ndarray) -> Examples:
        """The rows `rows`, in that order (one gather, no loop per row)."""
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        at = np.repeat(self.offsets[:-1][rows] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Examples(self.ids[at], self.labels[at], offsets)


def read_examples(shards: list[Path]) -> Examples:
    """Examples from a split's Parquet shards (columns input_ids and mask_spans)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, columns=["input_ids", "mask_spans"]) for p in shards]
    if not tables:
        z = np.zeros(0, dtype=np.int64)
        return Examples(z, z, np.zeros(1, dtype=np.int64))
    table = pa.concat_tables(tables)
    ids_col = table.column("input_ids").combine_chunks()
    if ids_col.null_count:
        from curate.errors import UserError

        raise UserError("rows without input_ids: the manifest was built without a [tokenizer]")
    ids, offsets, span_rows, starts, ends = flat_spans(
        ids_col, table.column("mask_spans").combine_chunks()
    )
    return Examples(ids, labels_from_spans(ids, offsets, span_rows, starts, ends), offsets)


def pack_bfd(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices of the examples in each pack, every pack ≤ capacity.

    Examples are placed longest first (ties: input order); each goes to the bin whose free
    space is the smallest that still holds it, else opens a bin. Bins are kept in buckets by
    free space, and the free-space values in use in a sorted list, so a placement is one
    binary search. Deterministic: within a bucket, bins are taken in the order they got there.
    """
    from bisect import bisect_left, insort
    from collections import deque

    if len(lengths) and int(lengths.max()) > capacity:
        raise ValueError(
            f"an example of {int(lengths.max())} tokens does not fit in packs of {capacity}"
        )
    packs: list[list[int]] = []
    free_values: list[int] = []  # sorted; the free spaces some open bin has
    buckets: dict[int, deque[int]] = {}
    for i in np.argsort(-lengths, kind="stable").tolist():
        need = int(lengths[i])
        at = bisect_left(free_values, max(need, 1))
        if at == len(free_values):
            b, left = len(packs), capacity - need
            packs.append([i])
        else:
            f = free_values[at]
            b, left = buckets[f].popleft(), f - need
            if not buckets[f]:
                del buckets[f], free_values[at]
            packs[b].append(i)
        if left > 0:
            if left not in buckets:
                buckets[left] = deque()
                insort(free_values, left)
            buckets[left].append(b)
    return packs


@dataclass
class Pack:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    examples: int


def build_packs(examples: Examples, capacity: int) -> tuple[list[Pack], dict[str, Any]]:
    """Packs of the examples, and the packing report (efficiency = real tokens / slots)."""
    lengths = examples.lengths
    packs = pack_bfd(lengths, capacity)
    # every pack's rows in input order, all packs back to back: one gather of the tokens
    order = (
        np.concatenate([np.sort(np.asarray(p, dtype=np.int64)) for p in packs])
        if packs
        else np.zeros(0, np.int64)
    )
    flat = examples.subset(order)
    positions = np.arange(len(flat.ids)) - np.repeat(flat.offsets[:-1], flat.lengths)
    labels = flat.labels.copy()
    labels[flat.offsets[:-1][flat.lengths > 0]] = IGNORE  # never predicted across examples
    ends = np.cumsum([len(p) for p in packs])
    cuts = flat.offsets[ends[:-1]] if len(packs) > 1 else np.zeros(0, np.int64)
    out = [
        Pack(i.tolist(), y.tolist(), q.tolist(), len(p))
        for i, y, q, p in zip(
            np.split(flat.ids, cuts),
            np.split(labels, cuts),
            np.split(positions, cuts),
            packs,
            strict=True,
        )
    ]
    tokens = int(lengths.sum())
    report = {
        "examples": len(examples),
        "packs": len(out),
        "capacity": capacity,
        "tokens": tokens,
        "efficiency": round(tokens / max(len(out) * capacity, 1), 4),
        "trained_tokens": int((examples.labels != IGNORE).sum()),
    }
    return out, report


def collate(packs: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch, padding-free: the packs back to back in one row (positions restart per
    example, no attention mask: transformers masks across examples from the positions)."""
    import torch

    ids = [t for p in packs for t in p["input_ids"]]
    labels = [t for p in packs for t in p["labels"]]
    positions = [t for p in packs for t in p["position_ids"]]
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
    }
