"""End to end on planted data: exact dedup, mixture, split, conservation, store commands."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import curate
from tests.conftest import build, chat, write_config, write_jsonl


def test_exact_dedup_across_sources_keeps_source_order(tmp_path):
    write_jsonl(
        tmp_path / "b.jsonl",
        [
            chat("  hello   WORLD\n", "Hi"),  # folded copy of a's first row
            chat("unique b", "x"),
            chat("Ｈｅｌｌｏ Ｗｏｒｌｄ", "hi"),  # fullwidth: NFKC folds it too
            chat("unique b", "x"),  # verbatim copy inside b
            chat("hello world!", "hi"),  # punctuation differs: not exact
        ],
    )
    write_jsonl(tmp_path / "a.jsonl", [chat("Hello World", "Hi"), chat("unique a", "y")])
    # a is listed first, so a's row is kept although b's copy comes earlier on disk
    b = build(
        write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}, {"name": "b", "path": "b.jsonl"}])
    )
    kept = {r["messages"][0]["content"]: r["id"] for r in b.rows}
    assert sorted(kept) == ["Hello World", "hello world!", "unique a", "unique b"]
    dups = {
        r["origin"]: json.loads(r["detail"])["duplicate_of"] for r in b.rejected("exact_duplicate")
    }
    assert dups == {
        "b.jsonl:1": kept["Hello World"],
        "b.jsonl:3": kept["Hello World"],
        "b.jsonl:4": kept["unique b"],
    }
    assert [r["id"] for r in b.ledger if r["origin"] == "b.jsonl:4"] == [kept["unique b"] + "#1"]
    stage = next(s for s in b.manifest["stages"] if s["name"] == "exact_dedup")
    assert (stage["rows_in"], stage["rows_out"], stage["rejected"]) == (
        7,
        4,
        {"exact_duplicate": 3},
    )


def test_exact_dedup_can_be_turned_off(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a"), chat("Q", "a")])
    b = build(
        write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra="[dedup]\nexact = false\n")
    )
    assert len(b.rows) == 2 and not b.ledger


def rows(prefix: str, n: int, **meta) -> list[dict]:
    return [
        chat(f"{prefix} question {i}", f"{prefix} answer {i}") | {k: v(i) for k, v in meta.items()}
        for i in range(n)
    ]


def test_weights_without_total_give_the_largest_mixture_within_repeats(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 100))
    write_jsonl(tmp_path / "b.jsonl", rows("b", 50))
    b = build(
        write_config(
            tmp_path,
            [
                {"name": "a", "path": "a.jsonl", "weight": 3.0},
                {"name": "b", "path": "b.jsonl", "weight": 1.0},
            ],
        )
    )
    mix = b.manifest["mixture"]
    assert mix["requested_total"] == 133
    assert {n: (s["requested_rows"], s["realized_rows"]) for n, s in mix["sources"].items()} == {
        "a": (100, 100),
        "b": (33, 33),
    }
    assert mix["sources"]["a"]["realized_share"] == round(100 / 133, 6)
    assert Counter(r["source"] for r in b.rows) == {"a": 100, "b": 33}
    not_sampled = b.rejected("not_sampled")
    assert len(not_sampled) == 17 and {r["source"] for r in not_sampled} == {"b"}
    assert json.loads(not_sampled[0]["detail"]) == {
        "available_rows": 50,
        "requested_rows": 33,
        "weight": 1.0,
    }


def test_upsampling_stops_at_max_repeats(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 10))
    write_jsonl(tmp_path / "b.jsonl", rows("b", 10))
    cfg = write_config(
        tmp_path,
        [
            {"name": "a", "path": "a.jsonl", "weight": 1.0},
            {"name": "b", "path": "b.jsonl", "weight": 1.0, "max_repeats": 3},
        ],
        extra="[mixture]\ntotal = 35\n",
    )
    b = build(cfg)
    per_id = Counter(r["id"] for r in b.rows)
    a_copies = sorted(per_id[i] for i in {r["id"] for r in b.rows if r["source"] == "a"})
    b_copies = sorted(per_id[i] for i in {r["id"] for r in b.rows if r["source"] == "b"})
    # a is asked for 17.5, has 10 × max_repeats 1; b takes the rest of the total: 25
    assert a_copies == [1] * 10
    assert b_copies == [2] * 5 + [3] * 5  # 25 = 2 each + 5 drawn a third time
    src = b.manifest["mixture"]["sources"]
    assert (src["a"]["capped"], src["a"]["bound"], src["a"]["realized_rows"]) == (
        True,
        "max_repeats",
        10,
    )
    assert (src["b"]["realized_rows"], src["b"]["repeats"], src["b"]["solved_share"]) == (
        25,
        15,
        round(25 / 35, 6),
    )
    by_source = {s["name"]: s for s in b.manifest["sources"]}
    assert (by_source["b"]["rows_kept"], by_source["b"]["rows_emitted"]) == (10, 25)


def test_no_weights_keeps_every_row(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 7))
    write_jsonl(tmp_path / "b.jsonl", rows("b", 3))
    b = build(
        write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}, {"name": "b", "path": "b.jsonl"}])
    )
    assert len(b.rows) == 10 and not b.ledger


def test_validation_split_by_row_and_copies_follow_their_row(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 100))
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl", "weight": 1.0, "max_repeats": 2}],
        extra="[mixture]\ntotal = 200\n[split]\nvalidation = 0.1\n",
    )
    b = build(cfg)
    splits = {}
    for r in b.rows:
        splits.setdefault(r["id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())
    assert sum(1 for s in splits.values() if s == {"validation"}) == 10
    assert (
        b.manifest["splits"]["validation"]["rows"] == 20
        and b.manifest["splits"]["train"]["rows"] == 180
    )


def test_validation_split_by_meta_field_keeps_groups_whole(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 100, conv=lambda i: f"g{i // 10}"))
    b = build(
        write_config(
            tmp_path,
            [{"name": "a", "path": "a.jsonl"}],
            extra='[split]\nvalidation = 0.2\nby = "conv"\n',
        )
    )
    groups = {}
    for r in b.rows:
        groups.setdefault(json.loads(r["meta"])["conv"], set()).add(r["split"])
    assert all(len(s) == 1 for s in groups.values())
    assert sum(1 for s in groups.values() if s == {"validation"}) == 2


def test_output_order_is_a_seeded_shuffle(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 50))
    b1 = build(
        write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], seed=1), store=tmp_path / "s1"
    )
    b2 = build(
        write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], seed=2), store=tmp_path / "s2"
    )
    order1, order2 = [r["id"] for r in b1.rows], [r["id"] for r in b2.rows]
    assert sorted(order1) == sorted(order2) and order1 != order2
    assert order1 != sorted(
        order1, key=lambda i: next(r["origin"] for r in b1.rows if r["id"] == i)
    )


@pytest.fixture
def planted(tmp_path):
    write_jsonl(
        tmp_path / "a.jsonl", [*rows("a", 30), chat("dup", "x"), chat("DUP ", "x"), "{bad", [1]]
    )
    write_jsonl(
        tmp_path / "b.jsonl",
        [
            *rows("b", 20),
            chat("dup", "x"),
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
        ],
    )
    cfg = write_config(
        tmp_path,
        [
            {"name": "a", "path": "a.jsonl", "weight": 1.0},
            {"name": "b", "path": "b.jsonl", "weight": 1.0},
        ],
        extra="[split]\nvalidation = 0.1\n",
    )
    return cfg, build(cfg)


def test_every_input_row_lands_in_exactly_one_place(planted):
    _, b = planted
    out_ids = {r["id"] for r in b.rows}
    ledger_ids = [r["id"] for r in b.ledger]
    assert len(ledger_ids) == len(set(ledger_ids)) and not out_ids & set(ledger_ids)
    for src in b.manifest["sources"]:
        kept = {r["id"] for r in b.rows if r["source"] == src["name"]}
        rejected = [r for r in b.ledger if r["source"] == src["name"]]
        assert (
            src["rows_in"] == len(kept) + len(rejected) == src["rows_kept"] + src["rows_rejected"]
        )
    assert b.manifest["counts"]["rows_in"] == 56
    assert Counter(r["reason"] for r in b.ledger) == {
        "malformed": 2,
        "exact_duplicate": 2,
        "empty_response": 1,
        "not_sampled": 11,
    }


def test_verify_passes_then_fails_on_any_flipped_byte(planted, cli):
    cfg, b = planted
    store = cfg.parent / ".store"
    assert cli("verify", b.id, "--store", store).code == 0
    manifest = curate.open_manifest(b.id, store=store)
    for sha in manifest.objects():
        path = store / "objects" / sha[:2] / sha
        data = bytearray(path.read_bytes())
        path.chmod(0o644)
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        r = cli("verify", b.id, "--store", store)
        assert r.code == 2 and f"object {sha} is corrupt" in r.err
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        assert cli("verify", b.id, "--store", store).code == 0
    mpath = store / "manifests" / f"{b.id}.json"
    mpath.write_bytes(mpath.read_bytes().replace(b'"rows_in":56', b'"rows_in":57'))
    r = cli("verify", b.id, "--store", store, "--json")
    assert r.code == 2 and any("manifest" in p and "corrupt" in p for p in r.json()["problems"])


def test_export_round_trips_and_load_returns_the_train_split(planted, tmp_path):
    cfg, b = planted
    store = cfg.parent / ".store"
    train = curate.load(b.id, store=store)
    assert train.num_rows == b.manifest["splits"]["train"]["rows"]
    # a chat build: no all-null text / chosen / rejected columns (they made TRL's sniffing
    # of the dataset's format depend on the hash seed)
    assert train.column_names == ["id", "source", "kind", "messages", "meta", "origin"]
    loaded = {s: curate.load(b.id, split=s, store=store).to_list() for s in ("train", "validation")}
    for fmt in ("jsonl", "parquet"):
        done = curate.export(b.id, fmt, tmp_path / fmt, store=store)
        assert sorted(p.name for p in done.paths) == [f"train.{fmt}", f"validation.{fmt}"]
        assert done.skipped == [] and done.columns == train.column_names
        for split in ("train", "validation"):
            path = tmp_path / fmt / f"{split}.{fmt}"
            if fmt == "parquet":
                back = pq.read_table(path).to_pylist()
            else:
                back = [json.loads(line) for line in path.read_text().splitlines()]
            assert back == loaded[split]
    hf = curate.export(b.id, "hf", tmp_path / "hf", store=store).paths[0]
    import datasets

    assert datasets.load_from_disk(str(hf))["validation"].to_list() == loaded["validation"]


def test_query_review_tag_log_show(planted, cli):
    cfg, b = planted
    store = cfg.parent / ".store"
    r = cli(
        "query",
        b.id,
        "SELECT split, count(*) AS n FROM rows GROUP BY split ORDER BY split",
        "--store",
        store,
        "--json",
    )
    assert r.code == 0 and r.json() == [
        {"split": "train", "n": 36},
        {"split": "validation", "n": 4},
    ]
    r = cli("review", b.id, "--reason", "exact_duplicate", "-n", "5", "--store", store, "--json")
    items = r.json()
    assert len(items) == 2
    for item in items:
        assert set(item) == {"id", "source", "stage", "reason", "detail", "row", "twin"}
        assert item["twin"]["id"] == item["detail"]["duplicate_of"]
        assert item["twin"]["messages"][0]["content"] == "dup"
    assert cli("review", b.id, "--reason", "exact_duplicate", "--store", store).code == 0
    assert cli("tag", "v1", b.id[:8], "--store", store).code == 0
    assert cli("show", "v1", "--store", store, "--json").json()["counts"]["rows_in"] == 56
    log = cli("log", "--store", store, "--json").json()
    assert [e["id"] for e in log] == [b.id] and log[0]["tags"] == ["v1"]
    bad = cli("show", "deadbeef", "--store", store)
    assert bad.code == 2 and "no manifest or tag 'deadbeef'" in bad.err
    assert cli("query", b.id, "SELECT nope FROM rows", "--store", store).code == 2


def test_rebuild_uses_the_block_cache_and_gives_the_same_id(planted):
    cfg, b = planted
    cache = list((cfg.parent / ".store" / "cache" / "blocks").rglob("*.arrow"))
    assert len(cache) == 2
    mtimes = [p.stat().st_mtime_ns for p in cache]
    again = build(cfg)
    assert again.id == b.id
    assert [p.stat().st_mtime_ns for p in cache] == mtimes


def test_manifest_holds_the_contract_fields(planted):
    _, b = planted
    m = b.manifest
    for key in (
        "schema",
        "parent",
        "config",
        "sources",
        "stages",
        "tokenizer",
        "mixture",
        "splits",
        "ledger",
        "report",
        "counts",
        "code",
    ):
        assert key in m
    assert [s["name"] for s in m["stages"]] == [
        "read",
        "row_stats",
        "exact_dedup",
        "mixture",
        "split",
    ]
    src = m["sources"][0]
    assert src["files"][0]["path"] == "a.jsonl" and len(src["files"][0]["sha256"]) == 64
    assert m["config"]["sources"][0]["path"] == "a.jsonl"
    assert "created" not in json.dumps(m)


def test_help_is_fast():
    import subprocess
    import sys
    import time

    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "curate", "--help"], capture_output=True, text=True, check=True
    )
    assert time.perf_counter() - start < 1.5  # issue target: under a second on an idle machine
    assert "build" in out.stdout
    modules = subprocess.run(
        [
            sys.executable,
            "-c",
            "import curate.cli, sys; print(sorted(m for m in ('polars','duckdb','pyarrow','datasets','torch') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert modules.stdout.strip() == "[]"


def test_examples_generator_and_demo_config(tmp_path):
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent / "examples"
    shutil.copy(root / "make_example.py", tmp_path)
    shutil.copy(root / "mixture.toml", tmp_path)
    subprocess.run(
        [sys.executable, str(tmp_path / "make_example.py")], check=True, capture_output=True
    )
    b = build(tmp_path / "mixture.toml")
    reasons = Counter(r["reason"] for r in b.ledger)
    assert (
        reasons["malformed"] == 3
        and reasons["invalid_schema"] == 2
        and reasons["empty_response"] == 1
    )
    assert reasons["exact_duplicate"] >= 11


def test_empty_sources_build_an_empty_mixture_only_when_allowed(tmp_path, cli):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    cfg = write_config(
        tmp_path, [{"name": "e", "path": "empty.jsonl"}, {"name": "b", "path": "blank.jsonl"}]
    )
    r = cli("build", cfg, "--store", tmp_path / ".store")
    assert r.code == 2 and "no rows out: the sources hold no rows (0 read)" in r.err
    b = build(cfg, allow_empty=True)
    assert b.manifest["counts"] == {
        "rows_in": 0,
        "rows_kept": 0,
        "rows_rejected": 0,
        "rows_out": 0,
        "rejected": {},
    }
    assert cli("verify", b.id, "--store", tmp_path / ".store").code == 0
    assert curate.load(b.id, store=tmp_path / ".store").num_rows == 0


def test_a_weighted_source_with_nothing_left_does_not_empty_the_mixture(tmp_path):
    write_jsonl(tmp_path / "bad.jsonl", ["{broken", "[]"])
    write_jsonl(tmp_path / "ok.jsonl", rows("ok", 4))
    b = build(
        write_config(
            tmp_path,
            [
                {"name": "bad", "path": "bad.jsonl", "weight": 1.0},
                {"name": "ok", "path": "ok.jsonl", "weight": 1.0},
            ],
        )
    )
    assert len(b.rows) == 4
    assert b.manifest["mixture"]["sources"]["bad"]["capped"] is True


@pytest.mark.parametrize("temp_name", ["temp", "t" * 80])
def test_cli_build_in_a_fresh_process_matches_the_api(planted, tmp_path, temp_name):
    """The command forks its workers and hides pandas; the manifest must not change, and
    it leaves nothing in the temporary folder (the forkserver's socket included), also
    where that folder is too long for the socket (which then goes to /tmp, and away)."""
    import subprocess
    import sys

    cfg, b = planted
    temp = tmp_path / temp_name
    temp.mkdir()
    before = set(Path("/tmp").glob("pymp-*"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "curate",
            "build",
            str(cfg),
            "--workers",
            "2",
            "--json",
            "--store",
            str(cfg.parent / "cli-store"),
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "CI": "true", "TMPDIR": str(temp)},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["manifest_id"] == b.id
    assert sorted(p.name for p in temp.iterdir()) == []
    assert set(Path("/tmp").glob("pymp-*")) <= before


def test_an_interrupted_build_resumes_from_the_blocks_it_finished(tmp_path, monkeypatch):
    import curate.engines.passes as passes

    for i in range(4):
        write_jsonl(tmp_path / "d" / f"{i}.jsonl", rows(f"f{i}", 3))
    cfg = write_config(tmp_path, [{"name": "s", "path": "d/*.jsonl"}])
    real = passes.read_block
    calls: list[str] = []

    def failing(task):
        calls.append(task.shown)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed ^C while the third block was read
        return real(task)

    monkeypatch.setattr(passes, "read_block", failing)
    with pytest.raises(KeyboardInterrupt):
        build(cfg)
    assert not list((tmp_path / ".store" / "tmp").iterdir())  # scratch space cleaned up
    calls.clear()
    monkeypatch.setattr(
        passes, "read_block", lambda task: (calls.append(task.shown), real(task))[1]
    )
    resumed = build(cfg)
    assert calls == ["d/2.jsonl", "d/3.jsonl"]  # the first two blocks came from the cache
    monkeypatch.setattr(passes, "read_block", real)
    assert build(cfg, store=tmp_path / "fresh").id == resumed.id


RISKS = ("forgetting_risk", "safety_risk")  # every single-role build warns of both


def test_warnings_point_at_unusable_sources_and_left_out_rows(tmp_path, cli):
    write_jsonl(
        tmp_path / "g.jsonl", [{"question": "q", "answer": "a"}, {"question": "q2", "answer": "a2"}]
    )
    write_jsonl(tmp_path / "a.jsonl", rows("a", 10))
    write_jsonl(tmp_path / "b.jsonl", rows("b", 2))
    cfg = write_config(
        tmp_path,
        [
            {"name": "g", "path": "g.jsonl", "weight": 1.0},
            {"name": "a", "path": "a.jsonl", "weight": 1.0},
            {"name": "b", "path": "b.jsonl", "weight": 1.0},
        ],
    )
    r = cli("build", cfg, "--workers", "1", "--json", "--store", tmp_path / "st")
    warnings = [w for w in r.json()["warnings"] if not w.startswith(RISKS)]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "source 'g': 2 of 2 rows could not be used (mostly invalid_schema)"
    )
    assert warnings[1] == "source 'a': 8 of 10 rows left out to honour the weights (`not_sampled`)"


def test_warning_when_a_source_cannot_fill_its_share(tmp_path, cli):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 10))
    write_jsonl(tmp_path / "b.jsonl", rows("b", 2))
    cfg = write_config(
        tmp_path,
        [
            {"name": "a", "path": "a.jsonl", "weight": 1.0},
            {"name": "b", "path": "b.jsonl", "weight": 1.0},
        ],
        extra="[mixture]\ntotal = 12\n",
    )
    out = cli("build", cfg, "--workers", "1", "--json", "--store", tmp_path / "st").json()
    warnings = [w for w in out["warnings"] if not w.startswith(RISKS)]
    assert warnings == ["source 'b': asked for 6 rows, has 2 (max_repeats 1): got 2"]
    # a takes what b cannot: the total is met
    assert out["counts"]["rows_out"] == 12


def test_review_refuses_an_unknown_reason(planted, cli):
    cfg, b = planted
    r = cli("review", b.id, "--reason", "dupe", "--store", cfg.parent / ".store")
    assert r.code == 2 and "unknown reason 'dupe'; reasons are: malformed" in r.err
    assert cli("tag", "t", b.id, "--json", "--store", cfg.parent / ".store").json() == {
        "tag": "t",
        "id": b.id,
    }


def test_parent_is_recorded_and_changes_the_id(planted, cli):
    cfg, b = planted
    store = cfg.parent / ".store"
    r = cli("build", cfg, "--workers", "1", "--json", "--store", store, "--parent", b.id[:10])
    child = curate.open_manifest(r.json()["manifest_id"], store=store)
    assert child.data["parent"] == b.id and child.id != b.id
    assert cli("build", cfg, "--workers", "1", "--store", store, "--parent", "nope").code == 2


def test_store_paths_with_quotes_work_in_queries(tmp_path, cli):
    write_jsonl(tmp_path / "a.jsonl", [*rows("a", 3), "{bad"])
    store = tmp_path / 'it\'s a "store"'
    b = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}]), store=store)
    assert len(b.rows) == 3 and len(b.ledger) == 1
    r = cli("query", b.id, "SELECT count(*) AS n FROM ledger", "--store", store, "--json")
    assert r.json() == [{"n": 1}]


def test_text_output_of_every_command(planted, cli, tmp_path):
    cfg, b = planted
    store = cfg.parent / ".store"
    shown = cli("show", b.id, "--store", store)
    assert shown.code == 0 and "exact_duplicate" in shown.out and b.id in shown.out
    assert b.id[:16] in cli("log", "--store", store).out
    assert "rows conserved" in cli("verify", b.id, "--store", store).out
    assert "train.jsonl" in cli("export", b.id, "--out", tmp_path / "x", "--store", store).out
    assert "train" in cli("query", b.id, "SELECT DISTINCT split FROM rows", "--store", store).out
    assert cli("tag", "not an ok tag!", b.id, "--store", store).code == 2
    assert cli("tag", "deadbeef", b.id, "--store", store).code == 2  # looks like an id
    assert cli("export", b.id, "--format", "xml", "--store", store).code == 2
