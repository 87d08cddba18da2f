"""The write phase: every row to its split's shards or to the ledger, as store objects.

Output positions are drawn here (a seeded shuffle per split); the blocks are then read once
more, in parallel, each writing its ledger part and bucketing its output rows by shard, and
each shard is gathered in its shuffled order (see `engines.passes.emit` / `gather`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate.engines import passes
from curate.engines.base import Engine
from curate.engines.stepcache import StepCache, code_digest
from curate.fsio import sha256_file
from curate.manifests.store import Store
from curate.mixers.split import output_positions
from curate.rows import SPLIT_NAMES
from curate.runner import block_bounds

OUTPUT_SHARD_ROWS = 50_000  # at most; a split's shards are made equal in size


def shard_size(rows: int) -> int:
    """Rows per shard for a split of `rows`: all shards of one size, at most
    OUTPUT_SHARD_ROWS, and an even number of them when there are several, so that two or
    more processes finish writing them together (3 equal shards on 2 cores take 2 rounds of
    a third; 4 take 2 rounds of a quarter)."""
    shards = max(1, math.ceil(rows / OUTPUT_SHARD_ROWS))
    if shards > 1 and shards % 2:
        shards += 1
    return max(1, math.ceil(rows / shards))


def write_outputs(
    engine: Engine,
    index: pl.DataFrame,
    blocks: list[str],
    seed: int,
    work: Path,
    store: Store,
    cache: tuple[StepCache, list[str | None]] | None = None,
) -> Written:
    """The splits and ledger manifest entries, their objects written to the store (not yet
    durable: the build syncs them all at once).

    With a step `cache` and every block's state in it, a rebuild whose rows, verdicts and
    output positions are those of an earlier write takes that write's objects, when the
    store still holds them, instead of writing them again."""
    copies = index["copies"].to_numpy()
    output_positions_by_split = output_positions(copies, index["split"].to_numpy(), seed)
    placed = np.concatenate(output_positions_by_split)
    # per row, the positions of its copies: a list array whose offsets are the copy counts
    by_row = placed[np.argsort(placed[:, 0], kind="stable"), 1]
    offsets = np.zeros(index.height + 1, dtype=np.int64)
    np.cumsum(copies, out=offsets[1:])
    positions = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(by_row, pa.int64()))
    # Workers read their block's slice of this file memory-mapped: shipping slices of Arrow
    # arrays to a process would pickle the whole arrays behind them, once per block.
    plan_file = work / "plan.arrow"
    plan = index.select(
        "id", "stage", "reason", "detail", pl.col("split").alias("split_code")
    ).to_arrow()
    passes.write_ipc(plan.append_column("positions", positions), plan_file)
    del plan, positions, placed  # the workers read the file; this process needs neither
    bounds = block_bounds(index)
    shard_rows = tuple(shard_size(len(p)) for p in output_positions_by_split)
    steps, states = cache if cache is not None else (None, [])
    key = _outputs_key(plan_file, shard_rows, states)
    if steps is not None and key is not None:
        done = steps.outputs(key, store.has_object)
        if done is not None:
            return Written(done["splits"], done["ledger"], key, reused=True)
    items = [
        (blocks[b], b, str(plan_file), a, z - a, str(work), shard_rows, store.location)
        for b, (a, z) in enumerate(bounds)
    ]
    results = engine.map(passes.emit, items, "write", weights=[z - a for a, z in bounds])

    buckets: dict[tuple[int, int], list[str]] = {}
    for _, parts in results:
        for code, shard, path in parts:
            buckets.setdefault((code, shard), []).append(path)
    keys = sorted(buckets)
    scratch = [str(work / f"shard-{c}-{s:06d}.parquet") for c, s in keys]
    objects = engine.map(
        passes.gather,
        [(buckets[k], f, store.location) for k, f in zip(keys, scratch, strict=True)],
        "shards",
    )
    # train and validation are always listed; test where a build holds rows out for it
    listed = [n for c, n in enumerate(SPLIT_NAMES) if c < 2 or any(k[0] == c for k in keys)]
    splits: dict[str, Any] = {name: {"rows": 0, "shards": []} for name in listed}
    for (code, _), entry in zip(keys, objects, strict=True):
        split = splits[SPLIT_NAMES[code]]
        split["shards"].append(entry)
        split["rows"] += entry["rows"]
    ledger_parts = [ledger for ledger, _ in results if ledger is not None]
    ledger = {"rows": sum(p["rows"] for p in ledger_parts), "parts": ledger_parts}
    return Written(splits, ledger, key if steps is not None else None)


@dataclass
class Written:
    """What the write phase wrote (or took from an earlier write), and the key to record
    it under in the step cache once its objects are durable (None: not cached)."""

    splits: dict[str, Any]
    ledger: dict[str, Any]
    key: str | None
    reused: bool = False

    def remember(self, cache: StepCache) -> None:
        """Record the write for later rebuilds: only once the build has made its objects
        durable, so that no record outlives, through a power loss, the objects it names."""
        if self.key is not None and not self.reused:
            cache.save_outputs(self.key, {"splits": self.splits, "ledger": self.ledger})


def _outputs_key(
    plan_file: Path, shard_rows: tuple[int, ...], states: list[str | None]
) -> str | None:
    """What the objects written depend on: every row's verdict and output positions (the
    plan), the blocks' contents (their states) and the shard sizes. None when a block's
    state is unknown (nothing cached)."""
    if not states or any(s is None for s in states):
        return None
    blob = {
        "code": code_digest(),
        "plan": sha256_file(plan_file),
        "states": states,
        "shard_rows": shard_rows,
        "parquet": passes.PARQUET_OPTIONS,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def write_split_index(index: pl.DataFrame, work: Path, store: Store) -> dict[str, Any]:
    """Per kept row: its id, split and the key it was split with (`split_unit`), as a
    store object, so that `curate verify` can check that no id and no cluster or group is
    in two splits."""
    kept = index.filter(pl.col("copies") > 0).select(
        "id", pl.col("split").cast(pl.Int8), pl.col("split_unit").cast(pl.String)
    )
    return passes.write_object(kept.to_arrow(), work / "split-index.parquet", store.location)
