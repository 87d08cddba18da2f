"""Bad input is a ledger row with its origin, or an exit-2 message naming file and field:
never a crash, a hang, a lost record or a phantom one. One test per finding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import build, chat, write_config, write_jsonl


def _one(tmp_path: Path, name: str, fmt: str | None = None) -> Path:
    src = {"name": "s", "path": name, **({"format": fmt} if fmt else {})}
    return write_config(tmp_path, [src])


def _reasons(b) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in b.ledger:
        out.setdefault(r["reason"], []).append(r["origin"])
    return out


def test_json_nested_ten_thousand_deep_is_one_malformed_row(tmp_path):
    deep = "[" * 10_000 + "]" * 10_000
    write_jsonl(
        tmp_path / "d.jsonl",
        [
            '{"messages": ' + deep + "}",
            json.dumps({**chat("q", "a"), "x": 0})[:-1] + ', "extra": ' + deep + "}",
            chat("fine", "kept"),
        ],
    )
    b = build(_one(tmp_path, "d.jsonl"), workers=2)
    assert _reasons(b) == {"malformed": ["d.jsonl:1", "d.jsonl:2"]}
    assert [r["messages"][0]["content"] for r in b.rows] == ["fine"]
    # inside a JSON list: the deep record alone is rejected
    (tmp_path / "l.json").write_text(
        '[{"prompt": "p1", "completion": "c"}, {"prompt": '
        + deep
        + '}, {"prompt": "p3", "completion": "c"}]'
    )
    b = build(_one(tmp_path, "l.json"), store=tmp_path / "s2")
    assert _reasons(b) == {"malformed": ["l.json:2"]}
    assert b.ledger[0]["raw"].startswith('{"prompt": [[[[')  # the record, for reviewers
    assert sorted(r["messages"][0]["content"] for r in b.rows) == ["p1", "p3"]


def test_lone_surrogates_are_malformed_rows_wherever_they_are(tmp_path):
    write_jsonl(
        tmp_path / "s.jsonl",
        [
            '{"messages":[{"role":"user","content":"a\\ud800b"},{"role":"assistant","content":"c"}]}',
            '{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"note":"x\\udfffy"}',
            chat("ok", "fine"),
        ],
    )
    b = build(_one(tmp_path, "s.jsonl"))
    assert _reasons(b) == {"malformed": ["s.jsonl:1", "s.jsonl:2"]}
    fields = sorted(json.loads(r["detail"])["field"] for r in b.ledger)
    assert fields == ["messages[0].content", "note"]
    (tmp_path / "l.json").write_text(
        '[{"prompt": "p\\ud800", "completion": "c"}, {"prompt": "p2", "completion": "c"}]'
    )
    b = build(_one(tmp_path, "l.json"), store=tmp_path / "s2")
    assert _reasons(b) == {"malformed": ["l.json:1"]} and len(b.rows) == 1


def test_json_list_with_bom_or_one_invalid_byte_keeps_every_record(tmp_path):
    records = [{"prompt": f"p{i}", "completion": "c"} for i in range(3)]
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(records).encode())
    b = build(_one(tmp_path, "bom.json"))
    assert len(b.rows) == 3 and not b.ledger
    raw = json.dumps(records).encode().replace(b'"p1"', b'"p\xff1"')
    (tmp_path / "byte.json").write_bytes(raw)
    b = build(_one(tmp_path, "byte.json"), store=tmp_path / "s2")
    assert _reasons(b) == {"malformed": ["byte.json:2"]} and len(b.rows) == 2


def test_empty_or_blank_files_give_no_phantom_row(tmp_path):
    (tmp_path / "e.json").write_text("")
    (tmp_path / "w.json").write_text("  \n\t\n")
    (tmp_path / "w.csv").write_text("  \n \n")
    for name in ("e.json", "w.json", "w.csv"):
        b = build(_one(tmp_path, name), store=tmp_path / f"st-{name}", allow_empty=True)
        assert b.manifest["counts"]["rows_in"] == 0 and not b.ledger, name


def test_unreadable_parquet_is_exit_2_naming_the_file(tmp_path, cli):
    pq.write_table(pa.table({"prompt": ["p"], "completion": ["c"]}), tmp_path / "good.parquet")
    (tmp_path / "t.parquet").write_bytes((tmp_path / "good.parquet").read_bytes()[:-20])
    (tmp_path / "z.parquet").write_bytes(b"")
    for name in ("t.parquet", "z.parquet"):
        r = cli("build", _one(tmp_path, name), "--store", tmp_path / "st")
        assert r.code == 2 and name in r.err and "Parquet" in r.err, r.err


def test_binary_columns_are_text_when_utf8_else_a_schema_row(tmp_path):
    pq.write_table(
        pa.table(
            {
                "prompt": pa.array([b"abc", b"\xff", b"ok"], pa.binary()),
                "completion": ["x", "y", "z"],
                "blob": pa.array([b"\xff\xfe", None, b"text"], pa.binary()),
            }
        ),
        tmp_path / "b.parquet",
    )
    b = build(_one(tmp_path, "b.parquet", "prompt_completion"))
    assert _reasons(b) == {"invalid_schema": ["b.parquet:2"]}
    assert json.loads(b.ledger[0]["detail"])["field"] == "prompt"
    metas = {r["messages"][0]["content"]: json.loads(r["meta"]) for r in b.rows}
    assert metas == {"abc": {"blob": "base64://4="}, "ok": {"blob": "text"}}


def test_csv_with_a_duplicate_header_is_exit_2_naming_the_column(tmp_path, cli):
    (tmp_path / "d.csv").write_text("prompt,prompt,completion\np1,p2,c\n")
    r = cli("build", _one(tmp_path, "d.csv", "prompt_completion"), "--store", tmp_path / "st")
    assert r.code == 2 and "d.csv line 1" in r.err and "'prompt' appears 2 times" in r.err


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ("[build]\nseed = -1\n", "build.seed"),
        ("[mixture]\ntemperature = inf\n", "mixture.temperature"),
        ("[dedup]\nnear = { num_perm = 100000000 }\n", "dedup.near.num_perm"),
        ('[tokenizer]\npath = "t"\ntrust_remote_code = "yes"\n', "tokenizer.trust_remote_code"),
        ('[tokenizer]\npath = "t"\ntrust_remote_code = 1\n', "tokenizer.trust_remote_code"),
    ],
)
def test_config_values_are_strictly_typed_and_bounded(tmp_path, cli, snippet, key):
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])
    (tmp_path / "m.toml").write_text(snippet + '\n[[sources]]\nname = "a"\npath = "a.jsonl"\n')
    r = cli("build", tmp_path / "m.toml", "--store", tmp_path / "st")
    assert r.code == 2 and key in r.err, r.err


@pytest.mark.parametrize("weight", ['"0.7"', "true"])
def test_a_weight_must_be_a_number(tmp_path, cli, weight):
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])
    (tmp_path / "m.toml").write_text(
        f'[[sources]]\nname = "a"\npath = "a.jsonl"\nweight = {weight}\n'
    )
    r = cli("build", tmp_path / "m.toml", "--store", tmp_path / "st")
    assert r.code == 2 and "sources[0] ('a').weight" in r.err, r.err


def test_a_config_path_that_is_a_folder_is_exit_2(tmp_path, cli):
    r = cli("build", tmp_path, "--store", tmp_path / "st")
    assert r.code == 2 and "not a file" in r.err


def test_a_source_linked_to_a_device_is_refused(tmp_path, cli):
    os.symlink("/dev/zero", tmp_path / "z.jsonl")
    r = cli("build", _one(tmp_path, "z.jsonl"), "--store", tmp_path / "st")
    assert r.code == 2 and "not a regular file" in r.err


def test_a_glob_through_a_symlink_loop_reads_each_file_once(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", [chat(f"q{i}", "a") for i in range(20)])
    os.symlink(data, data / "loop")  # data/loop/loop/... all name data/
    b = build(_one(tmp_path, "data/**/*.jsonl"))
    assert b.manifest["counts"]["rows_in"] == 20 and not b.ledger
    assert [f["path"] for s in b.manifest["sources"] for f in s["files"]] == ["data/a.jsonl"]
