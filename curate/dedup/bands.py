"""Near dedup's resolution spread over the workers: one task per LSH band.

On a distributed engine the workers leave each block's band hashes and shingle sets in a
file beside the block (`KeyParts`), and nothing of them comes back to the driver. Each band
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

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from curate.dedup.clusters import clusters

if TYPE_CHECKING:
    from curate.engines.base import Engine


@dataclass(frozen=True)
class KeyParts:
    """A global step's keys where the workers left them: per block, the file of its key
    columns (every row of the block; None where nothing was written) and its alive rows
    (positions in that file, in canonical order). Row i of the step is the i-th alive row
    counting block by block."""

    files: list[str | None]
    rows: list[np.ndarray]

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(r) for r in self.rows])]).astype(np.int64)

    @property
    def n(self) -> int:
        return int(self.starts[-1])

    def _column(self, block: int, name: str) -> pa.Array:
        from curate.engines.passes import read_ipc

        path = self.files[block]
        assert path is not None, f"block {block} has alive rows but no key file"
        column = read_ipc(path).column(name)  # memory-mapped: only what is taken is read
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()

    def band(self, name: str, b: int) -> np.ndarray:
        """Band `b` of the hashes in column `name` for every alive row."""
        parts = [np.empty(0, dtype=np.uint64)]
        for block, rows in enumerate(self.rows):
            if len(rows):
                bands = self._column(block, name)
                width = bands.type.list_size
                # the child's buffer, not `flatten()`, which drops the dead rows' (null)
                # slots: their values are never taken
                child = bands.values
                hashes = np.frombuffer(child.buffers()[1], dtype=np.uint64)
                at = child.offset + bands.offset * width
                flat = hashes[at : at + len(bands) * width]
                parts.append(flat.reshape(-1, width)[rows, b])
        return np.concatenate(parts)

    def usable(self) -> np.ndarray:
        """Per alive row: whether it has any shingle (rows without one pair with nothing)."""
        parts = [np.empty(0, dtype=bool)]
        for block, rows in enumerate(self.rows):
            if len(rows):
                offsets = np.asarray(self._column(block, "shingles").offsets)
                parts.append(np.diff(offsets)[rows] > 0)
        return np.concatenate(parts)

    def jaccard(self, pairs: np.ndarray) -> np.ndarray:
        """Exact Jaccard of each pair of rows (`minhash.jaccard`), from only their shingles."""
        from curate.dedup.kernels import pair_jaccard

        if len(pairs) == 0:
            return np.zeros(0)
        needed = np.unique(pairs.ravel())
        starts = self.starts
        block_of = np.searchsorted(starts, needed, side="right") - 1
        taken = []
        for block in np.unique(block_of):
            local = self.rows[block][needed[block_of == block] - starts[block]]
            taken.append(self._column(int(block), "shingles").take(pa.array(local)))
        shingles = pa.concat_arrays(taken)
        offs = np.asarray(shingles.offsets.to_numpy(), dtype=np.int64)
        flat = shingles.values.to_numpy()
        a, z = (np.searchsorted(needed, pairs[:, k]).astype(np.int64) for k in (0, 1))
        return pair_jaccard(offs, flat, a, z)


def band_edges(
    parts: KeyParts,
    column: str,
    b: int,
    threshold: float,
    first: int,
    window: int,
    label: np.ndarray | None = None,
) -> np.ndarray:
    """One band's verified pairs: rows `first`..`window` places apart in its buckets, less
    those `label` already joins, with Jaccard ≥ threshold (a task of `spread_edges`)."""
    from curate.dedup.minhash import band_buckets, band_pairs, unique_pairs

    n = parts.n
    hashes = parts.band(column, b).reshape(-1, 1)
    ((rows, hs),) = band_buckets(hashes, parts.usable())
    pairs = unique_pairs([band_pairs(rows, hs, first, window)], n)
    if label is not None and len(pairs):
        pairs = pairs[label[pairs[:, 0]] != label[pairs[:, 1]]]
    return pairs[parts.jaccard(pairs) >= threshold]


def spread_edges(
    engine: Engine, parts: KeyParts, column: str, bands: int, threshold: float, window: int
) -> np.ndarray:
    """`NearDedup.edges` with every band a task on `engine`: the chains of each bucket
    first, then the wider window's pairs between rows the chains did not join."""
    from curate.dedup.minhash import unique_pairs

    n = parts.n
    label = f"{column.replace('_', ' ')} (edges)"
    near = engine.map(
        band_edges, [(parts, column, b, threshold, 1, 1) for b in range(bands)], label
    )
    edges = unique_pairs(near, n)
    if window > 1:
        joined = clusters(n, edges) if len(edges) else None
        tasks = [(parts, column, b, threshold, 2, window, joined) for b in range(bands)]
        far = engine.map(band_edges, tasks, label)
        edges = np.concatenate([edges, unique_pairs(far, n)])
    return edges
