"""Benchmark: the build report's cost, and the review app's pages on a ledger of 1M rows.

A generated chat source of N rows (default 1,050,000) whose rows repeat 50,000 distinct ones,
so exact dedup leaves a ledger of ~1M rejected rows. Then, in one run:

- the build twice in fresh stores, with the report and with `--no-report`: the report
  phase's seconds (the build's own clock, `timings.report`) beside the whole build's; then
  a no-op rebuild, which takes the report it made before;
- `curate review serve` started as a user starts it (the CLI, a subprocess), and its pages
  fetched over HTTP: the first list page (cold: precision per rule included), a page deep
  in the list, one row with its evidence, a full-text search; each beside the peer a user
  would otherwise reach for on the same ledger files: pandas (read_parquet, filter by
  reason, sort, first 50) and polars (scan_parquet, the same).

    python bench/review.py [--rows 1050000] [--distinct 50000]

Target (issue 17): the first page < 300 ms on a 1M-row ledger.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from build import WORDS  # bench/ is on the path: scripts run as python bench/X.py

CURATE = [sys.executable, "-m", "curate"]


def make_source(path: Path, rows: int, distinct: int) -> None:
    rng = np.random.default_rng(0)
    words = np.array(WORDS)  # bench/build.py's vocabulary
    texts = [" ".join(rng.choice(words, 12)) + f" item {i}" for i in range(distinct)]
    picks = np.concatenate([np.arange(distinct), rng.integers(0, distinct, rows - distinct)])
    with path.open("w") as fh:
        for k in picks:
            q = texts[k]
            fh.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": q},
                            {"role": "assistant", "content": "answer " + q},
                        ]
                    }
                )
                + "\n"
            )


def build(config: Path, store: Path, *extra: str) -> dict:
    out = subprocess.run(
        [*CURATE, "build", str(config), "--store", str(store), "--json", *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    mid = json.loads(out.stdout)["manifest_id"]
    run = json.loads((store / "manifests" / f"{mid}.run.json").read_text())
    return {"id": mid, "seconds": run["seconds"], "report": run["timings"].get("report", 0.0)}


def fetch(url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = resp.read()
    return time.perf_counter() - t0, len(body)


def peers(ledger: list[str], reason: str, offset: int) -> dict[str, float]:
    import pandas as pd
    import polars as pl

    out = {}
    t0 = time.perf_counter()
    df = pd.concat(
        [
            pd.read_parquet(p, columns=["id", "source", "stage", "reason", "detail", "messages"])
            for p in ledger
        ]
    )
    df[df.reason == reason].sort_values("id").iloc[offset : offset + 50]
    out["pandas"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    (
        pl.scan_parquet(ledger)
        .filter(pl.col("reason") == reason)
        .sort("id")
        .slice(offset, 50)
        .select("id", "source", "stage", "reason", "detail", "messages")
        .collect()
    )
    out["polars"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_050_000)
    ap.add_argument("--distinct", type=int, default=50_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-review-"))
    make_source(work / "chat.jsonl", args.rows, args.distinct)
    config = work / "mixture.toml"
    config.write_text(
        '[build]\nname = "bench"\nseed = 1\n\n[[sources]]\nname = "chat"\npath = "chat.jsonl"\nformat = "chat"\n\n[dedup]\nexact = true\n'
    )
    bare = build(config, work / "bare", "--no-report")
    full = build(config, work / "store")
    print(
        f"build of {args.rows:,} rows: {full['seconds']:.1f} s with the report, {bare['seconds']:.1f} s without"
    )
    print(
        f"RESULT report phase {full['report']:.2f} s = {full['report'] / full['seconds']:.1%} of the build"
    )
    again = build(config, work / "store")  # nothing changed: the report is taken from the cache
    assert again["id"] == full["id"]
    print(
        f"RESULT no-op rebuild {again['seconds']:.2f} s, its report phase {again['report']:.3f} s"
    )

    env = {**os.environ, "CI": "true"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            *CURATE,
            "review",
            "serve",
            full["id"],
            "--store",
            str(work / "store"),
            "--decisions",
            str(work / "d.jsonl"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = re.search(r"http://\S+", proc.stdout.readline()).group(0)  # type: ignore[union-attr]
        started = time.perf_counter() - t0
        base, token = url.split("/?")
        first, size = fetch(url)
        pages = {
            "first list page (cold)": (first, size),
            "first list page (warm)": fetch(url),
            "page at row 500,000": fetch(f"{base}/?{token}&reason=exact_duplicate&offset=500000"),
            "row 123,456 with its twin": fetch(
                f"{base}/row?{token}&reason=exact_duplicate&i=123456"
            ),
            "search 'item 4242'": fetch(f"{base}/?{token}&q=item+4242"),
        }
    finally:
        proc.terminate()
        proc.wait(10)
    from curate import api

    manifest = api.open_manifest(full["id"], work / "store")
    ledger = [str(p) for p in manifest.ledger_paths()]
    rows = manifest.data["ledger"]["rows"]
    print(f"review serve on a ledger of {rows:,} rows: ready (URL printed) in {started:.2f} s")
    for name, (seconds, size) in pages.items():
        print(f"RESULT {name}: {seconds * 1000:.0f} ms ({size:,} bytes)")
    peer = peers(ledger, "exact_duplicate", 500_000)
    deep = pages["page at row 500,000"][0]
    for who, seconds in peer.items():
        print(
            f"RESULT peer {who}, the same page of rows: {seconds * 1000:.0f} ms · curate {seconds / deep:.1f}× faster"
        )
    print(
        f"target: first page < 300 ms: {'met' if first < 0.3 else 'NOT met'} ({first * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
