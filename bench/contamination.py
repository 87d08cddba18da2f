"""Benchmark: eval contamination against GSM8K test and HumanEval, beside a plain 13-gram peer.

Training rows: GSM8K train (same style as the eval set, different problems: the hard case
for false positives) and the two GPTeacher sets, all clean; plus every GSM8K test item and
every HumanEval problem planted verbatim, and again lightly edited (upper case, a
"Question:" prefix, thousands separators, doubled spaces, split across two turns). Both
contenders run in this process on one core, on the same rows:

- curate's contamination step (hashed word n-grams, vectorized with numpy and polars);
- the peer: GPT-3-style 13-gram decontamination as datatrove / open-instruct write it in
  Python (lower-cased whitespace words, a set of the eval items' 13-grams, a row flagged when
  it holds at least half of an item's 13-grams).

    python bench/contamination.py

Targets (issue 5): ≤ 20 µs per training row per core; recall ≥ 0.99 verbatim, ≥ 0.9 edited;
false positives ≤ 0.1% of clean rows.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def load() -> tuple[list[dict], list[dict], list[list[dict]], list[str]]:
    gsm = [json.loads(x) for x in (DATA / "evals/gsm8k/test.jsonl").read_text().splitlines()]
    he = [
        json.loads(x)
        for x in gzip.decompress((DATA / "evals/humaneval/HumanEval.jsonl.gz").read_bytes())
        .decode()
        .splitlines()
    ]
    clean: list[list[dict]] = []
    for line in (DATA / "instruct/gsm8k/train.jsonl").read_text().splitlines():
        r = json.loads(line)
        clean.append(
            [
                {"role": "user", "content": r["question"]},
                {"role": "assistant", "content": r["answer"]},
            ]
        )
    for name in (
        "gpteacher_toolformer-dedupe-only-dataset.json",
        "gpteacher_roleplay-simple-deduped-roleplay-dataset.json",
    ):
        for r in json.loads((DATA / "instruct" / name).read_text()):
            clean.append(
                [
                    {"role": "user", "content": r["instruction"] + "\n" + r["input"]},
                    {"role": "assistant", "content": r["output"]},
                ]
            )
    kinds = ["clean"] * len(clean)
    rows = list(clean)
    for q, a in [(r["question"], r["answer"]) for r in gsm] + [
        (r["prompt"], r["canonical_solution"]) for r in he
    ]:
        rows.append([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
        kinds.append("verbatim")
        edited_q = "Question: " + q.upper().replace("000", ",000").replace(" ", "  ")
        rows.append(
            [
                {"role": "user", "content": edited_q},
                {"role": "assistant", "content": "Answer: " + a},
            ]
        )
        kinds.append("edited")
    return gsm, he, rows, kinds


def peer(
    evals: list[str], rows: list[list[dict]], n: int = 13, threshold: float = 0.5
) -> list[bool]:
    index: dict[tuple[str, ...], set[int]] = defaultdict(set)
    totals = []
    for k, text in enumerate(evals):
        w = text.lower().split()
        grams = {tuple(w[i : i + n]) for i in range(max(1, len(w) - n + 1))}
        totals.append(len(grams))
        for g in grams:
            index[g].add(k)
    flagged = []
    for conv in rows:
        w = " ".join(t["content"] for t in conv).lower().split()
        seen: dict[int, set] = defaultdict(set)
        for i in range(max(1, len(w) - n + 1)):
            g = tuple(w[i : i + n])
            for k in index.get(g, ()):
                seen[k].add(g)
        flagged.append(any(len(s) / totals[k] >= threshold for k, s in seen.items()))
    return flagged


def main() -> None:
    # one thread per contender: the figures are per core (a build's workers do the same)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    pa.set_cpu_count(1)
    from curate.contamination.index import ContaminationStep, EvalSet
    from curate.rows import MESSAGES

    gsm, he, rows, kinds = load()
    evals = [
        EvalSet(
            "gsm8k",
            [str(i) for i in range(len(gsm))],
            [r["question"] + "\n" + r["answer"] for r in gsm],
            0,
        ),
        EvalSet(
            "humaneval",
            [r["task_id"] for r in he],
            [r["prompt"] + "\n" + r["canonical_solution"] for r in he],
            0,
        ),
    ]
    n = len(rows)
    table = pa.table(
        {
            "messages": pa.array(rows, MESSAGES),
            "chosen": pa.nulls(n, MESSAGES),
            "text": pa.nulls(n, pa.string()),
        }
    )
    t0 = time.perf_counter()
    step = ContaminationStep(evals, 13, 0.5)
    build_s = time.perf_counter() - t0
    step(table.slice(0, 100))  # warm up
    t0 = time.perf_counter()
    flagged = [False] * n
    for start in range(0, n, 4096):
        v = step(table.slice(start, 4096))
        for r in v.rows.tolist():
            flagged[start + r] = True
    curate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    peer_flags = peer(evals[0].texts + evals[1].texts, rows)
    peer_s = time.perf_counter() - t0

    def rates(flags: list[bool]) -> tuple[float, float, float]:
        def share(kind: str) -> float:
            picked = [f for f, k in zip(flags, kinds, strict=True) if k == kind]
            return sum(picked) / len(picked)

        return share("verbatim"), share("edited"), share("clean")

    print(
        f"rows {n:,} ({kinds.count('clean'):,} clean, {kinds.count('verbatim'):,} verbatim, {kinds.count('edited'):,} edited leaks); eval items {len(gsm) + len(he):,}; index built in {build_s:.2f} s"
    )
    print(
        f"{'':>8} | {'µs/row/core':>11} | {'recall verbatim':>15} | {'recall edited':>13} | {'false positives':>15}"
    )
    for name, secs, flags in (("curate", curate_s, flagged), ("peer", peer_s, peer_flags)):
        v, e, c = rates(flags)
        print(f"{name:>8} | {secs / n * 1e6:>11.1f} | {v:>15.4f} | {e:>13.4f} | {c:>14.3%}")
    print(f"speed ratio (peer time / curate time): {peer_s / curate_s:.2f}x")
    v, e, c = rates(flagged)
    ok = curate_s / n * 1e6 <= 20 and v >= 0.99 and e >= 0.9 and c <= 0.001
    print(f"targets (<= 20 µs, recall >= 0.99 / 0.9, FP <= 0.1%): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
