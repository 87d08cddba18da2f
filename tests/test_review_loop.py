"""The reviewers' loop: decisions recorded, fed to the next build, and measuring each rule."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from curate.review.decisions import append, latest, read, wilson
from tests.conftest import build, chat, write_config, write_jsonl

NEAR = "[dedup]\nnear = { threshold = 0.7 }\n"


def planted(tmp_path):
    """Ten distinct rows; row 10 a near twin of row 0, row 11 an exact copy of row 1, and
    row 12 with an empty answer."""
    data = [
        chat(f"question {i} about topic {i * 31}", f"the answer {i} is {i * 17}") for i in range(10)
    ]
    data.append(chat("question 0 about topic 0", "the answer 0 is 0 indeed"))
    data.append(chat("question 1 about topic 31", "the answer 1 is 17"))
    data.append(chat("question 12", ""))
    write_jsonl(tmp_path / "a.jsonl", data)
    return data


def decisions_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_decide_overrides_and_stats_end_to_end(tmp_path, cli):
    planted(tmp_path)
    cfg = write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=NEAR)
    first = build(cfg)
    store = str(tmp_path / ".store")
    near = first.rejected("near_duplicate")
    exact = first.rejected("exact_duplicate")
    empty = first.rejected("empty_response")
    assert len(near) == len(exact) == len(empty) == 1
    kept = sorted(r["id"] for r in first.rows)
    decisions = tmp_path / "review" / "decisions.jsonl"
    say = ["review", first.id, "--store", store, "--decide", "--reviewer", "ana"]
    assert cli(*say, "--id", near[0]["id"], "--keep", "--note", "answers differ").code == 0
    assert cli(*say, "--id", exact[0]["id"], "--reject").code == 0
    assert cli(*say, "--id", empty[0]["id"], "--keep").code == 0
    assert cli(*say, "--id", kept[3], "--reject", "--note", "wrong answer").code == 0
    assert cli(*say, "--id", "0123456789abcdef", "--reject").code == 2  # not in the build
    lines = decisions_of(decisions)  # beside the config, by default
    assert [(d["decision"], d["reason_reviewed"], d["reviewer"]) for d in lines] == [
        ("keep", "near_duplicate", "ana"),
        ("reject", "exact_duplicate", "ana"),
        ("keep", "empty_response", "ana"),
        ("reject", None, "ana"),
    ]
    assert all(d["manifest"] == first.id and d["time"] for d in lines)

    stats = cli("review", first.id, "--store", store, "--stats", "--json").json()
    by_rule = {(s["reason"], s["source"]): s for s in stats}
    assert by_rule[("near_duplicate", "a")] | {"interval": None} == {
        "reason": "near_duplicate",
        "source": "a",
        "rejected": 1,
        "reviewed": 1,
        "confirmed": 0,
        "overturned": 1,
        "precision": 0.0,
        "interval": None,
        "flagged": True,
        "uncertain": False,
    }
    assert by_rule[("exact_duplicate", "a")]["confirmed"] == 1

    # the next build reads the decisions, plus one from another reviewer about a row that
    # no longer exists
    append(decisions, [{"id": "feedfeedfeedfeed", "decision": "keep", "manifest": first.id}])
    extra = NEAR + '[[overrides]]\npath = "review/decisions.jsonl"\n'
    second = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=extra))
    out_ids = {r["id"] for r in second.rows}
    assert near[0]["id"] in out_ids  # restored
    assert kept[3] not in out_ids  # removed
    (removed,) = second.rejected("override_reject")
    assert removed["id"] == kept[3]
    assert second.detail(removed) == {
        "note": "wrong answer",
        "reviewer": "ana",
        "decision": "review/decisions.jsonl:4",
    }
    report = second.manifest["overrides"]
    assert report["overridden"] == [{"id": near[0]["id"], "reason": "near_duplicate"}]
    assert report["keep"]["refused"] == [{"id": empty[0]["id"], "reason": "empty_response"}]
    assert report["stale"] == {"count": 1, "ids": ["feedfeedfeedfeed"]}
    assert report["reject"] == {"applied": 1, "already_rejected": 1}
    assert report["files"][0]["decisions"] == 5 and len(report["files"][0]["sha256"]) == 64
    assert len(second.rows) == len(first.rows)  # one restored, one removed
    r = cli("build", str(tmp_path / "mixture.toml"), "--store", store, "--json")
    warnings = r.json()["warnings"]
    assert any("1 decided ids are not in this build" in w for w in warnings)
    assert any("1 keep decisions refused" in w for w in warnings)
    # the restored row still counts against its rule; the reviewers' own reject is no rule
    later = cli("review", second.id, "--store", store, "--stats", "--json").json()
    later_by_rule = {(s["reason"], s["source"]): s for s in later}
    assert later_by_rule[("near_duplicate", "a")]["overturned"] == 1
    assert later_by_rule[("near_duplicate", "a")]["rejected"] == 1
    assert not any(reason == "override_reject" for reason, _ in later_by_rule)


def test_a_restored_row_still_meets_the_later_steps(tmp_path, cli):
    """A keep overturns the reviewed verdict only: the row then meets contamination."""
    planted(tmp_path)
    (tmp_path / "eval.jsonl").write_text(
        json.dumps({"q": "question 0 about topic 0", "a": "the answer 0 is 0 indeed"}) + "\n"
    )
    evals = '[[evals]]\nname = "e"\npath = "eval.jsonl"\nfields = ["q", "a"]\n[contamination]\nngram = 3\n'
    cfg = write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=NEAR + evals)
    first = build(cfg)
    (near,) = first.rejected("near_duplicate")
    store = str(tmp_path / ".store")
    cli("review", first.id, "--store", store, "--decide", "--id", near["id"], "--keep")
    extra = NEAR + evals + '[[overrides]]\npath = "review/decisions.jsonl"\n'
    second = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=extra))
    rejected = {r["id"]: r["reason"] for r in second.ledger}
    assert rejected[near["id"]] == "contaminated"
    assert second.manifest["overrides"]["keep"]["rejected_for_another_reason"] == [
        {"id": near["id"], "reason": "contaminated"}
    ]


def test_interactive_review_keeps_undoes_and_quits(tmp_path, cli, monkeypatch):
    planted(tmp_path)
    first = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=NEAR))
    target = tmp_path / "d.jsonl"
    # k (with a note), u (back to it), r, s, q
    monkeypatch.setattr(sys, "stdin", io.StringIO("k twin differs\nu\nr\ns\nq\n"))
    args = ["review", first.id, "--store", str(tmp_path / ".store"), "--decide", "-n", "3"]
    r = cli(*args, "--decisions", str(target))
    assert r.code == 0
    lines = decisions_of(target)
    assert [d["decision"] for d in lines] == ["keep", "undo", "reject"]
    assert lines[0]["note"] == "twin differs" and len({d["id"] for d in lines}) == 1
    assert {i: d.decision for i, d in latest(read(target)).items()} == {lines[0]["id"]: "reject"}


def test_stats_before_any_review_lists_every_rule_unreviewed(tmp_path, cli):
    planted(tmp_path)
    first = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=NEAR))
    r = cli("review", first.id, "--store", str(tmp_path / ".store"), "--stats", "--json")
    assert r.code == 0
    assert [(s["reason"], s["reviewed"], s["uncertain"]) for s in r.json()] == [
        ("empty_response", 0, True),
        ("exact_duplicate", 0, True),
        ("near_duplicate", 0, True),
    ]


def test_sampling_is_stratified_by_reason(tmp_path, cli):
    planted(tmp_path)
    first = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=NEAR))
    items = cli("review", first.id, "--store", str(tmp_path / ".store"), "-n", "3", "--json")
    assert sorted(i["reason"] for i in items.json()) == [
        "empty_response",
        "exact_duplicate",
        "near_duplicate",
    ]


def test_wilson_interval_matches_hand_computed_values():
    lo, hi = wilson(9, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.5958, 0.9821)
    lo, hi = wilson(10, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.7225, 1.0)
    assert wilson(0, 0) == (0.0, 1.0)


def test_a_torn_last_line_is_skipped_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "d.jsonl"
    append(path, [{"id": "a", "decision": "keep"}])
    with open(path, "a") as fh:
        fh.write('{"id": "b", "decis')  # a crash in the middle of a write
    assert [d.id for d in read(path)] == ["a"]
    append(path, [{"id": "c", "decision": "reject"}])
    assert path.read_text().count("\n") == 2 and [d.id for d in read(path)] == ["a", "c"]


def test_decisions_survive_a_kill_mid_append(tmp_path):
    path = tmp_path / "d.jsonl"
    code = (
        "import sys; from curate.review.decisions import append\n"
        "i = 0\n"
        "while True:\n"
        "    append(__import__('pathlib').Path(sys.argv[1]),"
        " [{'id': f'r{i}', 'decision': 'keep', 'note': 'x' * 5000}]); i += 1\n"
    )
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        found = read(path)  # never an error: at most a torn last line, skipped
        assert found and all(d.decision == "keep" for d in found)
    append(path, [{"id": "last", "decision": "reject"}])
    assert read(path)[-1].id == "last"


@pytest.mark.parametrize("bad", ["[1, 2]", '{"id": "x", "decision": "maybe"}'])
def test_a_bad_decision_line_names_file_and_line(tmp_path, bad):
    from curate.errors import UserError

    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "decision": "keep"}\n' + bad + "\n")
    with pytest.raises(UserError, match=r"d.jsonl:2"):
        read(path, "d.jsonl")


def test_a_damaged_decisions_file_is_exit_2_in_stats_and_builds(tmp_path, cli):
    planted(tmp_path)
    first = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=NEAR))
    store = str(tmp_path / ".store")
    folder = tmp_path / "review" / "decisions.jsonl"
    folder.mkdir(parents=True)  # a folder where the file should be
    r = cli("review", first.id, "--store", store, "--stats", "--decisions", folder)
    assert r.code == 2 and "decisions.jsonl: decisions file is a folder" in r.err
    folder.rmdir()
    folder.write_bytes(b'{"id": "x", "decision": "keep"}\n{"id": "\xff", "decision": "keep"}\n')
    r = cli("review", first.id, "--store", store, "--stats", "--decisions", folder)
    assert r.code == 2 and "decisions.jsonl:2: not UTF-8" in r.err
    extra = NEAR + '[[overrides]]\npath = "review/decisions.jsonl"\n'
    r = cli("build", write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=extra))
    assert r.code == 2 and "decisions.jsonl:2: not UTF-8" in r.err
