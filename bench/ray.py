"""Benchmark: the same builds on the local engine and on Ray, with 1 and 2 workers.

Two builds, each run through the CLI (`curate build ... --json`) in a fresh store, startup
and output included, once per contender:
- build: bench/build.py's 200,000 generated chat rows in 4 sources, exact dedup, weights;
- near: bench/dedup.py's 100,000 rows (20,779 real rows of ../shared/data and edited
  copies), near dedup at 0.8 (on Ray its bands resolve as tasks from the workers' files).
Contenders: `--engine local --workers N` and `--engine ray --workers N` (a Ray started by
the command on this machine: `--address local`), N = 1, 2. Printed per build: rows/s, the
ratio to the local engine with as many workers, the scaling from 1 to 2 workers, peak RSS of
the process tree (Ray's own processes included), the seconds Ray's start and stop took, the
phases' seconds, and whether every contender wrote the same manifest id (it must).

    python bench/ray.py [--rows 200000] [--near-rows 100000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from build import generate, run_measured  # bench/ is on the path: run as python bench/ray.py
from dedup import load_real, replicate

CONTENDERS = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]


def build_config(folder: Path, rows: int) -> Path:
    paths = generate(folder, rows, 4)
    lines = ['[build]\nname = "bench"\nseed = 13\n']
    for i, p in enumerate(paths):
        lines.append(f'[[sources]]\nname = "s{i}"\npath = "{p.name}"\nweight = {1.0 + i}\n')
    lines.append("[dedup]\nexact = true\n")
    config = folder / "mixture.toml"
    config.write_text("\n".join(lines))
    return config


def near_config(folder: Path, rows: int) -> Path:
    with open(folder / "near.jsonl", "w", encoding="utf-8") as fh:
        for prompt, answer in replicate(load_real(), rows):
            turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            fh.write(json.dumps({"messages": turns}) + "\n")
    config = folder / "mixture.toml"
    config.write_text(
        '[build]\nname = "near"\nseed = 13\n\n[[sources]]\nname = "near"\npath = "near.jsonl"\n\n'
        "[dedup]\nexact = false\nnear = { threshold = 0.8 }\n"
    )
    return config


def run(config: Path, engine: str, workers: int, store: Path) -> dict[str, Any]:
    shutil.rmtree(store, ignore_errors=True)
    cmd = [sys.executable, "-m", "curate", "build", str(config), "--store", str(store)]
    cmd += ["--engine", engine, "--workers", str(workers), "--json"]
    seconds, rss, out = run_measured(cmd, {"CI": "true", **dict(__import__("os").environ)})
    result = json.loads(out)
    record = json.loads((store / "manifests" / f"{result['manifest_id']}.run.json").read_text())
    phases = record["timings"]
    return {
        "id": result["manifest_id"],
        "rows": result["counts"]["rows_in"],
        "seconds": seconds,
        "rss": rss,
        "phases": phases,
        # the build's own clock starts before its engine does and stops after
        "engine_s": record["seconds"] - sum(phases.values()),
    }


def report(name: str, runs: dict[tuple[str, int], dict[str, Any]]) -> None:
    rows = next(iter(runs.values()))["rows"]
    print(f"\n{name}: {rows:,} rows")
    print(
        f"{'contender':>16} | {'rows/s':>8} | {'vs local':>8} | {'1->2 workers':>12} | "
        f"{'peak RSS':>9} | {'engine start+stop':>17} | phases (s)"
    )
    for (engine, workers), r in runs.items():
        local = runs[("local", workers)]
        one = runs[(engine, 1)]
        phases = " ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())
        print(
            f"{engine + ', ' + str(workers) + ' worker' + 's' * (workers > 1):>16} | "
            f"{rows / r['seconds']:>8,.0f} | {local['seconds'] / r['seconds']:>7.2f}x | "
            f"{one['seconds'] / r['seconds']:>11.2f}x | {r['rss']:>6,.0f} MiB | "
            f"{r['engine_s']:>15.1f} s | {phases}"
        )
    ids = {r["id"] for r in runs.values()}
    print(f"same manifest id on every contender: {'yes' if len(ids) == 1 else 'NO: ' + str(ids)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--near-rows", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated data and stores")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="curate-bench-ray-"))
    try:
        for name, make, rows in (
            ("build", build_config, args.rows),
            ("near", near_config, args.near_rows),
        ):
            folder = root / name
            folder.mkdir()
            config = make(folder, rows)
            runs = {
                (engine, workers): run(config, engine, workers, folder / f"{engine}-{workers}")
                for engine, workers in CONTENDERS
            }
            report(name, runs)
    finally:
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
