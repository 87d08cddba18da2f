"""Near-duplicate dedup: MinHash signatures, LSH, exact-Jaccard verification, union-find.

Signatures are one-permutation MinHash with optimal densification (Shrivastava, ICML 2017):
each word n-gram is hashed once; its hash picks one of `num_perm` bins and the bin keeps the
minimum; empty bins borrow, along a fixed probe sequence per bin, the value of a non-empty
bin. The collision probability per bin is the Jaccard similarity, as with `num_perm`
independent permutations, at O(shingles + num_perm) per row instead of O(shingles ×
num_perm) — computed by a compiled kernel (`kernels.sketch`) in one pass over each row's
words, which also keeps each row's unique shingle hashes for the verification.

LSH bands and rows are chosen from the threshold by weighing false positives and false
negatives (as datasketch does). Every candidate pair of a band bucket is verified by the
exact Jaccard similarity of the two rows' shingle sets; verified pairs are joined into
clusters (connected components). In each cluster one row is kept: the earliest source, then
the longer answer, then input order; the others go to the ledger as `near_duplicate` with
`duplicate_of`, `cluster` (the kept row's id) and `jaccard` (to the kept row).

For a split by cluster, rows are also joined at a looser `cluster_threshold` (variants of
one problem that dedup keeps), with bands tuned to that threshold, and each alive row gets a
`cluster` index column, the id of its looser cluster's first row. With `cluster_on =
"prompt"` (the default) rows whose prompts (user and tool turns, numbers masked) are that
alike join too,
found by a second signature, of the prompt turns, made in the same pass: variants of a
problem (other numbers, other wording, so another answer) share their prompt far more than
their whole row. `SplitClusters` computes those clusters alone, for builds without near dedup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curate.dedup.clusters import cluster_ids, clusters, duplicate_verdicts
from curate.dedup.shingles import (
    SEED,
    answer_chars,
    code_point_classes,
    row_text,
    sorted_unique,
    text_bytes,
)
from curate.steps import GlobalStep, Verdicts, whole

if TYPE_CHECKING:
    from curate.engines.base import Engine
    from curate.engines.spread import KeyParts

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


# the turns a problem is posed in: variants of one problem share them, not their answers.
# System prompts are left out, as for dedup: a long one a source shares would join every row.
PROMPT_ROLES = ("user", "tool")


def prompt_text(batch: pa.Table) -> pa.Array:
    """Per row, its prompt turns with every number written as 0: variants of a problem with
    other numbers are one problem (on GSM8K, shifting every number of a question leaves its
    5-gram Jaccard at a median of 0.45 with the numbers, 1.0 without)."""
    import pyarrow.compute as pc

    # whole numbers only: an identifier such as "w14x0" is a word, not a number
    return pc.replace_substring_regex(row_text(batch, PROMPT_ROLES), r"\b[0-9]+\b", "0")


def near_keys(
    batch: pa.Table,
    num_perm: int,
    ngram: int,
    bands: int,
    rows: int,
    loose: tuple[int, int] = (0, 0),
    cluster_on: str = "row",
) -> pa.Table:
    """Per row: its LSH band hashes, its unique shingle hashes (for exact Jaccard), answer
    length; with `loose` (bands, rows), band hashes of the same signature tuned to a looser
    threshold; and with `cluster_on = "prompt"` also such band hashes of a second signature,
    of its prompt turns (`prompt_text`), with their shingles (`prompt_bands`,
    `prompt_shingles`)."""
    from curate.dedup.kernels import BYTES, near_sketch

    def sketch(text: pa.Array, b: int, r: int, more: tuple[int, int]):
        return near_sketch(
            text_bytes(text),
            np.uint64(SEED),
            (BYTES, code_point_classes()),
            ngram,
            num_perm,
            _probe_table(num_perm),
            b,
            r,
            *more,
        )

    band_hash, offs, flat, loose_hash = sketch(row_text(batch), bands, rows, loose)
    columns = {
        "bands": pa.FixedSizeListArray.from_arrays(pa.array(band_hash.ravel()), bands),
        "shingles": pa.LargeListArray.from_arrays(pa.array(offs), pa.array(flat)),
        "answer_chars": answer_chars(batch),
    }
    if loose[0]:
        columns["loose_bands"] = pa.FixedSizeListArray.from_arrays(
            pa.array(loose_hash.ravel()), loose[0]
        )
    if loose[0] and cluster_on == "prompt":
        prompt_hash, p_offs, p_flat, _ = sketch(prompt_text(batch), *loose, (0, 0))
        columns["prompt_bands"] = pa.FixedSizeListArray.from_arrays(
            pa.array(prompt_hash.ravel()), loose[0]
        )
        columns["prompt_shingles"] = pa.LargeListArray.from_arrays(
            pa.array(p_offs), pa.array(p_flat)
        )
    return pa.table(columns)


def band_buckets(
    band_hash: np.ndarray, usable: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per band, made when asked (one band's arrays at a time): the usable rows sorted by
    the band's hash (then input order), and the sorted hashes (rows with equal hashes,
    adjacent, form a bucket).

    The hash's top bits and the row number are packed into one 64-bit key and sorted (no
    argsort): rows are told apart by their hash's top 64 - log2(rows) bits, and a false
    match costs only a Jaccard check.
    """
    idx = np.nonzero(usable)[0].astype(np.uint64)
    shift = np.uint64(max(int(len(usable)).bit_length(), 1))
    low = (np.uint64(1) << shift) - np.uint64(1)
    for b in range(band_hash.shape[1]):
        packed = np.sort(((band_hash[usable, b] >> shift) << shift) | idx)
        yield (packed & low).astype(np.int64), packed >> shift


def candidate_pairs(
    buckets: Iterable[tuple[np.ndarray, np.ndarray]], n: int, window: int = WINDOW, first: int = 1
) -> np.ndarray:
    """Pairs (i < j) of the n rows sharing a whole band, deduplicated.

    In each band every row is paired with the rows `first`..`window` places after it in its
    bucket: all pairs of buckets up to `window` + 1 rows, a band of overlapping chains in
    larger ones, so that one row of a big bucket that fails verification does not cut the
    chain between two true duplicates.
    """
    return unique_pairs([band_pairs(rows, hs, first, window) for rows, hs in buckets], n)


def band_pairs(rows: np.ndarray, hs: np.ndarray, first: int, window: int) -> np.ndarray:
    """One band's pairs (`candidate_pairs`), not yet deduplicated."""
    pairs = [np.empty((0, 2), dtype=np.int64)]
    for w in range(first, window + 1):
        same = hs[w:] == hs[:-w]
        if not same.any():
            break
        a, z = rows[:-w][same], rows[w:][same]
        pairs.append(np.stack([np.minimum(a, z), np.maximum(a, z)], axis=1))
    return np.concatenate(pairs)


def unique_pairs(pairs: list[np.ndarray], n: int) -> np.ndarray:
    """The distinct pairs of `pairs` (i < j, of n rows), sorted."""
    both = np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)
    if len(both) == 0:
        return np.empty((0, 2), dtype=np.int64)
    packed = sorted_unique(both[:, 0].astype(np.int64) * (n + 1) + both[:, 1])
    return np.stack([packed // (n + 1), packed % (n + 1)], axis=1)


def jaccard(shingles: pa.Array, pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle sets of each pair (each row's set unique), by a hash
    set per pair (`kernels.pair_jaccard`)."""
    from curate.dedup.kernels import pair_jaccard

    if len(pairs) == 0:
        return np.zeros(0)
    offs = np.asarray(shingles.offsets.to_numpy(), dtype=np.int64)
    flat = shingles.values.to_numpy()
    return pair_jaccard(offs, flat, pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64))


class NearDedup(GlobalStep):
    name = "near_dedup"
    stage = "near_dedup"
    version = "4"

    # on a distributed engine these stay in the workers' files (`resolve_spread`)
    spread_keys = ("bands", "loose_bands", "shingles", "prompt_bands", "prompt_shingles")

    # Candidates are verified by exact Jaccard, so a false positive of the bands costs one
    # cheap check while a false negative is a duplicate missed: weigh them 1 to 19.
    FP_WEIGHT = 0.05

    def __init__(
        self,
        threshold: float = 0.8,
        num_perm: int = 128,
        ngram: int = 5,
        cluster_threshold: float | None = None,
        cluster_on: str = "row",
    ):
        self.threshold, self.num_perm, self.ngram = threshold, num_perm, ngram
        self.cluster_threshold = cluster_threshold
        self.cluster_on = cluster_on if cluster_threshold else "row"
        self.bands, self.rows = optimal_bands(threshold, num_perm, self.FP_WEIGHT)
        # clusters for the split get bands of their own, from the same signatures: dedup's
        # candidates (and so its verdicts) are the same whether or not the split uses them
        self.loose = (0, 0)
        if cluster_threshold:
            self.loose = optimal_bands(cluster_threshold, num_perm, self.FP_WEIGHT)

    @property
    def index_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("cluster",) if self.cluster_threshold else ()

    def params(self) -> dict[str, Any]:
        extra = {}
        if self.cluster_threshold:
            extra = {
                "cluster_threshold": self.cluster_threshold,
                "cluster_bands": list(self.loose),
                "cluster_on": self.cluster_on,
            }
        return {
            **extra,
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
        return near_keys(
            batch, self.num_perm, self.ngram, self.bands, self.rows, self.loose, self.cluster_on
        )

    def edges(
        self, band_hash: np.ndarray, usable: np.ndarray, shingles: pa.Array, threshold: float
    ) -> np.ndarray:
        """Verified pairs (Jaccard ≥ threshold) that connect the clusters.

        First each bucket's chain (every row and the next) is verified; then the wider
        window's pairs, except those whose rows the verified chains already joined: big
        families of duplicates are not verified pair by pair.
        """
        n = len(band_hash)
        near, far = [], []
        for rows, hs in band_buckets(band_hash, usable):  # one band's bucket held at a time
            near.append(band_pairs(rows, hs, 1, 1))
            far.append(band_pairs(rows, hs, 2, WINDOW))
        pairs = unique_pairs(near, n)
        edges = pairs[jaccard(shingles, pairs) >= threshold]
        if WINDOW > 1:
            more = unique_pairs(far, n)
            if len(more) and len(edges):
                label = clusters(n, edges)
                more = more[label[more[:, 0]] != label[more[:, 1]]]
            edges = np.concatenate([edges, more[jaccard(shingles, more) >= threshold]])
        return edges

    def unpack(
        self, keys: pa.Table, column: str = "bands", shingles_column: str = "shingles"
    ) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """(band hashes per row, rows with any shingle, shingle sets) of `keys`."""
        bands = whole(keys.column(column))
        band_hash = bands.flatten().to_numpy().reshape(keys.num_rows, bands.type.list_size)
        shingles = whole(keys.column(shingles_column))
        return band_hash, np.diff(np.asarray(shingles.offsets)) > 0, shingles

    @staticmethod
    def shingles_of(column: str) -> str:
        """The shingles the pairs of a band column are verified on."""
        return "prompt_shingles" if column == "prompt_bands" else "shingles"

    def resolve(self, keys: pa.Table) -> Verdicts:
        shingles = whole(keys.column("shingles"))

        def edges_of(column: str, threshold: float) -> np.ndarray:
            band_hash, usable, sets = self.unpack(keys, column, self.shingles_of(column))
            return self.edges(band_hash, usable, sets, threshold)

        return self.verdicts(keys, edges_of, lambda pairs: jaccard(shingles, pairs))

    def resolve_spread(self, engine: Engine, keys: pa.Table, parts: KeyParts) -> Verdicts:
        """`resolve` with the band hashes and shingles left in the workers' files."""
        from curate.dedup.bands import spread_edges

        def edges_of(column: str, threshold: float) -> np.ndarray:
            bands = self.bands if column == "bands" else self.loose[0]
            return spread_edges(
                engine, parts, column, bands, threshold, WINDOW, self.shingles_of(column)
            )

        return self.verdicts(keys, edges_of, parts.jaccard)

    def loose_edges(self, edges_of: Callable[[str, float], np.ndarray]) -> np.ndarray:
        """The pairs the split's clusters join: whole rows at `cluster_threshold`, and with
        `cluster_on = "prompt"` also rows whose prompts are that alike."""
        assert self.cluster_threshold is not None
        found = [edges_of("loose_bands", self.cluster_threshold)]
        if self.cluster_on == "prompt":
            found.append(edges_of("prompt_bands", self.cluster_threshold))
        return np.concatenate([e.reshape(-1, 2) for e in found])

    def verdicts(
        self,
        keys: pa.Table,
        edges_of: Callable[[str, float], np.ndarray],
        similarity: Callable[[np.ndarray], np.ndarray],
    ) -> Verdicts:
        """Verdicts from the verified edges of a band column (`edges_of(column, threshold)`)
        and the Jaccard of row pairs (`similarity`), wherever those are computed."""
        n = keys.num_rows
        verdicts = Verdicts.keep_all(n)
        edges = edges_of("bands", self.threshold)
        if len(edges):
            verdicts = duplicate_verdicts(
                keys,
                clusters(n, edges),
                "near_duplicate",
                "jaccard",
                lambda rows, kept: similarity(np.stack([rows, kept], axis=1)),
            )
        if not self.cluster_threshold:
            return verdicts
        # what dedup joined is joined for the split too, whatever the looser bands find
        loose = self.loose_edges(edges_of)
        clustered = cluster_ids(keys, n, np.concatenate([edges.reshape(-1, 2), loose]))
        return verdicts.with_columns(pa.table({"cluster": clustered}))


class SplitClusters(NearDedup):
    """Clusters for a split by cluster where near dedup is off: it joins, never drops."""

    name = "split_clusters"
    stage = "split_clusters"

    def __init__(
        self,
        cluster_threshold: float,
        num_perm: int = 128,
        ngram: int = 5,
        cluster_on: str = "row",
    ):
        super().__init__(1.0, num_perm, ngram, cluster_threshold, cluster_on)

    def params(self) -> dict[str, Any]:
        params = super().params()
        for key in ("threshold", "keep", "bands", "rows"):  # it drops nothing
            del params[key]
        return params

    def verdicts(
        self,
        keys: pa.Table,
        edges_of: Callable[[str, float], np.ndarray],
        similarity: Callable[[np.ndarray], np.ndarray],
    ) -> Verdicts:
        clustered = cluster_ids(keys, keys.num_rows, self.loose_edges(edges_of))
        return Verdicts.keep_all(keys.num_rows).with_columns(pa.table({"cluster": clustered}))
