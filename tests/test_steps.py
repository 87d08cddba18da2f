"""The step interface: row steps and global steps plug into the pipeline in any order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import curate.pipeline
from curate.dedup.exact import ExactDedup
from curate.runner import segments
from curate.steps import GlobalStep, RowStep, Verdicts
from tests.conftest import build, chat, write_config, write_jsonl


class RejectsForbidden(RowStep):
    """A row step: answers holding FORBIDDEN are `invalid_format`."""

    name = "forbidden_words"
    stage = "validate"

    def __call__(self, batch: pa.Table) -> Verdicts:
        messages = batch.column("messages").combine_chunks()
        answers = pc.list_flatten(messages).field("content")
        parents = pc.list_parent_indices(messages).to_numpy()
        hit = pc.fill_null(pc.match_substring(answers, "FORBIDDEN"), False).to_numpy(
            zero_copy_only=False
        )
        rows = np.unique(parents[hit])
        return Verdicts.reject(
            batch.num_rows, rows, "invalid_format", [{"word": "FORBIDDEN"}] * len(rows)
        )


class KeepsShortest(GlobalStep):
    """A global step: among rows with the same answer, keep the one with the shortest question."""

    name = "shortest"
    stage = "shortest"

    def keys(self, batch: pa.Table) -> pa.Table:
        turns = batch.column("messages").to_pylist()
        return pa.table(
            {
                "answer": [t[-1]["content"] for t in turns],
                "qlen": [len(t[0]["content"]) for t in turns],
            }
        )

    def resolve(self, keys: pa.Table) -> Verdicts:
        best: dict[str, tuple[int, int]] = {}
        for i, (a, q) in enumerate(
            zip(keys.column("answer").to_pylist(), keys.column("qlen").to_pylist(), strict=True)
        ):
            if a not in best or q < best[a][0]:
                best[a] = (q, i)
        keep = {i for _, i in best.values()}
        rows = np.array([i for i in range(keys.num_rows) if i not in keep], dtype=np.int64)
        return Verdicts.reject(
            keys.num_rows, rows, "near_duplicate", [{"kept": "shortest"}] * len(rows)
        )


def test_segments_close_runs_of_row_steps_with_global_steps():
    a, b, g1, g2 = RejectsForbidden(), RejectsForbidden(), ExactDedup(), KeepsShortest()
    assert segments([a, g1, b, g2]) == [([a], g1), ([b], g2)]
    assert segments([g1, a]) == [([], g1), ([a], None)]
    assert segments([]) == [([], None)]


@pytest.fixture
def data(tmp_path):
    write_jsonl(
        tmp_path / "a.jsonl",
        [
            chat("q1", "FORBIDDEN answer"),
            chat("q1", "FORBIDDEN answer"),
            chat("long question", "same"),
            chat("q", "same"),
            chat("ok", "fine"),
        ],
    )
    return write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}])


def run_with(monkeypatch, cfg, steps):
    monkeypatch.setattr(
        curate.pipeline, "build_steps", lambda config, target=None, store=None: steps
    )
    return build(cfg, workers=1)


def by_origin(b):
    return {r["origin"]: (r["stage"], r["reason"]) for r in b.ledger}


def test_row_step_after_a_global_step(monkeypatch, data):
    b = run_with(monkeypatch, data, [ExactDedup(), RejectsForbidden()])
    assert by_origin(b) == {
        "a.jsonl:1": ("validate", "invalid_format"),
        "a.jsonl:2": ("exact_dedup", "exact_duplicate"),
    }
    names = [(s["name"], s["rows_in"], s["rows_out"]) for s in b.manifest["stages"]]
    assert names == [
        ("read", 5, 5),
        ("exact_dedup", 5, 4),
        ("forbidden_words", 4, 3),
        ("mixture", 3, 3),
        ("split", 3, 3),
    ]


def test_row_step_before_a_global_step_shadows_it(monkeypatch, data):
    b = run_with(monkeypatch, data, [RejectsForbidden(), ExactDedup()])
    assert by_origin(b) == {
        "a.jsonl:1": ("validate", "invalid_format"),
        "a.jsonl:2": ("validate", "invalid_format"),
    }


def test_custom_global_step_sees_only_alive_rows_in_canonical_order(monkeypatch, data):
    b = run_with(monkeypatch, data, [RejectsForbidden(), KeepsShortest()])
    assert by_origin(b)["a.jsonl:3"] == ("shortest", "near_duplicate")
    assert sorted(r["origin"] for r in b.rows) == ["a.jsonl:4", "a.jsonl:5"]


def test_run_steps_works_outside_a_build(tmp_path):
    """The public runner: dedup and PII over files of one's own, on an engine, no build."""
    from curate.dedup.exact import ExactDedup
    from curate.engines.local import LocalEngine
    from curate.progress import Progress
    from curate.runner import ReadStep, run_steps
    from curate.sources import plan_blocks, scan_file
    from curate.validators.pii import PiiStep

    path = write_jsonl(
        tmp_path / "logs.jsonl",
        [chat("hi", "mail me at jo@example.com"), chat("q", "a"), chat("q", "a")],
    )
    tasks, _ = plan_blocks("logs", "chat", ["logs.jsonl"], [scan_file(str(path))])
    with LocalEngine(1, Progress(enabled=False)) as engine:
        run = run_steps(
            engine,
            ReadStep({"logs": "chat"}),
            [PiiStep("redact"), ExactDedup()],
            tasks,
            [str(tmp_path / f"block-{i}.arrow") for i in range(len(tasks))],
            [0] * len(tasks),
            ["logs"],
            tmp_path,
        )
    index = run.index.sort("order")
    assert index["reason"].to_list() == [None, None, "exact_duplicate"]
    assert index["pii_types"].to_list()[0] == "email"
    assert [s.name for s in run.stages] == ["read", "pii", "exact_dedup"]


def test_a_pool_only_engine_runs_every_task_in_its_workers_in_order():
    """`pool_only`: results in the order of the items, none computed in this process
    (what a task leaves in a heap must not stay in the one that gathers the results)."""
    import os

    from curate.engines.local import LocalEngine

    with LocalEngine(2, pool_only=True) as engine:
        found = engine.map(_pid_and_square, [(i,) for i in range(9)], "squares")
    assert [square for _, square in found] == [i * i for i in range(9)]
    assert os.getpid() not in {pid for pid, _ in found}


def _pid_and_square(i: int) -> tuple[int, int]:
    import os

    return os.getpid(), i * i
