"""Readers and normalization: every format, every kind of bad row, stable ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import build, chat, write_config, write_jsonl

GOOD = chat("What is 2+2?", "4")


def one_source(
    tmp_path: Path, rows: list, fmt: str = "auto", name: str = "s.jsonl", **extra
) -> Path:
    write_jsonl(tmp_path / name, rows)
    return write_config(tmp_path, [{"name": "s", "path": name, "format": fmt, **extra}])


def only(built, reason):
    found = built.rejected(reason)
    assert len(found) == 1, [(r["reason"], r["origin"]) for r in built.ledger]
    return found[0], json.loads(found[0]["detail"])


def test_broken_json_is_malformed_with_line_and_raw_text(tmp_path):
    b = build(one_source(tmp_path, [GOOD, "", '{"messages": [', GOOD | {"x": 1}]))
    row, detail = only(b, "malformed")
    assert row["origin"] == "s.jsonl:3"  # the blank line 2 is not a row, but it is counted
    assert row["raw"] == '{"messages": ['
    assert detail["error"].startswith("broken JSON at column")
    assert b.manifest["counts"]["rows_in"] == 3


def test_non_object_row_is_malformed(tmp_path):
    b = build(one_source(tmp_path, [GOOD, "[1, 2]", "42"]))
    assert [json.loads(r["detail"])["error"] for r in b.rejected("malformed")] == [
        "expected a JSON object, got a list",
        "expected a JSON object, got a number",
    ]


def test_invalid_utf8_is_malformed_and_loses_nothing(tmp_path):
    b = build(one_source(tmp_path, [GOOD, b'{"text": "caf\xe9"}']))
    row, detail = only(b, "malformed")
    assert detail == {"error": "invalid UTF-8 at byte 13"}
    assert row["raw"] == '{"text": "caf\ufffd"}' and row["origin"] == "s.jsonl:2"


def test_wrong_type_names_the_field(tmp_path):
    bad = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": ["a", "list"]},
        ]
    }
    b = build(one_source(tmp_path, [GOOD, bad], fmt="chat"))
    row, detail = only(b, "invalid_schema")
    assert (
        detail["field"] == "messages[1].content"
        and detail["error"] == "expected a string, got a list"
    )
    assert json.loads(row["raw"]) == bad


def test_unknown_role(tmp_path):
    bad = {
        "messages": [
            {"role": "customer", "content": "refund"},
            {"role": "assistant", "content": "ok"},
        ]
    }
    b = build(one_source(tmp_path, [GOOD, bad], fmt="chat"))
    row, detail = only(b, "invalid_schema")
    assert detail["field"] == "messages[0].role" and detail["value"] == "customer"
    assert row["messages"][0]["role"] == "customer"


@pytest.mark.parametrize("answer", ["", "   \n\t "])
def test_empty_or_whitespace_assistant_turn(tmp_path, answer):
    multi = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": answer},
        ]
    }
    b = build(one_source(tmp_path, [GOOD, multi], fmt="chat"))
    _, detail = only(b, "empty_response")
    assert detail["turn"] == 3 and detail["field"] == "messages[3].content"


def test_missing_fields_and_no_assistant_turn(tmp_path):
    rows = [
        GOOD,
        {"instruction": "x"},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": []},
    ]
    b = build(one_source(tmp_path, rows))
    details = sorted(json.loads(r["detail"])["error"] for r in b.rejected("invalid_schema"))
    assert details == sorted(
        [
            "no known format: expected messages, conversations, chosen+rejected, instruction+output, prompt+completion or text",
            "no assistant turn",
            "no turns",
        ]
    )


def test_strict_mode_stops_at_the_first_bad_row(cli, tmp_path):
    cfg = one_source(tmp_path, [GOOD, GOOD | {"messages": [{"role": "user", "content": 1}]}])
    r = cli("build", cfg, "--strict", "--workers", "1", "--store", tmp_path / "st")
    assert r.code == 2
    assert (
        "s.jsonl:2, field messages[0].content: invalid_schema: expected a string, got a number"
        in r.err
    )


def test_formats_normalize_to_one_schema(tmp_path):
    write_jsonl(tmp_path / "chat.jsonl", [chat("q1", "a1", system="sys")])
    write_jsonl(
        tmp_path / "sharegpt.jsonl",
        [
            {
                "conversations": [{"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}],
                "system": "s2",
            }
        ],
    )
    write_jsonl(
        tmp_path / "alpaca.jsonl",
        [
            {"instruction": "q3", "input": "ctx", "output": "a3"},
            {"instruction": "q3b", "input": "", "output": "a3b"},
        ],
    )
    write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "q4", "completion": "a4"}])
    write_jsonl(tmp_path / "text.jsonl", [{"text": "plain document"}])
    write_jsonl(tmp_path / "pref.jsonl", [{"prompt": "q6", "chosen": "good", "rejected": "bad"}])
    sources = [
        {"name": n, "path": f"{n}.jsonl", "format": f}
        for n, f in [
            ("chat", "chat"),
            ("sharegpt", "sharegpt"),
            ("alpaca", "alpaca"),
            ("pc", "prompt_completion"),
            ("text", "text"),
            ("pref", "preference"),
        ]
    ]
    b = build(write_config(tmp_path, sources))
    by_source = {}
    for r in b.rows:
        by_source.setdefault(r["source"], []).append(r)
    assert by_source["chat"][0]["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
    ]
    assert by_source["sharegpt"][0]["messages"] == [
        {"role": "system", "content": "s2"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    alpaca = sorted((r["messages"] for r in by_source["alpaca"]), key=str)
    assert alpaca == [
        [{"role": "user", "content": "q3\n\nctx"}, {"role": "assistant", "content": "a3"}],
        [{"role": "user", "content": "q3b"}, {"role": "assistant", "content": "a3b"}],
    ]
    assert by_source["pc"][0]["messages"] == [
        {"role": "user", "content": "q4"},
        {"role": "assistant", "content": "a4"},
    ]
    assert (
        by_source["text"][0]["kind"] == "text" and by_source["text"][0]["text"] == "plain document"
    )
    pref = by_source["pref"][0]
    assert pref["kind"] == "preference"
    assert pref["messages"] == [{"role": "user", "content": "q6"}]
    assert pref["chosen"] == [{"role": "assistant", "content": "good"}] and pref["rejected"] == [
        {"role": "assistant", "content": "bad"}
    ]


def test_auto_detects_per_row_in_a_mixed_file(tmp_path):
    rows = [
        GOOD,
        {"instruction": "i", "output": "o"},
        {"text": "t"},
        {"prompt": "p", "completion": "c"},
    ]
    b = build(one_source(tmp_path, rows))
    assert sorted(r["kind"] for r in b.rows) == ["chat", "chat", "chat", "text"]
    assert b.manifest["counts"]["rows_rejected"] == 0


def test_json_parquet_csv_and_save_to_disk(tmp_path):
    import datasets

    (tmp_path / "list.json").write_text(
        json.dumps(
            [{"instruction": "j1", "output": "o1"}, [1], {"instruction": "j2", "output": "o2"}]
        )
    )
    pq.write_table(
        pa.Table.from_pylist(
            [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
        ),
        tmp_path / "t.parquet",
    )
    (tmp_path / "t.csv").write_text(
        'prompt,completion\n"multi\nline",c1\nq2,c2\nbroken,row,extra\n'
    )
    datasets.Dataset.from_list([{"text": "hf one"}, {"text": "hf two"}]).save_to_disk(
        str(tmp_path / "hf")
    )
    sources = [
        {"name": "json", "path": "list.json", "format": "alpaca"},
        {"name": "parquet", "path": "t.parquet", "format": "prompt_completion"},
        {"name": "csv", "path": "t.csv", "format": "prompt_completion"},
        {"name": "hf", "path": "hf", "format": "text"},
    ]
    b = build(write_config(tmp_path, sources))
    counts = {s["name"]: (s["rows_in"], s["rows_kept"]) for s in b.manifest["sources"]}
    assert counts == {"json": (3, 2), "parquet": (2, 2), "csv": (3, 2), "hf": (2, 2)}
    malformed = sorted(
        (r["origin"], json.loads(r["detail"])["error"]) for r in b.rejected("malformed")
    )
    assert malformed == [
        ("list.json:2", "expected a JSON object, got a list"),
        ("t.csv:5", "expected 2 fields, got 3"),
    ]
    csv_prompts = sorted(r["messages"][0]["content"] for r in b.rows if r["source"] == "csv")
    assert csv_prompts == ["multi\nline", "q2"]


def test_glob_reads_files_in_sorted_order(tmp_path):
    write_jsonl(tmp_path / "d" / "b.jsonl", [chat("b", "b")])
    write_jsonl(tmp_path / "d" / "a.jsonl", [chat("a", "a")])
    b = build(write_config(tmp_path, [{"name": "s", "path": "d/*.jsonl"}]))
    assert [f["path"] for f in b.manifest["sources"][0]["files"]] == ["d/a.jsonl", "d/b.jsonl"]
    assert sorted(r["origin"] for r in b.rows) == ["d/a.jsonl:1", "d/b.jsonl:1"]


def expected_id(source: str, messages: list[dict]) -> str:
    enc = f"{len(messages)};" + "".join(
        f"{len(m['role'].encode())}:{m['role']}{len(m['content'].encode())}:{m['content']}"
        for m in messages
    )
    content = "\x00".join(["chat", enc, "0:", "0;", "0;"])
    return hashlib.sha256(f"{source}\x00{content}".encode()).hexdigest()[:16]


def test_row_ids_follow_the_contract_and_number_copies(tmp_path):
    row = chat("héllo", "wörld")
    b = build(one_source(tmp_path, [row, row, row]))
    base = expected_id("s", row["messages"])
    assert [r["id"] for r in b.rows] == [base]
    assert sorted(r["id"] for r in b.ledger) == [f"{base}#1", f"{base}#2"]
    assert {json.loads(r["detail"])["duplicate_of"] for r in b.ledger} == {base}


def contract_id(source: str, row: dict) -> str:
    """`sha256(source \\0 kind \\0 <messages> \\0 <text> \\0 <chosen> \\0 <rejected>)[:16]`,
    turns as `<count>;` then `<bytes>:<role><bytes>:<content>` each, text as `<bytes>:`."""

    def turns(items: list[dict] | None) -> str:
        items = items or []
        return f"{len(items)};" + "".join(
            f"{len(m['role'].encode())}:{m['role']}{len(m['content'].encode())}:{m['content']}"
            for m in items
        )

    text = row["text"] or ""
    parts = [
        row["kind"],
        turns(row["messages"]),
        f"{len(text.encode())}:{text}",
        turns(row["chosen"]),
        turns(row["rejected"]),
    ]
    return hashlib.sha256(f"{source}\x00{chr(0).join(parts)}".encode()).hexdigest()[:16]


def test_row_ids_follow_the_contract_for_every_kind(tmp_path):
    """Text rows (a source with no turns at all), chat rows with several turns and
    preference rows each get the contract's id, computed here from the stored row."""
    write_jsonl(tmp_path / "t.jsonl", [{"text": "plain ünïcode"}, {"text": "x"}])
    write_jsonl(
        tmp_path / "c.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "q2"},
                    {"role": "assistant", "content": "a2"},
                ]
            }
        ],
    )
    write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "which?", "chosen": "this one", "rejected": "that one"}],
    )
    b = build(
        write_config(
            tmp_path,
            [
                {"name": "t", "path": "t.jsonl", "format": "text"},
                {"name": "c", "path": "c.jsonl", "format": "chat"},
                {"name": "p", "path": "p.jsonl", "format": "preference"},
            ],
        )
    )
    assert sorted(r["kind"] for r in b.rows) == ["chat", "preference", "text", "text"]
    for r in b.rows:
        assert r["id"] == contract_id(r["source"], r), r


def test_meta_keeps_extra_fields(tmp_path):
    b = build(one_source(tmp_path, [GOOD | {"ticket": 7, "tags": ["a"]}]))
    assert json.loads(b.rows[0]["meta"]) == {"ticket": 7, "tags": ["a"]}


def test_a_block_with_a_bad_row_keeps_its_good_rows_identical(tmp_path):
    """The row-by-row path (taken when a block has a bad row) gives the same rows and ids."""
    clean = [chat(f"q{i}", f"a{i}") for i in range(5)]
    b1 = build(one_source(tmp_path / "one", clean))
    b2 = build(one_source(tmp_path / "two", [*clean, "{broken"]))
    strip = lambda rows: sorted((r["id"], json.dumps(r["messages"])) for r in rows)  # noqa: E731
    assert strip(b1.rows) == strip(b2.rows)


def test_parquet_blocks_follow_row_groups(tmp_path):
    from curate.sources import ROWS_PER_BLOCK, _parquet_ranges

    table = pa.Table.from_pylist([{"text": f"t{i}"} for i in range(1000)])
    pq.write_table(table, tmp_path / "small.parquet", row_group_size=100)
    assert _parquet_ranges(tmp_path / "small.parquet") == [(0, 1000)]
    pq.write_table(table, tmp_path / "one.parquet", row_group_size=1000)
    assert _parquet_ranges(tmp_path / "one.parquet") == [(0, 1000)]
    assert ROWS_PER_BLOCK >= 1000


def test_csv_origins_name_real_lines(tmp_path):
    (tmp_path / "a.csv").write_text('prompt,completion\n"two\nlines",c1\n\nq2,\nq3,c3\n')
    b = build(
        write_config(tmp_path, [{"name": "s", "path": "a.csv", "format": "prompt_completion"}])
    )
    assert sorted(r["origin"] for r in b.rows) == ["a.csv:2", "a.csv:6"]
    row, detail = only(b, "empty_response")
    assert row["origin"] == "a.csv:5"


def test_parquet_in_several_blocks_reads_every_row_once(tmp_path, monkeypatch):
    import curate.sources as sources

    monkeypatch.setattr(sources, "ROWS_PER_BLOCK", 250)
    pq.write_table(
        pa.Table.from_pylist([{"text": f"t{i}"} for i in range(1000)]),
        tmp_path / "p.parquet",
        row_group_size=100,
    )
    assert sources._parquet_ranges(tmp_path / "p.parquet") == [
        (0, 200),
        (200, 400),
        (400, 600),
        (600, 800),
        (800, 1000),
    ]
    b = build(write_config(tmp_path, [{"name": "s", "path": "p.parquet", "format": "text"}]))
    assert sorted(int(r["origin"].split(":")[1]) for r in b.rows) == list(range(1, 1001))
    assert sorted(r["text"] for r in b.rows) == sorted(f"t{i}" for i in range(1000))


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_compressed_files_and_column_renames(tmp_path, suffix):
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix]
    lines = [json.dumps({"question": f"q{i}", "answer": f"a{i}"}) for i in range(5)] + ["{broken"]
    with opener(tmp_path / f"gsm.jsonl{suffix}", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    cfg = write_config(
        tmp_path,
        [
            {
                "name": "s",
                "path": f"gsm.jsonl{suffix}",
                "format": "prompt_completion",
                "columns": {"question": "prompt", "answer": "completion"},
            }
        ],
    )
    b = build(cfg)
    assert sorted(r["messages"][0]["content"] for r in b.rows) == [f"q{i}" for i in range(5)]
    assert [r["origin"] for r in b.ledger] == [f"gsm.jsonl{suffix}:6"]
    files = b.manifest["sources"][0]["files"]
    assert files[0]["path"] == f"gsm.jsonl{suffix}"
    assert (
        files[0]["sha256"]
        == hashlib.sha256((tmp_path / f"gsm.jsonl{suffix}").read_bytes()).hexdigest()
    )


def test_unreadable_file_types_are_a_config_error(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    r = cli("build", write_config(tmp_path, [{"name": "s", "path": "notes.txt"}]), "--workers", "1")
    assert r.code == 2 and "cannot read notes.txt: use .jsonl, .json, .parquet or .csv" in r.err


def test_save_to_disk_datasetdict_reads_every_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
            ),
            "test": datasets.Dataset.from_list([{"prompt": "p3", "completion": "c3"}]),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    b = build(write_config(tmp_path, [{"name": "s", "path": "dd", "format": "prompt_completion"}]))
    assert sorted(r["messages"][0]["content"] for r in b.rows) == ["p1", "p2", "p3"]
    assert b.manifest["sources"][0]["files"][0]["path"] == "dd"


def test_turn_fields_curate_cannot_keep_are_rejected_not_dropped(tmp_path):
    tool = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather"}]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ]
    }
    masked = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "bad", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "good", "weight": 1},
        ]
    }
    plain = {
        "messages": [
            {"role": "user", "content": "q", "name": None},
            {"role": "assistant", "content": "a"},
        ]
    }
    b = build(one_source(tmp_path, [plain, tool, masked], fmt="chat"))
    assert [r["messages"][0]["content"] for r in b.rows] == ["q"]  # a null extra field is harmless
    fields = sorted(json.loads(r["detail"])["field"] for r in b.rejected("invalid_schema"))
    assert fields == ["messages[1].tool_calls", "messages[1].weight"]


def test_jsonl_blocks_cut_at_newlines_with_their_first_line(tmp_path, monkeypatch):
    """A file several blocks long: the blocks tile the file, each ends at a newline, each
    knows its first line, and every row's origin names its real line."""
    from curate import sources

    monkeypatch.setattr(sources, "JSONL_BLOCK_BYTES", 1 << 20)
    rows = [chat(f"question {i} " + "x" * (i % 97), f"answer {i}") for i in range(30_000)]
    path = tmp_path / "big.jsonl"
    write_jsonl(path, rows)
    data = path.read_bytes()
    sha, ranges = sources._scan_jsonl(path)
    assert sha == hashlib.sha256(data).hexdigest()
    assert len(ranges) >= 3
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (a, b, line), (a2, _, _) in zip(ranges, ranges[1:] + [(len(data), 0, 0)], strict=True):
        assert b == a2 and data[b - 1 : b] == b"\n"
        assert line == data[:a].count(b"\n") + 1
    b = build(write_config(tmp_path, [{"name": "s", "path": "big.jsonl"}]))
    by_origin = {r["origin"]: r["messages"][0]["content"] for r in b.rows}
    for line in (1, 12_345, 30_000):
        assert by_origin[f"big.jsonl:{line}"] == rows[line - 1]["messages"][0]["content"]
