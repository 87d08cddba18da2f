"""Mixture by weight: how many copies of each surviving row the output holds.

Without weights, the mixture is natural: every surviving row is kept once (or, with `total`,
sources are scaled together to it). With weights, shares are the weights sharpened or
flattened by the temperature (`w ** (1 / temperature)`, normalized). With `total`, each source is asked for its share of
it; without, the mixture is the largest one that honours every share without using any row
more than `max_repeats` times (a source with no rows left is left out of that reckoning and
reported as capped, rather than emptying the whole mixture). A source asked for fewer rows than it has is sampled without
replacement (the rest go to the ledger as `not_sampled`); one asked for more is upsampled by
whole repeats first, then a sample for the remainder, never past `max_repeats`. Draws are
seeded per source, so a build is reproducible and one source's draw does not shift when
another source changes.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.config import MixtureSection, SourceSection


@dataclass(frozen=True)
class MixturePlan:
    copies: np.ndarray  # per alive row (canonical order): how many times it is emitted
    report: dict[str, Any]


def shares(weights: list[float], temperature: float) -> list[float]:
    sharpened = [w ** (1.0 / temperature) if w > 0 else 0.0 for w in weights]
    total = sum(sharpened)
    return [s / total for s in sharpened]


def _apportion(total: int, parts: list[float]) -> list[int]:
    """Integers summing to `total` in proportion to `parts` (largest remainder)."""
    raw = [total * p for p in parts]
    floors = [math.floor(r) for r in raw]
    short = total - sum(floors)
    order = sorted(range(len(parts)), key=lambda i: (-(raw[i] - floors[i]), i))
    for i in order[:short]:
        floors[i] += 1
    return floors


def plan_mixture(
    source_rank: np.ndarray,
    sources: list[SourceSection],
    mixture: MixtureSection,
    seed: int,
    sizes: np.ndarray | None = None,
) -> MixturePlan:
    """`source_rank`: the source index of every alive row, in canonical order.

    `sizes` (with `unit = "tokens"`): each alive row's token count; shares, `total` and
    caps are then in tokens, and a source's draw takes rows in its seeded order while they
    fit in what it was asked for (whole repeats first, as for rows).
    """
    in_tokens = sizes is not None
    size = sizes.astype(np.int64) if sizes is not None else np.ones(len(source_rank), np.int64)
    available = np.bincount(source_rank, weights=size, minlength=len(sources)).astype(np.int64)
    counts = np.bincount(source_rank, minlength=len(sources)).astype(np.int64)
    weighted = all(s.weight is not None for s in sources)
    weights = [float(s.weight) if weighted else float(available[i]) for i, s in enumerate(sources)]  # type: ignore[arg-type]
    if sum(weights) == 0:
        weights = [1.0] * len(sources)  # nothing survived: any shares will do
    p = shares(weights, mixture.temperature if weighted else 1.0)
    caps = [int(available[i]) * s.max_repeats for i, s in enumerate(sources)]
    if mixture.total is not None:
        requested_total = mixture.total
    else:
        # a source with nothing left cannot hold the others back: it is reported as capped
        limits = [caps[i] / p[i] for i in range(len(sources)) if p[i] > 0 and caps[i] > 0]
        requested_total = int(math.floor(min(limits) + 1e-9)) if limits else 0
    requested = _apportion(requested_total, p)
    copies = np.zeros(len(source_rank), dtype=np.int64)
    unit = "tokens" if in_tokens else "rows"
    report: dict[str, Any] = {
        "sources": {},
        "requested_total": requested_total,
        "temperature": mixture.temperature,
    }
    realized_total = 0
    for i, src in enumerate(sources):
        rows = np.nonzero(source_rank == i)[0]
        want = min(requested[i], caps[i])
        a = int(available[i])
        got = 0
        if a and want:
            draw = np.random.Generator(
                np.random.PCG64([seed, zlib.crc32(src.name.encode())])
            ).permutation(len(rows))
            base, extra = divmod(want, a)
            per_row = np.full(len(rows), base, dtype=np.int64)
            # the rows, in seeded order, that fit in the remainder
            fits = np.searchsorted(np.cumsum(size[rows][draw]), extra, side="right")
            per_row[draw[:fits]] += 1
            copies[rows] = per_row
            got = int((per_row * size[rows]).sum())
        realized_total += got
        entry = {
            "weight": src.weight if weighted else None,
            "requested_share": round(p[i], 6),
            f"requested_{unit}": requested[i],
            f"available_{unit}": a,
            "max_repeats": src.max_repeats,
            f"realized_{unit}": got,
            "unique_rows": int(np.count_nonzero(copies[rows])),
            "capped": bool(want < requested[i]),
        }
        if in_tokens:
            entry["available_rows"] = int(counts[i])
            entry["realized_rows"] = int(copies[rows].sum())
        report["sources"][src.name] = entry
    for entry in report["sources"].values():
        entry["realized_share"] = (
            round(entry[f"realized_{unit}"] / realized_total, 6) if realized_total else 0.0
        )
    report["realized_total"] = realized_total
    return MixturePlan(copies, report)


def not_sampled_detail(report: dict[str, Any], source: str) -> dict[str, Any]:
    entry = report["sources"][source]
    keys = ("requested_rows", "available_rows", "requested_tokens", "available_tokens", "weight")
    return {k: entry[k] for k in keys if k in entry}
