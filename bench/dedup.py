"""Benchmark: near-duplicate dedup against datasketch, and semantic dedup against its model.

Data: every real instruction row in ../shared/data/instruct (GPTeacher toolformer and
role-play, the Alpaca seed tasks, GSM8K train: 18,467 rows) and the hh-rlhf harmless test
transcripts from ../shared/data/safety (2,312), 20,779 real rows in all, replicated to
`--rows` (default 100,000) by copies with word-level edits (deletions, insertions,
substitutions, a sentence swap; 0 to 8% of the words), so that pairs fall on both sides of
the threshold.

Near duplicates, both contenders on one core, in this process, on the same texts:
- datasketch: `MinHash(num_perm=128).update_batch` over 5-word shingles, `MinHashLSH
  (threshold=0.8)` insert then query of every document;
- curate: its near-dup step as a build runs it (`keys` over blocks of 16,384 rows read
  memory-mapped from Arrow IPC files, as a build's workers read them: normalization, word
  hashes, one-permutation MinHash, band hashes; `resolve`: LSH buckets, exact-Jaccard
  verification, clusters, keep policy).
Ground truth: every pair with exact Jaccard ≥ 0.8 on the 5-word shingle sets (normalized as
curate and the tests define it), found exactly with prefix filtering (all-pairs similarity
join) and checked pair by pair with Python sets. Precision and recall over those pairs:
curate's verified pairs; datasketch's LSH answers as its users get them (unverified). And
over clusters (pair counting: two rows in one cluster of the contender and of the ground
truth's connected components), which is what a dedup acts on. curate is timed on one core
(the peer's) and on two (a build's process pool).

Semantic duplicates (`--semantic-rows`, default 3,000 real rows drawn across the sources): rows/s of curate's
step (embedding with all-MiniLM-L6-v2 on two worker processes + faiss search) beside plain
`SentenceTransformer.encode` of the same texts with two threads (the floor).

    python bench/dedup.py [--rows 100000] [--semantic-rows 3000] [--skip-semantic]

Targets (issue 5): curate ≥ 25× datasketch docs/s; precision ≥ 0.99, recall ≥ 0.95.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import time
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
THRESHOLD, NUM_PERM, NGRAM = 0.8, 128, 5
BLOCK = 16_384


def load_real() -> list[tuple[str, str]]:
    """(prompt, answer) of every real row."""
    rows: list[tuple[str, str]] = []
    for name in (
        "gpteacher_toolformer-dedupe-only-dataset.json",
        "gpteacher_roleplay-simple-deduped-roleplay-dataset.json",
    ):
        for r in json.loads((DATA / "instruct" / name).read_text()):
            prompt = r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")
            rows.append((prompt, r["output"]))
    for line in (DATA / "instruct/alpaca_seed_tasks.jsonl").read_text().splitlines():
        r = json.loads(line)
        inst = r["instances"][0]
        rows.append(
            (r["instruction"] + ("\n\n" + inst["input"] if inst["input"] else ""), inst["output"])
        )
    for line in (DATA / "instruct/gsm8k/train.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append((r["question"], r["answer"]))
    raw = gzip.decompress((DATA / "safety/hh_rlhf_harmless_base_test.jsonl.gz").read_bytes())
    for line in raw.decode().splitlines():
        chosen = json.loads(line)["chosen"]
        head, _, tail = chosen.partition("\n\nAssistant:")
        rows.append((head.replace("\n\nHuman:", "").strip(), tail.strip()))
    return rows


def edit(rng: np.random.Generator, text: str, vocab: list[str]) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", text)
    if len(sentences) > 2 and rng.random() < 0.3:
        i, j = rng.choice(len(sentences), 2, replace=False)
        sentences[i], sentences[j] = sentences[j], sentences[i]
    words = " ".join(sentences).split()
    k = int(round(len(words) * rng.uniform(0.0, 0.08)))
    for _ in range(k):
        if not words:
            break
        i = int(rng.integers(len(words)))
        kind = rng.integers(3)
        if kind == 0 and len(words) > 1:
            del words[i]
        elif kind == 1:
            words.insert(i, vocab[int(rng.integers(len(vocab)))])
        else:
            words[i] = vocab[int(rng.integers(len(vocab)))]
    return " ".join(words)


def replicate(real: list[tuple[str, str]], total: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    vocab = sorted({w for _, a in real[:2000] for w in a.split()})
    rows = list(real)
    while len(rows) < total:
        prompt, answer = real[int(rng.integers(len(real)))]
        if rng.random() < 0.5:
            answer = edit(rng, answer, vocab)
        else:
            prompt = edit(rng, prompt, vocab)
        rows.append((prompt, answer))
    return rows[:total]


def doc_text(row: tuple[str, str]) -> str:
    return row[0] + "\n" + row[1]  # what curate's near-dup reads: the turns, joined


def shingle_strings(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)
    words = re.sub(r"[^\w]+|_", " ", text).split()
    if len(words) < NGRAM:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)]


def ground_truth(docs: list[list[str]]) -> set[tuple[int, int]]:
    """Every pair with exact Jaccard ≥ THRESHOLD: prefix filtering, then set checks."""
    import math

    import polars as pl

    ids: dict[str, int] = {}
    sets = [frozenset(ids.setdefault(s, len(ids)) for s in doc) for doc in docs]
    freq = np.zeros(len(ids), dtype=np.int64)
    for s in sets:
        for t in s:
            freq[t] += 1
    doc_col, tok_col = [], []
    for d, s in enumerate(sets):
        if not s:
            continue
        ordered = sorted(s, key=lambda t: (freq[t], t))  # rare tokens first
        prefix = len(s) - math.ceil(THRESHOLD * len(s) - 1e-9) + 1
        doc_col += [d] * prefix
        tok_col += ordered[:prefix]
    frame = pl.DataFrame({"doc": doc_col, "tok": tok_col})
    pairs = (
        frame.join(frame, on="tok", suffix="_b")
        .filter(pl.col("doc") < pl.col("doc_b"))
        .select("doc", "doc_b")
        .unique()
    )
    truth = set()
    for a, b in pairs.iter_rows():
        x, y = sets[a], sets[b]
        if len(x & y) >= THRESHOLD * len(x | y) - 1e-9:
            truth.add((a, b))
    return truth


def run_datasketch(texts: list[str]) -> tuple[float, set[tuple[int, int]]]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    sigs = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch([s.encode() for s in set(shingle_strings(text))])
        lsh.insert(i, m)
        sigs.append(m)
    found = set()
    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if j != i:
                found.add((min(i, j), max(i, j)))
    return time.perf_counter() - t0, found


def chat_table(rows: list[tuple[str, str]]) -> pa.Table:
    from curate.rows import MESSAGES

    n = len(rows)
    messages = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": a}] for p, a in rows
    ]
    return pa.table(
        {
            "messages": pa.array(messages, MESSAGES),
            "chosen": pa.nulls(n, MESSAGES),
            "text": pa.nulls(n, pa.string()),
        }
    )


def _keys(block_file: str) -> pa.Table:
    from curate.dedup.minhash import NearDedup
    from curate.engines.passes import read_ipc

    return NearDedup(THRESHOLD, NUM_PERM, NGRAM).keys(read_ipc(block_file))


def run_curate(table: pa.Table, workers: int = 1) -> tuple[float, int, set[tuple[int, int]]]:
    """curate's near-dup step: keys per block (in `workers` processes), then resolve.

    As in a build, the blocks are Arrow IPC files before the step runs, which its workers
    read memory-mapped; their keys come back to the process that resolves them.
    """
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    from curate.dedup.minhash import NearDedup, band_buckets, candidate_pairs, jaccard
    from curate.engines.passes import write_ipc

    step = NearDedup(THRESHOLD, NUM_PERM, NGRAM)
    n = table.num_rows
    scratch = tempfile.TemporaryDirectory()
    blocks = []
    for s in range(0, n, BLOCK):
        blocks.append(str(Path(scratch.name) / f"block-{s}.arrow"))
        write_ipc(table.slice(s, BLOCK), Path(blocks[-1]))
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    warm = str(Path(scratch.name) / "warm.arrow")
    write_ipc(table.slice(0, 100), Path(warm))
    if pool is not None:
        list(pool.map(_keys, [warm] * workers))  # start and warm the workers
    else:
        _keys(warm)
    ids = pa.array([f"r{i}" for i in range(n)])  # the engine's index holds these already
    ranks = pa.array(np.zeros(n, dtype=np.int32))
    t0 = time.perf_counter()
    parts = list(pool.map(_keys, blocks)) if pool is not None else [_keys(b) for b in blocks]
    keys = pa.concat_tables(parts).append_column("id", ids).append_column("source_rank", ranks)
    verdicts = step.resolve(keys)
    seconds = time.perf_counter() - t0
    if pool is not None:
        pool.shutdown()
    scratch.cleanup()
    # the verified pairs behind those verdicts (same functions, outside the timing)
    band_hash = keys.column("bands").combine_chunks().flatten().to_numpy().reshape(n, step.bands)
    shingles = keys.column("shingles").combine_chunks()
    usable = np.diff(shingles.offsets.to_numpy()) > 0
    pairs = candidate_pairs(band_buckets(band_hash, usable), n)
    sims = jaccard(shingles, pairs)
    found = {(int(a), int(b)) for a, b in pairs[sims >= THRESHOLD]}
    return seconds, len(verdicts.rows), found


def cluster_quality(
    n: int, found: set[tuple[int, int]], truth: set[tuple[int, int]]
) -> tuple[float, float]:
    """Pair counting over clusters: pairs put in one cluster by both / by the contender /
    by the ground truth's connected components (what dedup acts on)."""
    import polars as pl

    from curate.dedup.clusters import clusters

    def labels(edges: set[tuple[int, int]]) -> np.ndarray:
        return clusters(n, np.array(sorted(edges), dtype=np.int64).reshape(-1, 2))

    frame = pl.DataFrame({"p": labels(found), "t": labels(truth)})

    def pairs(*by: str) -> int:
        sizes = frame.group_by(*by).len()["len"].to_numpy().astype(np.int64)
        return int((sizes * (sizes - 1) // 2).sum())

    both = pairs("p", "t")
    return both / max(pairs("p"), 1), both / max(pairs("t"), 1)


def dropped_by_truth(n: int, truth: set[tuple[int, int]]) -> int:
    """Rows a perfect dedup drops: per connected component, all but one."""
    from curate.dedup.clusters import clusters

    if not truth:
        return 0
    label = clusters(n, np.array(sorted(truth), dtype=np.int64))
    return n - len(np.unique(label))


def quality(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float]:
    hit = len(found & truth)
    return hit / max(len(found), 1), hit / max(len(truth), 1)


def sample(real: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """n real rows drawn across every source (seeded), in their order."""
    pick = np.sort(np.random.default_rng(1).choice(len(real), min(n, len(real)), replace=False))
    return [real[i] for i in pick]


def semantic(rows: list[tuple[str, str]]) -> None:
    import shutil
    import tempfile

    import curate
    from curate.dedup.semantic import resolve_model

    texts = [doc_text(r) for r in rows]
    model = resolve_model(None, ROOT)
    folder = Path(tempfile.mkdtemp(prefix="curate-bench-sem-"))
    try:
        with open(folder / "rows.jsonl", "w") as fh:
            for p, a in rows:
                row = {
                    "messages": [
                        {"role": "user", "content": p},
                        {"role": "assistant", "content": a},
                    ]
                }
                fh.write(json.dumps(row) + "\n")
        (folder / "mixture.toml").write_text(
            '[[sources]]\nname = "real"\npath = "rows.jsonl"\nformat = "chat"\n\n'
            "[dedup]\nexact = false\nsemantic = { threshold = 0.95 }\n"
        )
        os.environ["CI"] = "true"
        t0 = time.perf_counter()
        result = curate.build(folder / "mixture.toml", store=folder / "store", workers=2)
        build_s = time.perf_counter() - t0
        stage = next(s for s in result.manifest["stages"] if s["name"] == "semantic_dedup")
        dropped = sum(stage["rejected"].values())
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(2)
        encoder = SentenceTransformer(model.path, device="cpu")
        encoder.encode(texts[:64])
        t0 = time.perf_counter()
        encoder.encode(texts, batch_size=64, normalize_embeddings=True)
        floor_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    n = len(rows)
    print(
        f"semantic dedup, {n:,} real rows, 2 cores: curate build (read, embed on 2 workers, "
        f"faiss search, write) {n / build_s:,.0f} rows/s; plain SentenceTransformer.encode "
        f"(2 threads) {n / floor_s:,.0f} rows/s; curate/encode {floor_s / build_s:.2f}; "
        f"dropped at cosine >= 0.95: {dropped}"
    )


def main() -> None:
    # one thread per contender: the figures are per core (a build's workers do the same)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    pa.set_cpu_count(1)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--semantic-rows", type=int, default=3_000)
    parser.add_argument("--skip-semantic", action="store_true")
    parser.add_argument("--only-semantic", action="store_true")
    parser.add_argument(
        "--skip-peers", action="store_true", help="skip datatrove and text-dedup, end to end"
    )
    args = parser.parse_args()

    real = load_real()
    if args.only_semantic:
        semantic(sample(real, args.semantic_rows))
        return
    rows = replicate(real, args.rows)
    texts = [doc_text(r) for r in rows]
    table = chat_table(rows)
    t0 = time.perf_counter()
    truth = ground_truth([shingle_strings(t) for t in texts])
    truth_s = time.perf_counter() - t0
    print(
        f"rows {len(rows):,} ({len(real):,} real + {len(rows) - len(real):,} edited copies); "
        f"ground truth: {len(truth):,} pairs with exact Jaccard >= {THRESHOLD} "
        f"({dropped_by_truth(len(rows), truth):,} rows to drop), found in {truth_s:.1f} s"
    )
    c_s, c_dropped, c_found = run_curate(table)
    c2_s, _, _ = run_curate(table, workers=2)
    d_s, d_found = run_datasketch(texts)
    n = len(rows)
    print(
        f"{'':>18} | {'docs/s':>9} | {'pair precision':>14} | {'pair recall':>11} | "
        f"{'cluster precision':>17} | {'cluster recall':>14}"
    )
    for name, secs, found in (
        ("curate, 1 core", c_s, c_found),
        ("curate, 2 cores", c2_s, c_found),
        ("datasketch, 1 core", d_s, d_found),
    ):
        p, r = quality(found, truth)
        cp, cr = cluster_quality(n, found, truth)
        print(
            f"{name:>18} | {n / secs:>9,.0f} | {p:>14.4f} | {r:>11.4f} | {cp:>17.4f} | {cr:>14.4f}"
        )
    ratio, ratio2 = d_s / c_s, d_s / c2_s
    print(
        f"speed ratio vs datasketch: {ratio:.1f}x core for core, {ratio2:.1f}x with curate on 2 cores"
    )
    print(f"curate dropped {c_dropped:,} rows (clusters, keep one each)")
    p, r = quality(c_found, truth)
    print(
        f"targets: >= 25x: {'met' if ratio >= 25 else 'NOT met'} core for core, "
        f"{'met' if ratio2 >= 25 else 'NOT met'} on 2 cores; precision >= 0.99 and recall >= 0.95: "
        f"{'met' if p >= 0.99 and r >= 0.95 else 'NOT met'}"
    )
    if not args.skip_peers:
        import tempfile

        from peers import compare  # bench/ is on the path: run as python bench/dedup.py

        with tempfile.TemporaryDirectory(prefix="curate-peers-") as folder:
            compare(rows, truth, Path(folder))
    if not args.skip_semantic:
        semantic(sample(real, args.semantic_rows))


if __name__ == "__main__":
    main()
