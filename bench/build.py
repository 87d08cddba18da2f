"""Benchmark: `curate build` against plain pandas and polars scripts doing the same work.

All read the same generated chat JSONL sources (several files), normalize the content
(NFKC, case and whitespace folded), drop exact duplicates across sources, sample by source
weight, and write Parquet. Each runs as its own process; wall time and the peak RSS of its
whole process tree (curate's workers included) are measured, for N and 4N rows. The
contenders take turns, `--repeat` times each, and each one's median run is reported (the
highest peak RSS). polars (read_ndjson, unique on the normalized text, sample,
write_parquet) is what a user would reach for today; pandas is the classic baseline.

    python bench/build.py [--rows 200000] [--sources 4] [--workers N] [--repeat 3]

Then curate builds again on the store its last cold run left (issue 14's incremental
rebuilds): with nothing changed (`--repeat` times, the median reported), and with one row of
one source changed. Each is timed as a whole process (what a user waits for, interpreter
start and imports included) and by the build's own clock (`seconds` in its --json: the
phases alone), each beside the cold build's.

Targets (issue 3): curate ≥ 3× the pandas script's rows/s; curate's peak RSS at 4N ≤ 1.5×
its peak RSS at N. Issue 14: a no-op rebuild at N takes ≤ 15% of a cold build's time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "at",
    "this",
    "are",
    "from",
    "or",
    "have",
    "an",
    "they",
    "which",
    "one",
    "you",
    "were",
    "her",
    "all",
    "she",
    "there",
    "would",
    "their",
    "we",
    "him",
    "been",
    "has",
    "when",
    "who",
    "will",
    "more",
    "no",
    "if",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "sync",
    "folder",
    "error",
    "login",
    "password",
    "upload",
    "share",
    "link",
    "cache",
    "settings",
    "restart",
    "update",
    "version",
]


def generate(folder: Path, rows: int, sources: int, seed: int = 0) -> list[Path]:
    """`rows` chat rows over `sources` JSONL files; about 10% are exact or case/space-changed copies."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    paths = []
    per = rows // sources
    for s in range(sources):
        n = per if s < sources - 1 else rows - per * (sources - 1)
        q_len = rng.integers(8, 40, n)
        a_len = rng.integers(40, 160, n)
        q_words = words[rng.integers(0, len(words), int(q_len.sum()))]
        a_words = words[rng.integers(0, len(words), int(a_len.sum()))]
        q_cut, a_cut = np.cumsum(q_len)[:-1], np.cumsum(a_len)[:-1]
        questions = [" ".join(w) for w in np.split(q_words, q_cut)]
        answers = [" ".join(w) for w in np.split(a_words, a_cut)]
        dup = rng.random(n) < 0.10
        src = rng.integers(0, max(n, 1), n)
        path = folder / f"source{s}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for i in range(n):
                q, a = questions[i], answers[i]
                if dup[i] and src[i] < i:
                    q, a = questions[src[i]], answers[src[i]]
                    if i % 2:
                        q = "  " + q.upper()
                row = {
                    "messages": [
                        {"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": a},
                    ],
                    "id": f"{s}-{i}",
                }
                fh.write(json.dumps(row) + "\n")
        paths.append(path)
    return paths


PANDAS_SCRIPT = textwrap.dedent(
    """
    import json, sys, unicodedata
    import pandas as pd
    paths, weights, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    frames = []
    for rank, path in enumerate(paths):
        df = pd.read_json(path, lines=True)
        df["source"] = rank
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    def key(messages):
        text = "\\x1e".join(m["role"] + "\\x1f" + m["content"] for m in messages)
        return " ".join(unicodedata.normalize("NFKC", text).lower().split())
    df["key"] = df["messages"].map(key)
    df = df.drop_duplicates("key", keep="first").drop(columns="key")
    total_w = sum(weights)
    available = df.groupby("source").size()
    total = min(available[r] / (w / total_w) for r, w in enumerate(weights))
    parts = [g.sample(n=int(total * weights[r] / total_w), random_state=13) for r, g in df.groupby("source")]
    df = pd.concat(parts).sample(frac=1.0, random_state=13)
    df.to_parquet(out)
    print(len(df))
    """
)


POLARS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import polars as pl
    paths, weights, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    df = pl.concat(
        [pl.read_ndjson(p).with_columns(pl.lit(r).alias("source")) for r, p in enumerate(paths)],
        how="diagonal_relaxed",
    )
    # the same whitespace as Python's str.split(), which also folds \\x1c-\\x1f
    turn = pl.element().struct.field("role") + "\x1f" + pl.element().struct.field("content")
    key = (
        pl.col("messages").list.eval(turn).list.join("\x1e")
        .str.normalize("NFKC").str.to_lowercase()
        .str.replace_all(r"[\\s\\x1c-\\x1f]+", " ").str.strip_chars()
    )
    df = df.with_columns(key.alias("key")).unique("key", keep="first", maintain_order=True).drop("key")
    total_w = sum(weights)
    available = dict(df.group_by("source").len().iter_rows())
    total = min(available[r] / (w / total_w) for r, w in enumerate(weights))
    parts = [
        df.filter(pl.col("source") == r).sample(n=int(total * w / total_w), seed=13)
        for r, w in enumerate(weights)
    ]
    df = pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=13)
    df.write_parquet(out)
    print(df.height)
    """
)


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of the process tree, stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0.0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                total = root.memory_info().rss + sum(
                    c.memory_info().rss for c in root.children(recursive=True)
                )
                peak = max(peak, total / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return seconds, peak, out


def bench(rows: int, sources: int, workers: int | None, root: Path, repeat: int) -> dict[str, Any]:
    data = root / f"data-{rows}"
    data.mkdir(parents=True, exist_ok=True)
    paths = generate(data, rows, sources)
    weights = [1.0 + i for i in range(sources)]
    config = data / "mixture.toml"
    lines = ['[build]\nname = "bench"\nseed = 13\n']
    for i, p in enumerate(paths):
        lines.append(
            f'[[sources]]\nname = "s{i}"\npath = "{p.name}"\nformat = "chat"\nweight = {weights[i]}\n'
        )
    lines.append("[dedup]\nexact = true\n")
    config.write_text("\n".join(lines))
    os.sync()  # flush the generated files now, so neither contender pays for their write-back

    store = root / f"store-{rows}"
    cmd = [sys.executable, "-m", "curate", "build", str(config), "--store", str(store), "--json"]
    if workers:
        cmd += ["--workers", str(workers)]
    env = {**os.environ, "CI": "true"}
    peers = {
        name: [
            sys.executable,
            "-c",
            script,
            json.dumps([str(p) for p in paths]),
            json.dumps(weights),
            str(root / f"{name}.parquet"),
        ]
        for name, script in (("pandas", PANDAS_SCRIPT), ("polars", POLARS_SCRIPT))
    }
    # the contenders take turns, `repeat` times each: each one's median run is reported
    # (this machine's speed drifts by ±10% from one run to the next)
    runs: dict[str, list[tuple[float, float, str]]] = {"curate": [], **{n: [] for n in peers}}
    for _ in range(repeat):
        shutil.rmtree(store, ignore_errors=True)
        runs["curate"].append(run_measured(cmd, env))
        for name, peer in peers.items():
            runs[name].append(run_measured(peer))
    result: dict[str, Any] = {"rows": rows, "rebuild": rebuilds(cmd, env, paths, runs, repeat)}
    for name, measured in runs.items():
        sec, _, out = sorted(measured)[len(measured) // 2]
        result[name] = {
            "rows_s": rows / sec,
            "rss": max(r for _, r, _ in measured),
            "out": json.loads(out)["counts"]["rows_out"] if name == "curate" else int(out),
            "all": [round(rows / s) for s, _, _ in measured],
        }
    return result


def rebuilds(
    cmd: list[str],
    env: dict[str, str],
    paths: list[Path],
    runs: dict[str, list[tuple[float, float, str]]],
    repeat: int,
) -> dict[str, Any]:
    """Rebuilds on the store the last cold run left: unchanged, then one source changed.
    Wall and build seconds of each, with the cold runs' medians."""

    def clocked(measured: list[tuple[float, float, str]]) -> tuple[float, float, dict]:
        wall = sorted(m[0] for m in measured)[len(measured) // 2]
        reports = [json.loads(m[2]) for m in measured]
        own = sorted(r["seconds"] for r in reports)[len(reports) // 2]
        return wall, own, reports[-1]

    cold_wall, cold_own, cold = clocked(runs["curate"])
    noop_wall, noop_own, noop = clocked([run_measured(cmd, env) for _ in range(repeat)])
    assert noop["manifest_id"] == cold["manifest_id"], "a no-op rebuild changed the build"
    with open(paths[1], "rb+") as fh:  # one row of one source: its id's last character
        fh.seek(-4, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-4, os.SEEK_END)
        fh.write(b"X" if last != b"X" else b"Y")
    changed_wall, changed_own, changed = clocked([run_measured(cmd, env)])
    store = Path(cmd[cmd.index("--store") + 1])
    cache = json.loads((store / "manifests" / f"{changed['manifest_id']}.run.json").read_text())
    return {
        "cold": (cold_wall, cold_own),
        "noop": (noop_wall, noop_own),
        "changed": (changed_wall, changed_own),
        "changed_cache": cache["cache"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated data and stores")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender per size")
    args = parser.parse_args()
    # Measure curate as an installed package runs: with its bytecode compiled, as pip does
    # for installed packages (an editable install under PYTHONDONTWRITEBYTECODE never is).
    import compileall

    import curate

    compileall.compile_dir(str(Path(curate.__file__).parent), quiet=1)
    root = Path(tempfile.mkdtemp(prefix="curate-bench-"))
    try:
        results = [
            bench(n, args.sources, args.workers, root, args.repeat)
            for n in (args.rows, 4 * args.rows)
        ]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"machine: {os.cpu_count()} cores; curate workers: {args.workers or 'default (all cores)'}"
    )
    names = ("curate", "pandas", "polars")
    print(
        f"{'rows':>9} | "
        + " | ".join(f"{n + ' rows/s':>14} {'peak MiB':>9}" for n in names)
        + f" | {'vs pandas':>9} {'vs polars':>9}"
    )
    for r in results:
        cells = " | ".join(f"{r[n]['rows_s']:>14,.0f} {r[n]['rss']:>9,.0f}" for n in names)
        ratios = [r["curate"]["rows_s"] / r[n]["rows_s"] for n in ("pandas", "polars")]
        print(f"{r['rows']:>9} | {cells} | {ratios[0]:>8.2f}x {ratios[1]:>8.2f}x")
    for r in results:
        print(
            f"{r['rows']:>9} rows/s of each run: " + ", ".join(f"{n} {r[n]['all']}" for n in names)
        )
    small, large = results
    print(
        "peak RSS 4N / N: "
        + ", ".join(f"{n} {large[n]['rss'] / small[n]['rss']:.2f}" for n in names)
        + " (curate's target <= 1.5)"
    )
    print(
        "rows out (N / 4N): "
        + ", ".join(f"{n} {small[n]['out']} / {large[n]['out']}" for n in names)
    )
    worst = min(r["curate"]["rows_s"] / r["pandas"]["rows_s"] for r in results)
    print(f"speed ratio vs pandas target >= 3x: {'met' if worst >= 3 else 'NOT met'}")
    print("rebuilds on the same store (wall: the whole process; build: its phases alone):")
    for r in results:
        rb = r["rebuild"]
        (cw, co), (nw, no), (xw, xo) = rb["cold"], rb["noop"], rb["changed"]
        read = rb["changed_cache"]["blocks_read"]
        print(
            f"{r['rows']:>9} cold: wall {cw:.2f} s, build {co:.2f} s | no-op: wall {nw:.2f} s "
            f"({nw / cw:.0%} of cold), build {no:.2f} s ({no / co:.0%}) | one source changed: "
            f"wall {xw:.2f} s ({xw / cw:.0%}), build {xo:.2f} s ({xo / co:.0%}), "
            f"{read} block(s) read"
        )
    noop = results[0]["rebuild"]
    print(
        f"no-op rebuild <= 15% of cold at {results[0]['rows']}: wall "
        f"{'met' if noop['noop'][0] <= 0.15 * noop['cold'][0] else 'NOT met'}, build "
        f"{'met' if noop['noop'][1] <= 0.15 * noop['cold'][1] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
