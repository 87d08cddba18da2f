"""Roles with floors and caps, token budgets, and splits that keep evaluation honest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import curate
from curate.config import parse_config
from curate.errors import UserError
from curate.mixers.weights import plan_mixture
from tests.conftest import build, chat, write_config, write_jsonl
from tests.test_template import smollm_dir, smollm_gguf, tok_config  # noqa: F401 - fixtures

ROLES = "[mixture]\ntotal = 1000\n[mixture.roles]\nreplay = { min_share = 0.10 }\nsafety = { min_share = 0.05, max_share = 0.15 }\n"


def rows(prefix: str, n: int) -> list[dict]:
    # every row different enough that no dedup touches it
    return [
        chat(f"{prefix} question {i} {i * 7919}", f"{prefix} answer {i} {i * 104729}")
        for i in range(n)
    ]


def three_sources(tmp_path: Path, safety_rows: int = 200, safety_repeats: int = 1) -> list[dict]:
    write_jsonl(tmp_path / "task.jsonl", rows("task", 2000))
    write_jsonl(tmp_path / "replay.jsonl", rows("replay", 300))
    write_jsonl(tmp_path / "safety.jsonl", rows("safety", safety_rows))
    return [
        {"name": "task", "path": "task.jsonl", "role": "task", "weight": 0.9},
        {"name": "replay", "path": "replay.jsonl", "role": "replay", "weight": 0.08},
        {
            "name": "safety",
            "path": "safety.jsonl",
            "role": "safety",
            "weight": 0.02,
            "max_repeats": safety_repeats,
        },
    ]


def test_floors_are_met_exactly_and_the_rest_keeps_the_weights(tmp_path):
    b = build(write_config(tmp_path, three_sources(tmp_path), extra=ROLES))
    assert Counter(r["source"] for r in b.rows) == {"task": 850, "replay": 100, "safety": 50}
    mix = b.manifest["mixture"]
    src = mix["sources"]
    assert [(src[n]["requested_share"], src[n]["solved_share"], src[n]["bound"]) for n in src] == [
        (0.9, 0.85, None),
        (0.08, 0.1, "min_share"),
        (0.02, 0.05, "min_share"),
    ]
    assert mix["roles"]["safety"] | {"sources": None} == {
        "sources": None,
        "min_share": 0.05,
        "max_share": 0.15,
        "realized_rows": 50,
        "unique_rows": 50,
        "repeats": 0,
        "bound": "min_share",
        "realized_share": 0.05,
        "realized_share_rows": 0.05,
        "solved_share": 0.05,
        "requested_share": 0.02,
    }
    assert mix["risks"] == {"forgetting_risk": False, "safety_risk": False}
    stages = [s["name"] for s in b.manifest["stages"]]
    assert stages[-2:] == ["mixture", "split"]


def test_an_infeasible_floor_is_refused_with_the_numbers(tmp_path, cli):
    sources = three_sources(tmp_path, safety_rows=40, safety_repeats=2)
    extra = ROLES.replace("total = 1000", "total = 10000")
    r = cli("build", str(write_config(tmp_path, sources, extra=extra)))
    assert r.code == 2
    for part in (
        "mixture: 2 floors cannot be met:",
        "role 'replay' must be at least 10.00% of 10000 rows (min_share): 1000 rows; its "
        "sources can give 300 ('replay': 300 rows left × max_repeats 1). Change one: "
        "max_repeats ≥ 4 on its sources; min_share ≤ 0.03; add role 'replay' data",
        "role 'safety' must be at least 5.00% of 10000 rows (min_share): 500 rows",
        "its sources can give 80 ('safety': 40 rows left × max_repeats 2)",
        "max_repeats ≥ 13 on its sources; min_share ≤ 0.008",
        "The largest mixture that meets every floor has total = 1600: set total ≤ 1600",
    ):
        assert part in r.err, r.err
    assert "Traceback" not in r.err


def test_a_cap_binds_and_strict_shares_refuses_it(tmp_path, cli):
    sources = three_sources(tmp_path)
    sources[1]["weight"], sources[2]["weight"] = 0.3, 0.3  # safety asks 0.3 of 1.5
    extra = ROLES
    b = build(write_config(tmp_path, sources, extra=extra))
    src = b.manifest["mixture"]["sources"]
    assert (src["safety"]["realized_rows"], src["safety"]["bound"]) == (150, "max_share")
    # the 0.05 safety gives up goes to the others in their weights' ratio (0.9 : 0.3)
    assert (src["task"]["realized_rows"], src["replay"]["realized_rows"]) == (638, 212)
    r = cli(
        "build",
        str(
            write_config(
                tmp_path,
                sources,
                extra=extra.replace("total = 1000", "total = 1000\nstrict_shares = true"),
            )
        ),
    )
    assert r.code == 2 and "strict_shares" in r.err
    assert "role 'safety': weights ask 0.2000, max_share allows 0.1500" in r.err


def test_mined_rows_never_outweigh_what_the_model_does_well(tmp_path):
    write_jsonl(tmp_path / "good.jsonl", rows("good", 100))
    write_jsonl(tmp_path / "fail.jsonl", rows("fail", 1000))
    sources = [
        {"name": "good", "path": "good.jsonl", "role": "task", "weight": 0.1},
        {"name": "fail", "path": "fail.jsonl", "role": "mined", "weight": 0.9},
    ]
    extra = "[mixture.roles]\nmined = { min_positive_share = 0.3 }\n"
    b = build(write_config(tmp_path, sources, extra=extra))
    mix = b.manifest["mixture"]
    # the largest mixture with 100 positive rows at 30%: 333 rows, 233 of them mined
    assert Counter(r["source"] for r in b.rows) == {"good": 100, "fail": 233}
    assert mix["sources"]["good"]["bound"] == "min_positive_share"
    assert mix["positive"]["min_positive_share"] == 0.3
    assert mix["positive"]["realized_share"] == round(100 / 333, 6)


def test_missing_roles_are_named_as_risks(tmp_path, cli):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 5))
    r = cli("build", str(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}])), "--json")
    out = r.json()
    assert (out["forgetting_risk"], out["safety_risk"]) == (True, True)
    assert [w.split(":")[0] for w in out["warnings"]] == ["forgetting_risk", "safety_risk"]
    b = build(write_config(tmp_path, three_sources(tmp_path), extra=ROLES, name="m2.toml"))
    assert not any(curate_warnings(b.manifest))


def curate_warnings(manifest: dict) -> list[str]:
    from curate.manifests.manifest import risk_warnings

    return risk_warnings(manifest)


def test_floor_without_a_source_of_its_role_is_a_config_error(tmp_path, cli):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 5))
    extra = "[mixture.roles]\nsafety = { min_share = 0.05 }\nreplay = { min_share = 0.3, max_share = 0.2 }\n"
    r = cli("build", str(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=extra)))
    assert r.code == 2
    assert "mixture.roles.safety.min_share: no source has role 'safety'" in r.err
    assert "mixture.roles.replay: min_share 0.3 is above max_share 0.2" in r.err


# ---------------------------------------------------------------------------------------
# token budgets


def test_token_budget_counts_trained_tokens_and_caps_a_source(tmp_path, smollm_dir):  # noqa: F811
    short = [chat(f"short question {i} " * 20, f"a short answer, number {i}") for i in range(200)]
    long = [chat(f"q{i}", " ".join([f"long answer {i}"] * 25)) for i in range(60)]
    write_jsonl(tmp_path / "short.jsonl", short)
    write_jsonl(tmp_path / "long.jsonl", long)
    sources = [
        {"name": "short", "path": "short.jsonl", "weight": 0.5},
        {"name": "long", "path": "long.jsonl", "weight": 0.5, "max_tokens": 600},
    ]
    extra = tok_config(smollm_dir) + '[mixture]\nunit = "tokens"\ntotal = 1500\n'
    b = build(write_config(tmp_path, sources, extra=extra))
    mix = b.manifest["mixture"]
    trained = Counter()
    for row in b.rows:
        trained[row["source"]] += row["n_trained"]
    assert mix["count"] == "trained"
    assert mix["sources"]["long"]["bound"] == "max_tokens"
    assert mix["sources"]["long"]["requested_tokens"] == 600
    assert 600 - max(r["n_trained"] for r in b.rows) < trained["long"] <= 600
    assert mix["sources"]["short"]["requested_tokens"] == 900  # what long cannot take
    assert {n: s["realized_tokens"] for n, s in mix["sources"].items()} == dict(trained)
    # both units recorded: few long rows hold as many trained tokens as many short ones
    rows_share = mix["sources"]["long"]["realized_share_rows"]
    assert rows_share < 0.5 < mix["sources"]["long"]["realized_share_tokens"] + 0.2
    b_all = build(write_config(tmp_path, sources, extra=extra + 'count = "all"\n', name="all.toml"))
    all_tokens = sum(r["n_tokens"] for r in b_all.rows)
    assert b_all.manifest["mixture"]["realized_total"] == all_tokens <= 1500


# ---------------------------------------------------------------------------------------
# splits


def families(n: int, size: int) -> list[dict]:
    """n families of `size` variants of one problem: each variant swaps one word of twelve
    (Jaccard of 5-grams between variants ≈ 0.4–0.7: near dedup at 0.8 keeps them all)."""
    out = []
    for f in range(n):
        words = [f"w{f}x{k}" for k in range(30)]
        for v in range(size):
            variant = list(words)
            variant[10 + v * 2] = f"swap{v}"
            out.append(chat(" ".join(variant[:15]), " ".join(variant[15:])))
    return out


def straddling(b) -> int:
    fam = {}
    for row in b.rows:
        fam.setdefault(row["messages"][0]["content"].split()[0], set()).add(row["split"])
    return sum(len(s) > 1 for s in fam.values())


def test_cluster_split_keeps_each_family_in_one_split(tmp_path, cli):
    write_jsonl(tmp_path / "a.jsonl", families(60, 4))
    split = '[split]\nvalidation = 0.2\ntest = 0.1\nby = "{by}"\n'
    near = "[dedup]\nnear = { threshold = 0.8 }\n"
    by_row = build(
        write_config(
            tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=near + split.format(by="row")
        )
    )
    assert len(by_row.rows) == 240 and straddling(by_row) > 10  # the planted case bites
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}],
        extra=near + split.format(by="cluster"),
        name="c.toml",
    )
    b = build(cfg)
    assert len(b.rows) == 240 and straddling(b) == 0
    counts = Counter(r["split"] for r in b.rows)
    assert abs(counts["validation"] - 48) <= 4 and abs(counts["test"] - 24) <= 4
    assert b.manifest["splits"]["validation"]["clusters"] == counts["validation"] // 4
    assert cli("verify", b.id, "--store", str(tmp_path / ".store")).code == 0
    # without near dedup, the split computes its clusters alone
    b2 = build(
        write_config(
            tmp_path,
            [{"name": "a", "path": "a.jsonl"}],
            extra=split.format(by="cluster"),
            name="d.toml",
        )
    )
    assert (
        straddling(b2) == 0 and [s["name"] for s in b2.manifest["stages"]][-3] == "split_clusters"
    )


def test_verify_catches_a_cluster_in_two_splits(tmp_path, cli, monkeypatch):
    import curate.mixers.stages as stages
    from curate.mixers.split import assign_splits

    # a split that forgets its clusters: every row a unit of its own
    def by_row(ids, groups, *args, **kwargs):
        return assign_splits(ids, None, *args, **kwargs)

    monkeypatch.setattr(stages, "assign_splits", by_row)
    write_jsonl(tmp_path / "a.jsonl", families(60, 4))
    extra = '[split]\nvalidation = 0.2\nby = "cluster"\n'
    b = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=extra))
    assert straddling(b) > 0
    r = cli("verify", b.id, "--store", str(tmp_path / ".store"))
    assert r.code == 2 and "clusters or groups are in more than one split" in r.err


def test_holdout_sources_only_go_to_validation_and_test(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 200))
    write_jsonl(tmp_path / "h.jsonl", rows("h", 40))
    extra = '[split]\nvalidation = 0.1\ntest = 0.1\nholdout_sources = ["h"]\n'
    b = build(
        write_config(
            tmp_path,
            [{"name": "a", "path": "a.jsonl"}, {"name": "h", "path": "h.jsonl"}],
            extra=extra,
        )
    )
    held = Counter(r["split"] for r in b.rows if r["source"] == "h")
    assert held["train"] == 0 and held["validation"] == 20 and held["test"] == 20
    rest = Counter(r["split"] for r in b.rows if r["source"] == "a")
    assert rest == {"train": 160, "validation": 20, "test": 20}
    assert b.manifest["splits"]["test"]["sources"] == {"a": 20, "h": 20}


def test_time_split_puts_rows_at_or_after_the_cutoff_in_evaluation(tmp_path):
    data = [
        chat(f"question {i}", f"answer {i}") | {"ts": f"2024-0{1 + i % 9}-15T10:00:00Z"}
        for i in range(90)
    ] + [chat("undated", "row")]
    write_jsonl(tmp_path / "a.jsonl", data)
    extra = '[split]\nvalidation = 0.1\ntest = 0.1\nby = "meta.ts"\ntime_cutoff = 2024-08-01\n'
    b = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=extra))
    for row in b.rows:
        late = json.loads(row["meta"] or "{}").get("ts", "") >= "2024-08"
        assert (row["split"] != "train") == late
    assert Counter(r["split"] for r in b.rows) == {"train": 71, "validation": 10, "test": 10}
    assert b.manifest["splits"]["train"]["undated_rows"] == 1


def test_the_trainer_never_sees_the_test_split(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 100))
    b = build(
        write_config(
            tmp_path,
            [{"name": "a", "path": "a.jsonl"}],
            extra="[split]\nvalidation = 0.1\ntest = 0.1\n",
        )
    )
    assert Counter(r["split"] for r in b.rows) == {"train": 80, "validation": 10, "test": 10}
    ds = curate.load(b.id, "test", store=tmp_path / ".store")
    assert len(ds) == 10
    from curate.train import data as train_data

    assert '"test"' not in Path(train_data.__file__).read_text()


# ---------------------------------------------------------------------------------------
# property: refuse, or every share within 0.5 pp of the solved share and every floor held


@st.composite
def mixtures(draw):
    n = draw(st.integers(2, 5))
    roles = draw(
        st.lists(st.sampled_from(["task", "replay", "safety", "mined"]), min_size=n, max_size=n)
    )
    sizes = draw(
        st.lists(st.sampled_from([0, 1, 3]) | st.integers(0, 3000), min_size=n, max_size=n)
    )
    weights = draw(st.lists(st.floats(0.01, 10), min_size=n, max_size=n))
    repeats = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    limits = {}
    for role in sorted(set(roles)):
        lo = draw(st.none() | st.floats(0.0, 0.4))
        hi = draw(st.none() | st.floats(0.05, 1.0))
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        limits[role] = {k: v for k, v in (("min_share", lo), ("max_share", hi)) if v is not None}
    if draw(st.booleans()):
        limits.setdefault("mined", {})["min_positive_share"] = draw(st.floats(0.0, 0.5))
    total = draw(st.none() | st.integers(1, 6000))
    return roles, sizes, weights, repeats, limits, total


# derandomized: CI runs the same examples every time (a random search of 3,000 cases, run by
# hand, found no counterexample either)
@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(mixtures())
def test_shares_are_solved_or_refused(tmp_path_factory, case):
    roles, sizes, weights, repeats, limits, total = case
    folder = tmp_path_factory.mktemp("prop")
    (folder / "a.jsonl").write_text("{}\n")
    raw = {
        "sources": [
            {"name": f"s{i}", "path": "a.jsonl", "role": r, "weight": w, "max_repeats": k}
            for i, (r, w, k) in enumerate(zip(roles, weights, repeats, strict=True))
        ],
        "mixture": {"roles": limits, **({"total": total} if total else {})},
    }
    try:
        config = parse_config(raw, folder)
    except UserError:
        return  # e.g. floors that add up to more than 1
    rank = np.repeat(np.arange(len(sizes)), sizes)
    try:
        plan = plan_mixture(rank, list(config.sources), config.mixture, 0)
    except UserError:
        return
    report = plan.report
    realized = report["realized_total"]
    if realized == 0:
        return
    # whole rows: each limited source or role can be a row off its share (caps round down,
    # floors up), which at 1,000 rows and more is within 0.5 pp
    slack = max(0.005, len(sizes) / realized)
    for entry in report["sources"].values():
        assert abs(entry["realized_share"] - entry["solved_share"]) <= slack
    for role, lim in limits.items():
        if role not in report["roles"]:
            continue  # min_positive_share alone may name mined without a mined source
        share = report["roles"][role]["realized_share"]
        assert share >= lim.get("min_share", 0) - 1e-6
        assert share <= lim.get("max_share", 1) + slack
    if "positive" in report:
        assert report["positive"]["realized_share"] >= limits["mined"]["min_positive_share"] - 1e-6
    assert plan.copies.sum() == realized
    for i, k in enumerate(repeats):
        assert plan.copies[rank == i].max(initial=0) <= k


@pytest.mark.parametrize("seed", [1, 2])
def test_plan_is_deterministic(tmp_path, seed):
    folder = tmp_path
    (folder / "a.jsonl").write_text("{}\n")
    raw = {
        "sources": [
            {"name": "a", "path": "a.jsonl", "role": "task", "weight": 1.0},
            {"name": "b", "path": "a.jsonl", "role": "safety", "weight": 1.0, "max_repeats": 3},
        ],
        "mixture": {"total": 777, "roles": {"safety": {"min_share": 0.15}}},
    }
    config = parse_config(raw, folder)
    rank = np.repeat([0, 1], [1000, 50])
    one = plan_mixture(rank, list(config.sources), config.mixture, seed)
    two = plan_mixture(rank, list(config.sources), config.mixture, seed)
    assert (one.copies == two.copies).all() and one.report == two.report


def test_time_values_parse_alike_vectorized_and_one_by_one():
    import math

    import pyarrow as pa

    from curate.mixers.stages import _epoch, at_or_after

    values = [
        "2024-06-01",
        "2024-05-31T23:59:59Z",
        "2024-06-01 01:00:00+02:00",
        "2024-06-01T00:00:00.5",
        "2024-06-01T12:00+01:00",  # a form only Python's parser reads
        " 1717200000 ",
        "soon",
        None,
    ]
    after, dated = at_or_after(pa.array(values), "2024-06-01")
    expected = [_epoch(v.strip()) if v else math.nan for v in values]
    assert dated.tolist() == [not math.isnan(e) for e in expected]
    assert after.tolist() == [True, False, False, True, True, True, False, False]


def test_a_sample_keeps_its_rows_when_a_row_is_added(tmp_path):
    """Rows are drawn in the order of a seeded hash of their id: one more row in a sampled
    source changes the fate of at most that row and the one it displaces (a permutation
    drawn per build would reshuffle the whole sample)."""
    write_jsonl(
        tmp_path / "a.jsonl", [chat(f"a question {i}", f"a answer {i}") for i in range(300)]
    )
    many = [chat(f"b question {i}", f"b answer {i}") for i in range(900)]
    write_jsonl(tmp_path / "b.jsonl", many)
    sources = [
        {"name": "a", "path": "a.jsonl", "weight": 0.5},
        {"name": "b", "path": "b.jsonl", "weight": 0.5},
    ]
    first = build(write_config(tmp_path, sources), tmp_path / "s1")
    write_jsonl(tmp_path / "b.jsonl", many + [chat("b question new", "b answer new")])
    second = build(write_config(tmp_path, sources), tmp_path / "s2")
    sampled = [{r["id"] for r in b.rows if r["source"] == "b"} for b in (first, second)]
    assert len(sampled[0]) == len(sampled[1]) == 300
    assert len(sampled[0] - sampled[1]) <= 1 and len(sampled[1] - sampled[0]) <= 1
