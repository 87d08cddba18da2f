"""Near-duplicate dedup: MinHash signatures, LSH, exact-Jaccard verification, union-find.

Signatures are one-permutation MinHash with optimal densification (Shrivastava, ICML 2017):
each word n-gram is hashed once; its hash picks one of `num_perm` bins and the bin keeps the
minimum; empty bins borrow, along a fixed probe sequence per bin, the value of a non-empty
bin. The collision probability per bin is the Jaccard similarity, as with `num_perm`
independent permutations, at O(shingles + num_perm) per row instead of O(shingles ×
num_perm) — computed for a whole batch at once with numpy (no loop per row or shingle).

LSH bands and rows are chosen from the threshold by weighing false positives and false
negatives (as datasketch does). Every candidate pair of a band bucket is verified by the
exact Jaccard similarity of the two rows' shingle sets; verified pairs are joined into
clusters (connected components). In each cluster one row is kept: the earliest source, then
the longer answer, then input order; the others go to the ledger as `near_duplicate` with
`duplicate_of`, `cluster` (the kept row's id) and `jaccard` (to the kept row).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.clusters import clusters, duplicate_verdicts
from curate.dedup.shingles import answer_chars, mix64, ngram_hashes, row_text, sorted_unique, words
from curate.steps import GlobalStep, Verdicts

EMPTY = np.uint32(0xFFFFFFFF)
WINDOW = 4  # rows each row is paired with in its bucket, per band
PROBES = 32  # densification probes per empty bin before falling back to rotation


def _false_positive(threshold: float, b: int, r: int) -> float:
    x = np.linspace(0.0, threshold, 201)
    return float(np.trapezoid(1 - (1 - x**r) ** b, x))


def _false_negative(threshold: float, b: int, r: int) -> float:
    x = np.linspace(threshold, 1.0, 201)
    return float(np.trapezoid(1 - (1 - (1 - x**r) ** b), x))


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands × rows ≤ num_perm minimizing the weighted FP + FN areas."""
    best, params = float("inf"), (1, num_perm)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = fp_weight * _false_positive(threshold, b, r) + (1 - fp_weight) * _false_negative(
                threshold, b, r
            )
            if err < best:
                best, params = err, (b, r)
    return params


@lru_cache(maxsize=8)
def _probe_table(num_perm: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(0xD3A5E))
    return rng.integers(0, num_perm, size=(num_perm, PROBES))


def signatures(hashes: np.ndarray, owner: np.ndarray, rows: int, num_perm: int) -> np.ndarray:
    """(rows × num_perm) uint32 one-permutation MinHash signatures, densified."""
    flat = np.full(rows * num_perm, EMPTY, dtype=np.uint32)
    if len(hashes):
        bins = ((hashes >> np.uint64(32)) * np.uint64(num_perm)) >> np.uint64(32)
        values = (hashes & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        np.minimum.at(flat, owner.astype(np.int64) * num_perm + bins.astype(np.int64), values)
    return densify(flat.reshape(rows, num_perm))


def densify(sig: np.ndarray) -> np.ndarray:
    """Fill empty bins from non-empty ones along a probe sequence that depends on the bin only."""
    orig = sig
    sig = sig.copy()
    empty = sig == EMPTY
    has_any = ~empty.all(axis=1)
    r, j = np.nonzero(empty & has_any[:, None])
    table = _probe_table(sig.shape[1])
    for t in range(PROBES):
        if len(r) == 0:
            return sig
        v = orig[r, table[j, t]]
        ok = v != EMPTY
        sig[r[ok], j[ok]] = v[ok]
        r, j = r[~ok], j[~ok]
    if len(r):  # rotation: the next non-empty bin, circularly (rows with very few shingles)
        rows_left, inverse = np.unique(r, return_inverse=True)
        width = sig.shape[1]
        filled = orig[rows_left] != EMPTY
        pos = np.where(filled, np.arange(width), 2 * width)
        twice = np.concatenate([pos, pos + width], axis=1)
        nxt = np.minimum.accumulate(twice[:, ::-1], axis=1)[:, ::-1][:, :width] % width
        sig[r, j] = orig[r, nxt[inverse, j]]
    return sig


def near_keys(batch: pa.Table, num_perm: int, ngram: int) -> pa.Table:
    """Per row: its signature, its unique shingle hashes (for exact Jaccard), answer length."""
    text = row_text(batch)
    word_hash, offsets, _ = words(text)
    hashes, owner, _ = ngram_hashes(word_hash, offsets, ngram)
    n = batch.num_rows
    sig = signatures(hashes, owner, n, num_perm)
    # unique 32-bit shingle hashes per row, sorted (row-major)
    low = (hashes & np.uint64(0xFFFFFFFF)).astype(np.uint64)
    packed = sorted_unique((owner.astype(np.uint64) << np.uint64(32)) | low)
    counts = np.bincount((packed >> np.uint64(32)).astype(np.int64), minlength=n)
    offs = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offs[1:])
    shingles = pa.ListArray.from_arrays(
        pa.array(offs), pa.array((packed & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    )
    return pa.table(
        {
            "minhash": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), num_perm),
            "shingles": shingles,
            "answer_chars": answer_chars(batch),
        }
    )


def band_buckets(
    sig: np.ndarray, usable: np.ndarray, bands: int, rows: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per band: the usable rows sorted by the band's hash (then input order), and the
    sorted hashes (rows with equal hashes, adjacent, form a bucket)."""
    idx = np.nonzero(usable)[0]
    out = []
    with np.errstate(over="ignore"):
        for b in range(bands):
            h = np.zeros(len(idx), dtype=np.uint64)
            for c in range(b * rows, (b + 1) * rows):
                h = mix64(h * np.uint64(0x100000001B3) + sig[idx, c].astype(np.uint64))
            order = np.argsort(h, kind="stable")
            out.append((idx[order], h[order]))
    return out


def candidate_pairs(
    buckets: list[tuple[np.ndarray, np.ndarray]], n: int, window: int = WINDOW, first: int = 1
) -> np.ndarray:
    """Pairs (i < j) of the n rows sharing a whole band, deduplicated.

    In each band every row is paired with the rows `first`..`window` places after it in its
    bucket: all pairs of buckets up to `window` + 1 rows, a band of overlapping chains in
    larger ones, so that one row of a big bucket that fails verification does not cut the
    chain between two true duplicates.
    """
    pairs = []
    for rows, hs in buckets:
        for w in range(first, window + 1):
            same = hs[w:] == hs[:-w]
            if not same.any():
                break
            a, z = rows[:-w][same], rows[w:][same]
            pairs.append(np.stack([np.minimum(a, z), np.maximum(a, z)], axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    both = np.concatenate(pairs)
    packed = sorted_unique(both[:, 0].astype(np.int64) * (n + 1) + both[:, 1])
    return np.stack([packed // (n + 1), packed % (n + 1)], axis=1)


def jaccard(shingles: pa.ListArray, pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle sets of each pair (each row's set is sorted and unique).

    Every row's shingles, keyed (row, shingle), form one sorted array; each element of the
    smaller set of a pair is looked up there under the other row, so the intersection is
    counted with one vectorized binary search, no Python loop and no hash table.
    """
    if len(pairs) == 0:
        return np.zeros(0)
    offs = np.asarray(shingles.offsets.to_numpy(), dtype=np.int64)
    flat = shingles.values.to_numpy().astype(np.uint64)
    lengths = np.diff(offs)
    keyed = (np.repeat(np.arange(len(lengths), dtype=np.uint64), lengths) << np.uint64(32)) | flat
    a, b = pairs[:, 0], pairs[:, 1]
    swap = lengths[a] > lengths[b]
    small, other = np.where(swap, b, a), np.where(swap, a, b)
    size = lengths[small]
    pair_of = np.repeat(np.arange(len(pairs)), size)
    at = np.repeat(offs[small] - (np.cumsum(size) - size), size) + np.arange(len(pair_of))
    query = (other[pair_of].astype(np.uint64) << np.uint64(32)) | flat[at]
    pos = np.minimum(np.searchsorted(keyed, query), len(keyed) - 1)
    inter = np.bincount(pair_of[keyed[pos] == query], minlength=len(pairs))
    union = lengths[a] + lengths[b] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


class NearDedup(GlobalStep):
    name = "near_dedup"
    stage = "near_dedup"
    version = "2"

    # Candidates are verified by exact Jaccard, so a false positive of the bands costs one
    # cheap check while a false negative is a duplicate missed: weigh them 1 to 19.
    FP_WEIGHT = 0.05

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5):
        self.threshold, self.num_perm, self.ngram = threshold, num_perm, ngram
        self.bands, self.rows = optimal_bands(threshold, num_perm, self.FP_WEIGHT)

    def params(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "num_perm": self.num_perm,
            "ngram": self.ngram,
            "bands": self.bands,
            "rows": self.rows,
            "signature": "one-permutation minhash, optimal densification",
            "verify": "exact jaccard of word n-gram sets",
            "keep": "source_order,longer_answer,input_order",
        }

    def keys(self, batch: pa.Table) -> pa.Table:
        return near_keys(batch, self.num_perm, self.ngram)

    def edges(self, sig: np.ndarray, usable: np.ndarray, shingles: pa.ListArray) -> np.ndarray:
        """Verified pairs (Jaccard ≥ threshold) that connect the clusters.

        First each bucket's chain (every row and the next) is verified; then the wider
        window's pairs, except those whose rows the verified chains already joined: big
        families of duplicates are not verified pair by pair.
        """
        buckets = band_buckets(sig, usable, self.bands, self.rows)
        pairs = candidate_pairs(buckets, len(sig), window=1)
        edges = pairs[jaccard(shingles, pairs) >= self.threshold]
        if WINDOW > 1:
            more = candidate_pairs(buckets, len(sig), window=WINDOW, first=2)
            if len(more) and len(edges):
                label = clusters(len(sig), edges)
                more = more[label[more[:, 0]] != label[more[:, 1]]]
            edges = np.concatenate([edges, more[jaccard(shingles, more) >= self.threshold]])
        return edges

    def resolve(self, keys: pa.Table) -> Verdicts:
        n = keys.num_rows
        sig_col = keys.column("minhash").combine_chunks()
        sig = sig_col.flatten().to_numpy().reshape(n, self.num_perm)
        shingles = keys.column("shingles").combine_chunks()
        usable = pc.list_value_length(shingles).to_numpy(zero_copy_only=False) > 0
        edges = self.edges(sig, usable, shingles)
        if len(edges) == 0:
            return Verdicts.keep_all(n)
        label = clusters(n, edges)
        return duplicate_verdicts(
            keys,
            label,
            "near_duplicate",
            "jaccard",
            lambda rows, kept: jaccard(shingles, np.stack([rows, kept], axis=1)),
        )
