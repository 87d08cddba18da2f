"""A new user's first week (issue 32): config mistakes answered with the right key, output
readable in a terminal and a pipe, `--version`."""

from __future__ import annotations

import io

import pytest

from tests.conftest import build, chat, write_config, write_jsonl


@pytest.mark.parametrize(
    ("file", "text", "said"),
    [
        ("mixture.toml", '[[sources]]\nname = "a"\npath = "a.jsonl"\nweigth = 1\n',
         "sources[0] ('a').weigth: unknown key; did you mean 'weight'? valid here: columns,"),
        ("mixture.toml", '[[sources]]\nname = "a"\npath = "a.jsonl"\n[dedup]\nexcat = true\n',
         "dedup.excat: unknown key; did you mean 'exact'? valid here: exact, near, semantic"),
        ("mine.toml", "[rules]\ntruncated_min_word = 5\n",
         "rules.truncated_min_word: unknown key; did you mean 'truncated_min_words'?"),
        ("gate.toml", '[stop]\nmin_rat = 0.8\n', "stop.min_rat: unknown key; did you mean"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_answered_with_the_closest_and_the_valid_ones(
    tmp_path, cli, file, text, said
):
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])
    (tmp_path / "logs.jsonl").write_text('{"prompt": "q", "response": "a"}\n')
    (tmp_path / file).write_text(text)
    command = {
        "mixture.toml": ("build", tmp_path / file),
        "mine.toml": ("mine", tmp_path / "logs.jsonl", "--config", tmp_path / file,
                      "--store", tmp_path / "s"),
        "gate.toml": ("gate", tmp_path, "--config", tmp_path / file),
    }[file]  # fmt: skip
    r = cli(*command)
    assert r.code == 2 and said in r.err, r.err


def test_train_toml_unknown_key_names_the_closest(tmp_path):
    from curate.errors import ConfigError
    from curate.train.config import load_train_config

    (tmp_path / "train.toml").write_text("[train]\nlearning_rat = 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_train_config(tmp_path / "train.toml")


def test_version(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.strip().startswith("curate 0.")


def test_piped_tables_are_not_cut_and_the_review_prompt_reads(tmp_path, cli, monkeypatch):
    name = "customer_support_tickets_from_the_helpdesk_export_2026"
    rows = [chat(f"question {i}", f"answer {i}") for i in range(4)] + [
        chat("question 1", "answer 1")
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    built = build(write_config(tmp_path, [{"name": name, "path": "a.jsonl"}]))
    store = tmp_path / ".store"
    stats = cli("review", built.id, "--stats", "--store", store)
    assert name in stats.out and "…" not in stats.out  # not cut at 80 columns
    monkeypatch.setattr("sys.stdin", io.StringIO("q\n"))
    loop = cli("review", built.id, "--decide", "--store", store)
    assert "[k]eep [r]eject [s]kip [u]ndo [q]uit" in loop.out
    kept = next(r["id"] for r in built.rows)
    r = cli("review", built.id, "--decide", "--id", kept, "--reject", "--store", store)
    assert r.code == 0 and "(None)" not in r.out and "(a row the build kept)" in r.out
