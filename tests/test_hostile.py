"""The second hostile round (issue 31): bad input and hostile requests get a clear answer
(exit 2 or HTTP 400 naming the problem), never a traceback, a hang or a write outside."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.conftest import write_jsonl


def _item(k: int, **labels) -> dict:
    return {
        "id": f"c{k}",
        "fields": {"prompt": f"question {k}", "response": f"wrong answer {k}"},
        "metadata": {"reason": "thumbs_down"},
        **labels,
    }


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", ".", "..", "a/b/c", "a\nb", 'x"y', ""])
def test_mine_import_refuses_names_that_are_not_one_simple_folder(tmp_path, cli, name):
    write_jsonl(tmp_path / "labeled.jsonl", [_item(0, correction="right")])
    r = cli("mine", "import", tmp_path / "labeled.jsonl", "--as", name, "--out", tmp_path / "m",
            "--store", tmp_path / "s")  # fmt: skip
    assert r.code == 2 and "a source name is letters, digits" in r.err
    assert not (tmp_path / "m").exists() and not (tmp_path.parent / "x").exists()


def test_mine_import_writes_source_toml_with_a_toml_writer(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "labeled.jsonl", [_item(0, correction="right")])
    weird = tmp_path / 'we"ird\n[tokenizer]\ntrust_remote_code = true'
    weird.mkdir()
    r = cli("mine", "import", "labeled.jsonl", "--as", "fixes", "--out", weird, "--store", "s")
    assert r.code == 0, r.err
    block = tomllib.loads((weird / "fixes" / "source.toml").read_text())
    assert set(block) == {"sources"}  # no [tokenizer] smuggled in through the path
    (source,) = block["sources"]
    assert source["name"] == "fixes" and source["role"] == "mined" and source["max_repeats"] == 3
    assert Path(source["path"]) == Path(weird.name) / "fixes" / "rows.jsonl"


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({**_item(1), "fields": "prompt text", "correction": "x"}, "field `fields` is text"),
        (_item(1, correction={"text": "x"}), "field `correction` is an object"),
        (_item(1, correction=["x"]), "field `correction` is a list"),
        ({**_item(1, correction="x"), "messages": 3}, "field `messages` is a number"),
        (
            {**_item(1, correction="x"), "messages": [{"role": "user"}]},
            "field `messages[0].content` is missing",
        ),
        (
            _item(1, correction_messages=[{"role": "assistant"}]),
            "field `correction_messages[0].content`",
        ),
        (_item(1, correction_messages="fixed"), "field `correction_messages` is text"),
        (_item(1, correction="x", decision=1), "field `decision` is a number"),
        ({**_item(1, correction="x"), "metadata": [1]}, "field `metadata` is a list"),
    ],
)
def test_label_files_of_the_wrong_shapes_name_file_line_and_field(tmp_path, cli, item, field):
    path = tmp_path / "labeled.jsonl"
    write_jsonl(path, [_item(0, correction="fine"), item])
    r = cli("mine", "import", path, "--as", "fixes", "--out", tmp_path / "m", "--store", tmp_path)
    assert r.code == 2 and f"{path}:2: {field}" in r.err, r.err
    assert not (tmp_path / "m").exists()


def test_unreadable_label_files_are_exit_2(tmp_path, cli):
    import os

    bad = tmp_path / "bytes.jsonl"
    bad.write_bytes(b'{"id": "\xff"}\n')
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for path, said in ((bad, "not UTF-8"), (deep, "nested too deeply"), (fifo, "not a regular")):
        r = cli("mine", "import", path, "--as", "f", "--out", tmp_path / "m", "--store", tmp_path)
        assert r.code == 2 and said in r.err, r.err


def test_one_hostile_log_row_is_one_unreadable_row(tmp_path, cli):
    """A 10,000-deep JSON line and lone surrogates (in a flat row, a proxy row, tags) are
    counted unread; the run goes on over the other rows."""
    good = [
        {"request_id": f"r{i}", "prompt": f"q {i}", "response": "a", "user_feedback": "thumbs_down"}
        for i in range(4)
    ]
    lines = [json.dumps(r) for r in good]
    lines.append('{"request_id":"deep","prompt":' + "[" * 10_000 + "]" * 10_000 + "}")
    lines.append(
        '{"input":{"model":"m","messages":[{"role":"user","content":"bad \\ud800"}]},'
        '"output":{"choices":[{"message":{"role":"assistant","content":"x"},'
        '"finish_reason":"length"}]}}'
    )
    lines.append('{"request_id":"s","prompt":"q","response":"x","tags":{"a":"\\udc00"}}')
    lines.append('{"request_id":"pair","prompt":"\\ud83d\\ude00","response":"x"}')  # kept
    (tmp_path / "logs.jsonl").write_text("\n".join(lines) + "\n")
    r = cli("mine", tmp_path / "logs.jsonl", "--store", tmp_path / "s", "--json")
    assert r.code == 0, r.err
    counts = r.json()["counts"]
    assert (counts["rows"], counts["unread"], counts["failures"]) == (5, 3, 4)
    from curate.mining.logs import read_logs

    logs = read_logs([tmp_path / "logs.jsonl"])
    assert logs.rows.column("messages").to_pylist()[-1] == [{"role": "user", "content": "😀"}]


def test_terminal_output_escapes_control_characters_of_user_data(tmp_path, cli):
    from tests.conftest import build, chat, write_config

    evil = "evil \x1b[2J\x1b]0;pwned\x07 title \x00 nul \u202e rtl"
    write_jsonl(tmp_path / "a.jsonl", [chat(evil, ""), chat("fine question", "fine answer")])
    built = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}]))
    r = cli("review", built.id, "--store", tmp_path / ".store")
    assert r.code == 0
    shown = "".join(r.out.split())  # the panel wraps lines
    assert "\\x1b[2J\\x1b]0;pwned\\x07title\\x00nul\\u202e" in shown
    assert not set(r.out) & {"\x1b", "\x00", "\x07", "\u202e"}
    bad = tmp_path / "b\x1b[31m.jsonl"
    r = cli("build", bad)
    assert r.code == 2 and "\x1b" not in r.err and "b\\x1b[31m.jsonl" in r.err


@pytest.mark.parametrize(
    "query", ["ACCESS_KEY=AKIAEXAMPLEKEY", "Secret_Key=hunter2secret", "aws_session_token=t0k3n"]
)
def test_store_uris_with_credentials_in_any_case_are_refused_unechoed(tmp_path, cli, query):
    r = cli("log", "--store", f"s3://bucket/prefix?{query}")
    value = query.split("=")[1]
    assert r.code == 2 and "holds credentials" in r.err and value not in r.err


def test_a_uri_query_value_is_never_echoed_in_an_error(cli):
    r = cli("log", "--store", "s3://bucket/prefix?bogus_option=SUPERSECRETVALUE")
    assert r.code == 2 and "SUPERSECRETVALUE" not in r.err and "bogus_option=…" in r.err


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    summary = {"run_id": "abcd", "manifest": "f" * 64, "device": "cpu", "steps": 1}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    return run


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("summary.json", b"{not json", "summary.json: run summary cannot be read"),
        ("summary.json", b"[1, 2]", "summary.json: not a curate run summary"),
        ("gate.json", b"\xff\xfe", "gate.json: gate report cannot be read"),
        ("gate.json", b'"pass"', "gate.json: not a gate report"),
        ("metrics.jsonl", b'{"step": 1}\nnot json\n{"step": 2}\n', "metrics.jsonl:2: not JSON"),
        ("metrics.jsonl", b'{"step": 1}\n[3]\n', "metrics.jsonl:2: not a logged step"),
        ("metrics.jsonl", b'{"step": "x"}\n', "metrics.jsonl:1: not a logged step"),
        ("metrics.jsonl", b"\xff\n", "metrics.jsonl: training metrics cannot be read"),
    ],
)
def test_report_of_a_damaged_run_is_exit_2_naming_the_file(tmp_path, cli, name, content, said):
    run = _run_folder(tmp_path)
    (run / name).write_bytes(content)
    r = cli("report", run)
    assert r.code == 2 and said in r.err, r.err


def test_report_out_a_folder_and_gate_schema_a_fifo_are_exit_2(tmp_path, cli):
    import os

    run = _run_folder(tmp_path)
    (tmp_path / "out").mkdir()
    for extra in ((), ("--overwrite",)):
        r = cli("report", run, "--out", tmp_path / "out", *extra)
        assert r.code == 2 and "is a folder" in r.err
    assert cli("report", run, "--out", tmp_path / "r.html").code == 0
    os.mkfifo(tmp_path / "schema.json")
    (tmp_path / "sets.jsonl").write_text('{"prompt": "p", "reference": "r"}\n')
    (tmp_path / "gate.toml").write_text('[format]\npath = "sets.jsonl"\nschema = "schema.json"\n')
    r = cli("gate", run, "--config", tmp_path / "gate.toml")
    assert r.code == 2 and "schema.json: JSON schema is a FIFO" in r.err, r.err


def test_mine_redacts_every_log_field_it_keeps_or_prints(tmp_path, cli):
    """Secrets in `model`, `request_id`, `timestamp`, `finish_reason`, tags, metadata and a
    bad row's evidence reach neither the queue, the store nor the printed report."""
    email, key = "ops.lead@example.com", "AKIA" + "QWERTYUIOPASDFGH"
    token = "ghp_" + "Zq8Xw7Cv6Bn5Mm4Ll3Kk2Jj1Hh0Gg9Ff8Dd7"
    rows = [
        {"request_id": f"{key}-{i}", "prompt": f"question {i}", "response": "wrong",
         "user_feedback": "thumbs_down", "model": f"ft:{email}", "finish_reason": token,
         "timestamp": f"2026-11-0{i + 1} {email}",
         "tags": {"customer": email}, "metadata": {"api_key": token}}
        for i in range(3)
    ]  # fmt: skip
    lines = [json.dumps(r) for r in rows]
    lines.append(json.dumps({"prompt": "q", "response": "a", "user_feedback": f"bad {email}"}))
    (tmp_path / "logs.jsonl").write_text("\n".join(lines) + "\n")
    store = tmp_path / "s"
    r = cli("mine", tmp_path / "logs.jsonl", "--store", store, "--queue", tmp_path / "q", "--json")
    assert r.code == 0, r.err
    run = r.json()
    assert run["counts"]["unread"] == 1 and run["pii"]["email"] >= 7
    shown = [r.out, cli("mine", "report", run["mining_run"], "--store", store).out,
             cli("mine", "report", run["mining_run"], "--store", store, "--json").out]  # fmt: skip
    stored = [p.read_bytes().decode("utf-8", "replace") for p in store.rglob("*") if p.is_file()]
    queued = [p.read_text() for p in (tmp_path / "q").iterdir()]
    for text in shown + stored + queued:
        for secret in (email, key, token):
            assert secret not in text, (secret, text[:200])
    queue = (tmp_path / "q" / "queue.jsonl").read_text()
    assert "[EMAIL]" in queue and "[API_KEY]" in queue
