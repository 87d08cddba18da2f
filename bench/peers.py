"""End to end near dedup, JSONL in, written output out: curate beside datatrove and text-dedup.

The peers are installed from the package index into an environment of their own
(bench/.peers, made on first use: datatrove[io,processing] 0.10.1 with spaCy, text-dedup
0.4.0), never into curate's. Every contender reads the same texts from JSONL and writes what
it keeps; each is timed from its command's start to its exit, startup and output included:
- curate: `curate build` (near dedup at 0.8, 128 permutations, 5-word shingles; its output
  shards and ledger in a fresh store), `--workers N`;
- datatrove: its four MinHash stages (signatures, buckets, clusters, filter) on the
  LocalPipelineExecutor with N tasks and workers, its default MinhashConfig (5-grams, 14
  buckets × 8 hashes), with a whitespace word tokenizer and with its default for English
  (spaCy), the kept documents written as JSONL;
- text-dedup: `python -m text_dedup.minhash` (threshold 0.8, 128 permutations, 5-grams,
  `--num_proc N`), the kept rows saved as a datasets folder.
Quality is over rows, which every contender gives: the rows it dropped, how many of them
have no duplicate at all in the ground truth (false drops), and, per connected component of
the ground truth (k rows: k - 1 to drop), how many of the rows to drop it dropped (recall).
Where a contender names each dropped row's cluster (curate, datatrove), pair precision over
(dropped row, the row it was clustered with) and the largest cluster's size too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ENV = HERE / ".peers"
PACKAGES = ["datatrove[io,processing]==0.10.1", "spacy>=3.7,<4", "text-dedup==0.4.0"]

DATATROVE = textwrap.dedent(
    """
    import json, sys
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
        MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text): return text.split()
        def sent_tokenize(self, text): return [text]
        def span_tokenize(self, text): raise NotImplementedError

    source, work, workers, tokenizer = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    config = MinhashConfig()
    language = Whitespace() if tokenizer == "whitespace" else "en"
    def reader(): return JsonlReader(source, id_key="id", text_key="text")
    def run(pipeline, tasks):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks),
                              logging_dir=f"{work}/logs/{len(pipeline)}-{tasks}",
                              skip_completed=False).run()
    run([reader(), MinhashDedupSignature(f"{work}/sigs", config=config, language=language)], workers)
    run([MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=config)], config.num_buckets)
    run([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=config,
                                 save_cluster_id=True)], 1)
    run([reader(), MinhashDedupFilter(f"{work}/remove", load_cluster_ids=True,
         exclusion_writer=JsonlWriter(f"{work}/removed", compression=None)),
         JsonlWriter(f"{work}/kept", compression=None)], workers)
    """
)
KEPT_IDS = "import datasets, json, sys; print(json.dumps(datasets.load_from_disk(sys.argv[1]).data.column('id').to_pylist()))"


def ensure_env() -> Path:
    """The peers' own interpreter, installed from the package index on first use."""
    python = ENV / "bin" / "python"
    stamp = ENV / ".installed"
    if not stamp.exists() or stamp.read_text() != json.dumps(PACKAGES):
        print(f"installing {', '.join(PACKAGES)} into {ENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
        stamp.write_text(json.dumps(PACKAGES))
    return python


def write_inputs(folder: Path, rows: list[tuple[str, str]]) -> tuple[Path, Path]:
    """The same rows as chat JSONL (curate's input) and as id/text JSONL (the peers'), the
    text being what curate's near dedup reads of a chat row: its turns joined by a newline."""
    chat, plain = folder / "rows.jsonl", folder / "texts.jsonl"
    with open(chat, "w", encoding="utf-8") as c, open(plain, "w", encoding="utf-8") as p:
        for i, (prompt, answer) in enumerate(rows):
            turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            c.write(json.dumps({"messages": turns}) + "\n")
            p.write(json.dumps({"id": str(i), "text": prompt + "\n" + answer}) + "\n")
    return chat, plain


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return seconds, out.stdout


def run_curate(chat: Path, folder: Path, workers: int) -> dict[str, Any]:
    config = folder / f"curate-{workers}.toml"
    config.write_text(
        f'[build]\nname = "near"\nseed = 1\n\n[[sources]]\nname = "rows"\npath = "{chat.name}"\n\n'
        "[dedup]\nexact = false\nnear = { threshold = 0.8 }\n"
    )
    store = folder / f"curate-store-{workers}"
    cmd = [sys.executable, "-m", "curate", "build", str(config), "--store", str(store)]
    seconds, out = timed([*cmd, "--workers", str(workers), "--json"], {**os.environ, "CI": "true"})
    import curate
    from curate.ledger import query

    manifest = curate.open_manifest(json.loads(out)["manifest_id"], store=store)
    # its other rejections (an empty answer) are not dedup's: those rows stay out of this
    dropped = query(
        manifest, "SELECT origin, detail FROM ledger WHERE reason = 'near_duplicate'"
    ).to_pylist()
    kept = query(manifest, "SELECT id, origin FROM rows").to_pylist()
    row_of = {r["id"]: _line(r["origin"]) for r in kept}
    pairs = [(_line(d["origin"]), row_of[json.loads(d["detail"])["duplicate_of"]]) for d in dropped]
    return {"seconds": seconds, "dropped": [a for a, _ in pairs], "pairs": pairs}


def _line(origin: str) -> int:
    return int(origin.rsplit(":", 1)[1]) - 1  # origins count lines from 1


def run_datatrove(
    python: Path, plain: Path, folder: Path, workers: int, tokenizer: str
) -> dict[str, Any]:
    work = folder / f"datatrove-{tokenizer}-{workers}"
    seconds, _ = timed(
        [str(python), "-c", DATATROVE, str(plain), str(work), str(workers), tokenizer]
    )
    removed, kept = _documents(work / "removed"), _documents(work / "kept")
    # a cluster's id is its kept document's position; every removed one names its cluster
    first = {}
    for doc in kept:
        cluster = doc["metadata"].get("minhash_cluster_id")
        if cluster is not None and cluster != -1:
            first[cluster] = int(doc["id"])
    pairs = []
    for doc in removed:
        cluster = doc["metadata"].get("minhash_cluster_id")
        pairs.append((int(doc["id"]), first.get(cluster, -1)))
    return {"seconds": seconds, "dropped": [a for a, _ in pairs], "pairs": pairs}


def _documents(folder: Path) -> list[dict[str, Any]]:
    # lines end at "\n" only: a text may hold U+2028 or other breaks that `splitlines` cuts at
    texts = [f.read_text(encoding="utf-8") for f in sorted(folder.glob("*.jsonl"))]
    return [json.loads(line) for text in texts for line in text.split("\n") if line]


def run_text_dedup(python: Path, plain: Path, folder: Path, workers: int, n: int) -> dict[str, Any]:
    out = folder / f"text-dedup-{workers}"
    cmd = [str(python), "-m", "text_dedup.minhash", "--path", "json", "--data_files", str(plain)]
    cmd += ["--split", "train", "--cache_dir", str(folder / f"hf-cache-{workers}")]
    cmd += ["--output", str(out), "--column", "text", "--threshold", "0.8", "--num_perm", "128"]
    cmd += ["--ngram", "5", "--num_proc", str(workers)]
    seconds, _ = timed(cmd, {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    _, listed = timed([str(python), "-c", KEPT_IDS, str(out)])
    kept = {int(i) for i in json.loads(listed)}
    return {"seconds": seconds, "dropped": [i for i in range(n) if i not in kept], "pairs": None}


def row_quality(n: int, result: dict[str, Any], truth: set[tuple[int, int]]) -> dict[str, Any]:
    from curate.dedup.clusters import clusters

    label = clusters(n, np.array(sorted(truth), dtype=np.int64).reshape(-1, 2))
    sizes = np.bincount(label)
    dropped = np.zeros(n, dtype=bool)
    dropped[result["dropped"]] = True
    alone = sizes[label] == 1
    per_component = np.bincount(label, weights=dropped)
    caught = np.minimum(per_component, np.maximum(sizes - 1, 0)).sum()
    out: dict[str, Any] = {
        "dropped": int(dropped.sum()),
        "false_drops": int((dropped & alone).sum()),
        "recall": float(caught / max((sizes - 1).sum(), 1)),
    }
    if result["pairs"] is not None:
        pairs = {(min(a, b), max(a, b)) for a, b in result["pairs"]}
        out["pair_precision"] = len(pairs & truth) / max(len(pairs), 1)
        by_kept = np.bincount([b for _, b in result["pairs"] if b >= 0], minlength=n)
        out["largest_cluster"] = int(by_kept.max()) + 1 if len(result["pairs"]) else 1
    return out


def compare(rows: list[tuple[str, str]], truth: set[tuple[int, int]], folder: Path) -> None:
    """Every contender with 1 and 2 workers; a table of docs/s and row quality."""
    python = ensure_env()
    folder.mkdir(parents=True, exist_ok=True)
    chat, plain = write_inputs(folder, rows)
    n = len(rows)
    runs: dict[str, dict[str, Any]] = {}
    for workers in (1, 2):
        runs[f"curate, {workers}w"] = run_curate(chat, folder, workers)
        for tokenizer in ("whitespace", "spacy"):
            runs[f"datatrove {tokenizer}, {workers}w"] = run_datatrove(
                python, plain, folder, workers, tokenizer
            )
        runs[f"text-dedup, {workers}w"] = run_text_dedup(python, plain, folder, workers, n)
    print(f"\nend to end, JSONL in, output written ({n:,} rows; peers in {ENV}):")
    print(
        f"{'contender':>24} | {'docs/s':>7} | {'vs curate':>9} | {'dropped':>7} | "
        f"{'false drops':>11} | {'row recall':>10} | {'pair precision':>14} | {'largest cluster':>15}"
    )
    for name, result in runs.items():
        q = row_quality(n, result, truth)
        mine = runs[f"curate, {name.rsplit(', ', 1)[1]}"]
        precision = f"{q['pair_precision']:.4f}" if "pair_precision" in q else "-"
        largest = f"{q['largest_cluster']:,}" if "largest_cluster" in q else "-"
        print(
            f"{name:>24} | {n / result['seconds']:>7,.0f} | "
            f"{result['seconds'] / mine['seconds']:>8.1f}x | {q['dropped']:>7,} | "
            f"{q['false_drops']:>11,} | {q['recall']:>10.4f} | {precision:>14} | {largest:>15}"
        )
    print(
        "(vs curate: the contender's seconds over curate's with as many workers; pair "
        "precision: of the pairs (dropped row, the row its cluster kept), those with Jaccard "
        ">= 0.8: a long chain lowers it even where every link is right)"
    )
