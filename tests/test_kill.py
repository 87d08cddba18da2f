"""kill -9 of a build at random points: no worker outlives it, the rerun gives the same
manifest, verify passes, and no temp is left in the store."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from curate.engines.stepcache import StepCache
from tests.conftest import chat, write_config, write_jsonl

CURATE = str(Path(sys.executable).with_name("curate"))


def _tagged(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("CURATE_KILL_TEST") == tag:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _build(cfg: Path, store: Path, tag: str) -> subprocess.Popen:
    temp = cfg.parent / "tmp"  # what a kill leaves (the forkserver's folder) stays here
    temp.mkdir(exist_ok=True)
    env = {**os.environ, "CI": "true", "CURATE_KILL_TEST": tag, "TMPDIR": str(temp)}
    env.pop("CURATE_STORE", None)
    return subprocess.Popen(
        [CURATE, "build", str(cfg), "--store", str(store), "--workers", "2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kills", [8, pytest.param(20, marks=pytest.mark.release, id="release-20")])
def test_sigkill_at_random_points_leaves_nothing_behind(tmp_path, kills):
    rng = random.Random(12)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa"]
    for f in range(3):
        write_jsonl(
            tmp_path / f"d{f}.jsonl",
            [
                chat(" ".join(rng.choice(words) for _ in range(25)), f"answer {i % 900}")
                for i in range(8000)
            ],
        )
    write_jsonl(tmp_path / "eval.jsonl", [{"q": " ".join(words * 3)}])
    cfg = write_config(
        tmp_path,
        [{"name": "d", "path": "d*.jsonl"}],
        extra='[dedup]\nnear = { threshold = 0.9 }\n[[evals]]\nname = "e"\npath = "eval.jsonl"\n'
        'fields = ["q"]\n[split]\nvalidation = 0.1\n',
    )
    reference = _build(cfg, tmp_path / "ref", "ref")
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    expected = json.loads(out)["manifest_id"]
    store = tmp_path / "store"
    started = time.monotonic()
    _build(cfg, tmp_path / "timing", "timing").communicate(timeout=300)
    duration = time.monotonic() - started
    for k in range(kills):
        tag = f"kill-{k}"
        proc = _build(cfg, store, tag)
        time.sleep(rng.uniform(0.05, duration))
        proc.send_signal(signal.SIGKILL)  # the main process only, as `kill -9 PID` does
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while _tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _tagged(tag) == [], f"kill {k}: workers outlived their build"
    rerun = _build(cfg, store, "rerun")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert json.loads(out)["manifest_id"] == expected
    done = subprocess.run(
        [CURATE, "verify", expected, "--store", str(store)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    time.sleep(2.1)  # temps younger than the sweep's minimum age are left for the next run
    # the step cache the kills left: every entry with a record is whole (a kill before the
    # record leaves parts nothing names), and the next rebuild takes all of it
    steps = StepCache(str(store / "cache" / "steps"), str(tmp_path))
    records = [p for p in steps.root.rglob("*.json") if not p.name.endswith(".outputs.json")]
    assert records and all(steps.load_tables(p.name.removesuffix(".json")) for p in records)
    again = _build(cfg, store, "again")
    assert again.communicate(timeout=300) and again.returncode == 0
    run = json.loads((store / "manifests" / f"{expected}.run.json").read_text())
    assert run["cache"]["segments_run"] == 0 and run["cache"]["outputs_reused"] == 1
    leftovers = [p for p in store.rglob("*") if ".curate-tmp-" in p.name or p.name.endswith(".tmp")]
    assert leftovers == []
    assert list((store / "tmp").iterdir()) == []
