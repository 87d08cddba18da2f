"""Every output path works on every kind of build; template faults are said, not hidden."""

from __future__ import annotations

import json

import datasets
import pyarrow.parquet as pq
import pytest

import curate
from tests.conftest import build, chat, write_config, write_jsonl
from tests.test_hang import _qwen

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
KINDS = {
    "plain": "",
    "tokenized": '[tokenizer]\npath = "{qwen}"\nmax_length = 256\n',
    "redacted": '[validate]\npii = "redact"\n',
}


def _rows() -> list[dict]:
    rows = [chat(f"question {i}", f"answer {i} mail me at a{i}@example.com") for i in range(12)]
    rows += [
        {"prompt": f"pick {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)
    ]
    return rows


@pytest.mark.parametrize("kind", [*KINDS, "preference"])
def test_every_export_format_round_trips_every_kind_of_build(tmp_path, cli, kind):
    rows = _rows()
    if kind == "preference":
        write_jsonl(tmp_path / "a.jsonl", rows[12:])
        sources = [{"name": "a", "path": "a.jsonl", "format": "preference"}]
        extra = KINDS["tokenized"]
    else:
        write_jsonl(tmp_path / "a.jsonl", rows[:12])
        sources = [{"name": "a", "path": "a.jsonl"}]
        extra = KINDS[kind]
    cfg = write_config(
        tmp_path, sources, extra=extra.format(qwen=_qwen()) + "[split]\nvalidation = 0.25\n"
    )
    b = build(cfg)
    store = tmp_path / ".store"
    expected = {r["id"]: r for r in b.rows}
    for fmt in ("jsonl", "parquet", "hf"):
        out = tmp_path / fmt
        r = cli("export", b.id, "--format", fmt, "--out", out, "--store", store)
        assert r.code == 0, r.err
        got: list[dict] = []
        for split in ("train", "validation"):
            if fmt == "jsonl":
                got += [
                    json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()
                ]
            elif fmt == "parquet":
                got += pq.read_table(out / f"{split}.parquet").to_pylist()
            else:
                got += datasets.load_from_disk(str(out / "dataset"))[split].to_list()
        assert sorted(g["id"] for g in got) == sorted(expected), fmt
        for g in got:
            want = expected[g["id"]]
            assert g["messages"] == want["messages"] and g.get("chosen") == want.get("chosen")
            if kind in ("tokenized", "preference"):
                assert g["input_ids"] == want["input_ids"] and g["n_trained"] == want["n_trained"]
            if kind == "redacted":
                assert "@example.com" not in json.dumps(g) and "[EMAIL]" in json.dumps(g)
    loaded = curate.load(b.id, split="train", store=store)
    assert len(loaded) == len([r for r in b.rows if r["split"] == "train"])


def test_a_token_across_the_turn_start_is_warned_with_count_example_and_fix(tmp_path, cli):
    rows = [chat(f"q{i}", f"\n\nanswer {i}") for i in range(3)]
    write_jsonl(tmp_path / "a.jsonl", rows + [chat("x", "plain"), chat("y", "z")])
    (tmp_path / "chatml.jinja").write_text(CHATML)  # keeps answers as written (Qwen3's strips)
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}],
        extra=f'[tokenizer]\npath = "{_qwen()}"\nchat_template = "chatml.jinja"\n',
    )
    r = cli("build", cfg, "--json", "--store", tmp_path / "st")
    assert r.code == 0, r.err
    warning = next(w for w in r.json()["warnings"] if "assistant turns" in w)
    assert warning.startswith("3 of 5 assistant turns (60%) start inside a token")
    assert "'\\n' + '\\n\\n'" in warning and "strip leading whitespace" in warning
    shown = cli("build", cfg, "--store", tmp_path / "st")
    assert "3 of 5 assistant turns" in shown.out.replace("\n", " ")


def test_a_template_closing_turns_with_a_string_the_tokenizer_lacks_is_refused(tmp_path, cli):
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])
    (tmp_path / "t.jinja").write_text(
        "{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] }}<|eot|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|start|>assistant\n{% endif %}"
    )
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}],
        extra=f'[tokenizer]\npath = "{_qwen()}"\nchat_template = "t.jinja"\n',
    )
    r = cli("build", cfg, "--store", tmp_path / "st")
    assert r.code == 2
    assert "closes assistant turns with '<|eot|>'" in r.err and "do not match" in r.err
