"""Near dedup's resolution spread over the workers: one task per LSH band.

On a distributed engine the workers leave each block's band hashes and shingle sets in a
file beside the block (`engines.spread.KeyParts`), and nothing of them comes back to the driver. Each band
is a task: it reads its own band's hashes of every alive row, sorts them into buckets, pairs
rows in a bucket and verifies the pairs by exact Jaccard, reading the shingles of only the
rows in its pairs. The driver receives verified edges (pairs of row numbers), joins them into
clusters, and reads shingles only for the similarity it records per dropped row.

The edges are the ones `NearDedup.edges` finds in one process: the same pairs per band,
verified by the same kernel; a pair found in two bands is one edge; the wider window's pairs
are skipped where the first round's edges already joined their rows (the label of that
round goes to every task), then verified. Clusters depend on the edges as a set, never on
their order, so the verdicts are the local engine's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from curate.dedup.clusters import clusters
from curate.engines.spread import KeyParts

if TYPE_CHECKING:
    from curate.engines.base import Engine


def band_edges(
    parts: KeyParts,
    column: str,
    b: int,
    threshold: float,
    first: int,
    window: int,
    label: np.ndarray | None = None,
    shingles: str = "shingles",
) -> np.ndarray:
    """One band's verified pairs: rows `first`..`window` places apart in its buckets, less
    those `label` already joins, with Jaccard ≥ threshold of their `shingles` (a task of
    `spread_edges`)."""
    from curate.dedup.minhash import band_buckets, band_pairs, unique_pairs

    n = parts.n
    hashes = parts.band(column, b).reshape(-1, 1)
    ((rows, hs),) = band_buckets(hashes, parts.usable(shingles))
    pairs = unique_pairs([band_pairs(rows, hs, first, window)], n)
    if label is not None and len(pairs):
        pairs = pairs[label[pairs[:, 0]] != label[pairs[:, 1]]]
    return pairs[parts.jaccard(pairs, shingles) >= threshold]


def spread_edges(
    engine: Engine,
    parts: KeyParts,
    column: str,
    bands: int,
    threshold: float,
    window: int,
    shingles: str = "shingles",
) -> np.ndarray:
    """`NearDedup.edges` with every band a task on `engine`: the chains of each bucket
    first, then the wider window's pairs between rows the chains did not join."""
    from curate.dedup.minhash import unique_pairs

    n = parts.n
    label = f"{column.replace('_', ' ')} (edges)"
    near = engine.map(
        band_edges,
        [(parts, column, b, threshold, 1, 1, None, shingles) for b in range(bands)],
        label,
    )
    edges = unique_pairs(near, n)
    if window > 1:
        joined = clusters(n, edges) if len(edges) else None
        tasks = [(parts, column, b, threshold, 2, window, joined, shingles) for b in range(bands)]
        far = engine.map(band_edges, tasks, label)
        edges = np.concatenate([edges, unique_pairs(far, n)])
    return edges
