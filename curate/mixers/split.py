"""Train / validation / test over the rows a mixture kept.

Rows are split in units: a row, or every row sharing a key (a near-duplicate cluster with
`by = "cluster"`, a meta field's value with `by = "FIELD"`), so similar rows never straddle
splits. Units are ranked by sha256(seed, key); in rank order, the first go to validation
until it holds round(validation × rows) rows, the next to test until it holds
round(test × rows). Ranking by a hash of the key, not by position, keeps a row in the same
split when other rows are added or removed. Every copy of an upsampled row follows the row.

Held-out units (a row of a `holdout_sources` source, or, in a split by time, a row at or
after the cutoff) only go to validation or test, in the ratio of their shares; in a split by
time every other row trains.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curate.hashing import sha256_hex

TRAIN, VALIDATION, TEST = 0, 1, 2


def assign_splits(
    ids: pa.Array,
    groups: pa.Array | None,
    validation: float,
    seed: int,
    test: float = 0.0,
    held_out: np.ndarray | None = None,
    eval_only: bool = False,
) -> np.ndarray:
    """Per row: TRAIN, VALIDATION or TEST. `groups` (nullable) holds the unit key where rows
    go together; `held_out` marks rows that may only go to validation or test; with
    `eval_only`, rows not held out all train (a split by time)."""
    n = len(ids)
    split = np.full(n, TRAIN, dtype=np.int8)
    if n == 0 or validation + test == 0:
        return split
    ids = ids.cast(pa.string())
    keys = ids
    if groups is not None:
        groups = groups.cast(pa.string())  # a row without a key is a unit of its own
        keys = pc.if_else(
            pc.is_null(groups), pc.binary_join_element_wise("\x00id", ids, ":"), groups
        )
    forced = held_out if held_out is not None else np.zeros(n, dtype=bool)
    frame = pl.DataFrame({"key": pl.Series(keys), "row": np.arange(n), "forced": forced})
    unit = frame.group_by("key", maintain_order=True).agg(
        pl.col("row"), pl.len().alias("size"), pl.col("forced").any()
    )
    salted = sha256_hex(unit["key"].to_arrow(), 16, prefix=f"{seed}\x00".encode())
    unit = unit.with_columns(pl.Series("rank", salted)).sort("rank", "key")
    held = unit.filter(pl.col("forced"))
    if held.height:  # all to evaluation, in the ratio of the two shares
        share = validation / (validation + test)
        _take(split, held, [(VALIDATION, round(share * int(held["size"].sum()))), (TEST, None)])
    if eval_only:
        return split
    rest = unit.filter(~pl.col("forced"))
    rows = int(rest["size"].sum())
    _take(split, rest, [(VALIDATION, round(validation * rows)), (TEST, round(test * rows))])
    return split


def _take(split: np.ndarray, units: pl.DataFrame, targets: list[tuple[int, int | None]]) -> None:
    """Units in rank order to each (code, rows) target in turn: a split takes units until it
    holds at least its target (None: every unit left). A unit larger than the whole target
    is passed over while smaller ones remain, and where none is smaller it is taken only if
    it holds at most half of the rows: one cluster that swallowed most rows (a preamble many
    prompts share) stays in train rather than take an evaluation split for itself."""
    sizes = units["size"].to_numpy()
    free = np.ones(len(sizes), dtype=bool)
    for code, target in targets:
        if target is None:
            chosen = np.flatnonzero(free)
        elif target <= 0:
            continue
        elif len(fits := np.flatnonzero(free & (sizes <= target))):
            stop = int(np.searchsorted(np.cumsum(sizes[fits]), target)) + 1
            chosen = fits[:stop]
        else:
            chosen = np.flatnonzero(free)[:1]
            if len(chosen) and sizes[chosen[0]] * 2 > sizes.sum():
                chosen = chosen[:0]
        if len(chosen):
            split[units[chosen]["row"].explode().to_numpy()] = code
        free[chosen] = False


def unit_report(groups: pa.Array, split: np.ndarray, validation: float, test: float) -> dict:
    """What a split by cluster or group could not place: the rows of its largest unit, and
    the evaluation splits that got less than half their target (units left too large)."""
    frame = pl.DataFrame({"unit": pl.Series(groups)}).drop_nulls("unit")
    sizes = frame.group_by("unit").len()["len"].to_numpy()
    largest = int(sizes.max()) if len(sizes) else 0
    short = [
        name
        for code, name, share in ((VALIDATION, "validation", validation), (TEST, "test", test))
        if share > 0 and int((split == code).sum()) * 2 < round(share * len(split))
    ]
    return {"largest_unit_rows": largest, "evaluation_short": short}


def output_positions(copies: np.ndarray, split: np.ndarray, seed: int) -> list[np.ndarray]:
    """For each split, per emitted copy: (row index, position in the shuffled split)."""
    out = []
    for code in (TRAIN, VALIDATION, TEST):
        mask = (split == code) & (copies > 0)
        rows = np.repeat(np.nonzero(mask)[0], copies[mask])
        order = np.random.Generator(np.random.PCG64([seed, 7919, code])).permutation(len(rows))
        positions = np.empty(len(rows), dtype=np.int64)
        positions[order] = np.arange(len(rows))
        out.append(
            np.stack([rows, positions], axis=1) if len(rows) else np.empty((0, 2), dtype=np.int64)
        )
    return out
