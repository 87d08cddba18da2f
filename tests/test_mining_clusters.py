"""Failure mining beyond single rows (issue 15): clusters of failing prompts with labels and
trends, self-consistency across the rows of one request, the queue taken in turns across
clusters, traffic per week and its drift from a training manifest."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import curate
from curate.mining.traffic import SAMPLE_PER_WEEK, _smallest

TOPICS = {
    "refund": [
        "How do I get a refund for my order 1234?",
        "I want my money back for the broken blender I bought",
        "Can you process a refund on my last purchase please",
        "Refund request for a damaged item delivered yesterday",
        "My order arrived broken, how do I return it and get a refund",
        "Where is the refund for the order I cancelled last week",
    ],
    "python": [
        "Why does my Python script raise a KeyError when I access the dict",
        "Fix this Python TypeError: unsupported operand type for +",
        "Python list index out of range error inside my for loop",
        "My Python function returns None instead of the list",
        "How do I fix ImportError: no module named requests in Python",
    ],
    "french": [
        "Translate 'good morning' into French",
        "How do you say thank you very much in French",
        "French translation of 'where is the train station'",
        "Translate this sentence to French: the cat sleeps on the sofa",
    ],
}
BAD = "Sorry, something went wrong with that and I am not sure."
WEEK1, WEEK2 = "2026-11-03T10:00:00Z", "2026-11-10T10:00:00Z"  # ISO weeks 45 and 46


def topic_logs(folder: Path) -> Path:
    """Failing prompts of three topics (refunds: 1 in week 45, 5 in week 46), one prompt
    answered three times in three rows of one request, one row with three JSON answers."""
    rows = []
    for topic, prompts in TOPICS.items():
        for i, prompt in enumerate(prompts):
            late = i > 0 if topic == "refund" else i % 2 == 1
            rows.append(
                {
                    "request_id": f"{topic}-{i}",
                    "prompt": prompt,
                    "response": BAD,
                    "user_feedback": "thumbs_down",
                    "timestamp": WEEK2 if late else WEEK1,
                    "model": "adapter-v2" if late else "adapter-v1",
                }
            )
    for answer in ("42", "41", "42."):  # the same request, sampled three times
        rows.append(
            {
                "request_id": "sum",
                "prompt": "What is 6 times 7?",
                "response": answer,
                "automated_score": 0.1,
            }
        )
    rows.append(
        {
            "request_id": "js",
            "prompt": "Return the order as JSON",
            "response": ["{'id': 1", '{"id": 1}', '{"id": 1}'],
            "expected_format": "json",
        }
    )
    path = folder / "logs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mine_with(cli, tmp_path: Path, logs: Path, toml: str):
    """`curate mine` with a mine.toml of `toml` and a queue: the result, the queue items."""
    (tmp_path / "mine.toml").write_text(toml)
    args = ["--config", tmp_path / "mine.toml", "--store", tmp_path / "s"]
    out = cli("mine", logs, *args, "--queue", tmp_path / "q", "--json")
    assert out.code == 0, out.err
    lines = (tmp_path / "q/queue.jsonl").read_text().splitlines()
    return out, [json.loads(x) for x in lines]


def test_failing_prompts_cluster_by_topic_and_the_queue_takes_turns(tmp_path, cli):
    logs = topic_logs(tmp_path)
    store = tmp_path / "store"
    out = cli("mine", logs, "--store", store, "--queue", tmp_path / "queue", "--json")
    assert out.code == 0, out.err
    run = out.json()
    clusters = {c["cluster"]: c for c in run["clusters"]["top"]}
    found = pl.read_parquet(
        curate.api.store_for(store).verified_object(run["objects"]["clusters"]["object"])
    )
    items = [json.loads(x) for x in (tmp_path / "queue/queue.jsonl").read_text().splitlines()]
    by_prompt = {i["fields"]["prompt"]: i for i in items}
    members = {
        topic: {by_prompt[p]["metadata"]["cluster"] for p in prompts}
        for topic, prompts in TOPICS.items()
    }
    # each topic one cluster of its own
    assert all(len(m) == 1 for m in members.values())
    assert len(set.union(*members.values())) == 3
    refund = clusters[members["refund"].pop()]
    assert refund["label"].split(" / ")[0] == "refund"
    assert "python" in clusters[members["python"].pop()]["label"]
    assert "french" in clusters[members["french"].pop()]["label"]
    assert (refund["failures"], refund["candidates"]) == (6, 6)
    assert refund["weeks"] == {"2026-W45": 1, "2026-W46": 5} and refund["trend"] == "rising"
    assert refund["models"] == {"adapter-v1": 1, "adapter-v2": 5}
    assert found.height == run["clusters"]["clustered"] == 17
    # priority = severity × cluster size × (1 + uncertainty); turns across clusters
    head = [i["metadata"] for i in items[:3]]
    assert [m["cluster_size"] for m in head] == [6, 5, 4]
    assert [m["priority"] for m in head] == [18.0, 15.0, 12.0]
    assert len({m["cluster"] for m in head}) == 3
    # one request answered in three rows: one candidate, its disagreement measured
    sums = [i for i in items if i["fields"]["prompt"] == "What is 6 times 7?"]
    assert len(sums) == 1 and sums[0]["metadata"]["count"] == 3
    assert sums[0]["metadata"]["answers"] == 3
    assert sums[0]["metadata"]["uncertainty"] == 0.5794  # ("42", "42."), "41": H/ln 3
    js = by_prompt["Return the order as JSON"]["metadata"]
    assert js["reason"] == "invalid_json" and js["answers"] == 3
    assert js["json_valid_rate"] == pytest.approx(2 / 3)
    assert js["uncertainty"] == 0.9183  # the binary entropy of 2/3 parsed
    assert run["consistency"] == {"groups": 4, "uncertain": 4}
    weeks = {w["week"]: w for w in run["by_week"]}
    assert (weeks["2026-W45"]["rows"], weeks["2026-W46"]["rows"]) == (6, 9)
    assert weeks["(none)"]["rows"] == 4
    assert weeks["2026-W46"]["models"] == {"adapter-v2": {"rows": 9, "failures": 9}}


def test_clusters_off_queues_in_turns_across_reasons(tmp_path, cli):
    logs = topic_logs(tmp_path)
    out, items = mine_with(cli, tmp_path, logs, "[clusters]\nenabled = false\n")
    run = out.json()
    assert run["clusters"]["model"] is None and run["clusters"]["skipped"] == "off in mine.toml"
    # by priority (severity × count × (1 + disagreement)), in turns across reasons
    head = [(i["metadata"]["reason"], i["metadata"]["priority"]) for i in items[:3]]
    assert head == [
        ("low_score", 9.4764),  # 2 × 3 rows × (1 + 0.5794)
        ("invalid_json", 7.6732),  # 4 × 1 × (1 + 0.9183)
        ("thumbs_down", 3.0),
    ]
    assert {i["metadata"]["cluster"] for i in items} == {None}


def test_report_shows_clusters_weeks_and_drift_from_a_training_manifest(tmp_path, cli):
    cooking = [
        "How long should I boil an egg for a soft yolk?",
        "What temperature do I roast a chicken at?",
        "How do I make a simple tomato pasta sauce?",
        "Can I replace butter with oil when baking a cake?",
        "How much salt goes into bread dough?",
        "What is the best way to cook rice on the stove?",
        "How do I caramelize onions without burning them?",
        "How long do I bake chocolate chip cookies?",
    ]
    (tmp_path / "task.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "completion": "Here is how."}) + "\n" for p in cooking)
    )
    (tmp_path / "mixture.toml").write_text(
        '[build]\nname = "cook"\n\n[[sources]]\nname = "task"\npath = "task.jsonl"\n'
        'format = "prompt_completion"\n'
    )
    store = tmp_path / "store"
    built = curate.build(tmp_path / "mixture.toml", store=store)
    rows = (
        [  # week 45 asks what the model was tuned on; week 46 asks about taxes
            {"prompt": p, "response": "ok", "timestamp": WEEK1} for p in cooking[:4]
        ]
        + [
            {"prompt": p, "response": "ok", "timestamp": WEEK2}
            for p in (
                "How do I file my income tax return online?",
                "Which tax deductions can a freelancer claim?",
                "When is the deadline for paying quarterly taxes?",
                "Do I pay capital gains tax on selling shares?",
            )
        ]
    )
    logs = tmp_path / "logs.jsonl"
    logs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = cli("mine", logs, "--store", store, "--json").json()
    out = cli(
        "mine",
        "report",
        run["mining_run"][:12],
        "--store",
        store,
        "--against",
        built.manifest_id,
        "--json",
    )
    assert out.code == 0, out.err
    drift = out.json()["drift"]
    assert drift["manifest"] == built.manifest_id and drift["training_rows_sampled"] == 8
    near, far = drift["weeks"]
    assert (near["week"], far["week"]) == ("2026-W45", "2026-W46")
    assert (near["sampled"], far["sampled"]) == (4, 4)
    assert near["centroid_distance"] < drift["noise"] + 0.1 < far["centroid_distance"]
    assert far["centroid_distance"] > 3 * near["centroid_distance"]
    shown = cli(
        "mine", "report", run["mining_run"][:12], "--store", store, "--against", built.manifest_id
    )
    assert shown.code == 0 and "traffic per week" in shown.out and "drift from" in shown.out
    bad = cli("mine", "report", run["mining_run"][:12], "--store", store, "--against", "feedbeef")
    assert bad.code == 2


@settings(max_examples=100, derandomize=True, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["w1", "w2"]), st.integers(0, 10**6)), max_size=700),
    st.integers(1, 6),
)
def test_the_weekly_sample_does_not_depend_on_how_logs_were_split(rows, parts):
    frame = pl.DataFrame(
        {
            "week": [w for w, _ in rows],
            "log_id": [f"{n:016x}" for _, n in rows],
            "prompt": ["p"] * len(rows),
            "chars": [1] * len(rows),
        },
        schema={"week": pl.String, "log_id": pl.String, "prompt": pl.String, "chars": pl.Int64},
    )
    whole = _smallest(frame)
    pieces = [_smallest(frame[i::parts]) for i in range(parts)]
    merged = _smallest(pl.concat(pieces))
    assert merged.sort("week", "log_id").equals(whole.sort("week", "log_id"))
    assert (whole.group_by("week").len()["len"].max() or 0) <= SAMPLE_PER_WEEK


def test_only_the_most_urgent_candidates_are_clustered_and_the_rest_still_queue(tmp_path, cli):
    """Beyond `max_candidates`, candidates queue unclustered (their own turn, their count
    as size); a queue of both kinds is stored whatever order they come in."""
    rows = [
        {"prompt": f"question number {i} about topic {i * 7919 % 1000}", "response": "no"}
        | ({"user_feedback": "thumbs_down"} if i % 3 else {"automated_score": 0.1})
        for i in range(150)
    ]
    (tmp_path / "logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, items = mine_with(
        cli, tmp_path, tmp_path / "logs.jsonl", "[clusters]\nmax_candidates = 2\n"
    )
    run = out.json()
    assert len(items) == 150 and run["clusters"]["clustered"] == 2
    assert sum(i["metadata"]["cluster"] is not None for i in items) == 2
    sizes = [i["metadata"]["cluster_size"] for i in items if i["metadata"]["cluster"] is None]
    assert sizes == [1] * 148  # each its own count, not the unclustered pooled


def test_a_run_recorded_by_the_first_version_still_reports(tmp_path, cli):
    """Records of version 1 have no clusters, weeks or traffic sample: the report shows
    what they have, and a drift comparison is refused with a reason (exit 2)."""
    from curate.manifests.store import Store

    logs = topic_logs(tmp_path)
    store = tmp_path / "store"
    run = cli("mine", logs, "--store", store, "--json").json()
    record = Store(store).read_record("mining", run["mining_run"])
    for key in ("clusters", "by_week", "consistency"):
        del record[key]
    del record["objects"]["traffic"]
    old = Store(store).put_record("mining", {**record, "version": 1})
    shown = cli("mine", "report", old, "--store", store, "--json")
    assert shown.code == 0, shown.err
    report = shown.json()
    assert report["top_clusters"] == [] and report["by_week"] == []
    assert "earlier version" in report["clusters"]["skipped"]
    assert cli("mine", "report", old, "--store", store).code == 0
    (tmp_path / "t.jsonl").write_text(json.dumps({"prompt": "a b c", "completion": "d"}) + "\n")
    (tmp_path / "m.toml").write_text(
        '[build]\nname = "m"\n[[sources]]\nname = "t"\npath = "t.jsonl"\nformat = "prompt_completion"\n'
    )
    built = curate.build(tmp_path / "m.toml", store=store)
    refused = cli("mine", "report", old, "--store", store, "--against", built.manifest_id)
    assert refused.code == 2 and "mine again" in refused.err


def test_weeks_read_iso_times_dates_offsets_and_unix_seconds():
    """A chat completion's `created` (Unix seconds) is the time of proxy logs without one."""
    from curate.mining.traffic import week_of

    times = ["1700000000", "2026-11-10T10:00:00Z", "2026-11-10", "2026-11-15T23:30:00-02:00"]
    times += ["garbage", None]
    weeks = pl.DataFrame({"t": times}).select(week_of(pl.col("t")))["t"].to_list()
    assert weeks == ["2023-W46", "2026-W46", "2026-W46", "2026-W47", None, None]
