"""Train/validation split over the rows a mixture kept.

Units (rows, or groups of rows sharing a meta field's value) are ranked by
sha256(seed, key); the lowest-ranked go to validation until it holds
round(validation × rows) rows. Ranking by a hash of the key, not by position, keeps a row in
the same split when other rows are added or removed. Every copy of an upsampled row follows
the row, so no example is in both splits.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curate.hashing import sha256_hex

TRAIN, VALIDATION = 0, 1


def assign_splits(
    ids: pa.Array, groups: pa.Array | None, validation: float, seed: int
) -> np.ndarray:
    """Per row: TRAIN or VALIDATION. `groups` (nullable) holds the split key where by = field."""
    n = len(ids)
    split = np.full(n, TRAIN, dtype=np.int8)
    target = int(round(validation * n))
    if n == 0 or target == 0:
        return split
    ids = ids.cast(pa.string())
    keys = ids
    if groups is not None:
        groups = groups.cast(pa.string())  # a row without the field is a group of its own
        keys = pc.if_else(
            pc.is_null(groups), pc.binary_join_element_wise("\x00id", ids, ":"), groups
        )
    frame = pl.DataFrame({"key": pl.Series(keys), "row": np.arange(n)})
    unit = frame.group_by("key", maintain_order=True).agg(pl.col("row"), pl.len().alias("size"))
    salted = sha256_hex(unit["key"].to_arrow(), 16, prefix=f"{seed}\x00".encode())
    unit = unit.with_columns(pl.Series("rank", salted)).sort("rank", "key")
    taken = np.cumsum(unit["size"].to_numpy())
    count = int(np.searchsorted(taken, target) + 1)
    chosen = unit.head(count)["row"].explode().to_numpy()
    split[chosen] = VALIDATION
    return split


def output_positions(copies: np.ndarray, split: np.ndarray, seed: int) -> list[np.ndarray]:
    """For each split, per emitted copy: (row index, position in the shuffled split)."""
    out = []
    for code in (TRAIN, VALIDATION):
        mask = (split == code) & (copies > 0)
        rows = np.repeat(np.nonzero(mask)[0], copies[mask])
        order = np.random.Generator(np.random.PCG64([seed, 7919, code])).permutation(len(rows))
        positions = np.empty(len(rows), dtype=np.int64)
        positions[order] = np.arange(len(rows))
        out.append(
            np.stack([rows, positions], axis=1) if len(rows) else np.empty((0, 2), dtype=np.int64)
        )
    return out
