"""Config errors: exit code 2, one message naming every problem with key, value and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import chat, write_config, write_jsonl


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "a.jsonl", [chat("hi", "hello")])
    write_jsonl(tmp_path / "b.jsonl", [chat("yo", "hey")])
    return tmp_path


def build(cli, config: Path):
    return cli("build", config, "--workers", "1")


def test_unknown_key_names_key_and_file(cli, data):
    cfg = write_config(data, [{"name": "a", "path": "a.jsonl", "wieght": 2}])
    r = build(cli, cfg)
    assert r.code == 2
    assert f"{cfg}: " in r.err
    assert "sources[0] ('a').wieght: unknown key" in r.err
    assert "Traceback" not in r.err


def test_wrong_type(cli, data):
    r = build(cli, write_config(data, [{"name": "a", "path": "a.jsonl", "max_repeats": "lots"}]))
    assert r.code == 2
    assert "sources[0] ('a').max_repeats" in r.err and "'lots'" in r.err


def test_missing_file(cli, data):
    r = build(cli, write_config(data, [{"name": "a", "path": "nope/*.jsonl"}]))
    assert r.code == 2
    assert "sources[0] ('a').path: no data file matches" in r.err and "'nope/*.jsonl'" in r.err


@pytest.mark.parametrize("weight", [-1.0, "nan"])
def test_negative_or_nan_weight(cli, data, weight):
    value = "nan" if weight == "nan" else str(weight)
    cfg = data / "m.toml"
    cfg.write_text(f'[[sources]]\nname = "a"\npath = "a.jsonl"\nweight = {value}\n')
    r = build(cli, cfg)
    assert r.code == 2
    assert "sources[0] ('a').weight: must be a finite number >= 0" in r.err


def test_weights_sum_to_zero(cli, data):
    r = build(
        cli,
        write_config(
            data,
            [
                {"name": "a", "path": "a.jsonl", "weight": 0.0},
                {"name": "b", "path": "b.jsonl", "weight": 0.0},
            ],
        ),
    )
    assert r.code == 2
    assert "weights sum to 0" in r.err


def test_duplicate_source_names(cli, data):
    r = build(
        cli,
        write_config(data, [{"name": "a", "path": "a.jsonl"}, {"name": "a", "path": "b.jsonl"}]),
    )
    assert r.code == 2
    assert "sources[1] ('a').name: duplicate source name (also sources[0])" in r.err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[sources]]\nname = "a"\n', "sources[0] ('a').path: required key is missing"),
        ("[[sources]\nname=", "not valid TOML"),
    ],
)
def test_config_text_errors(cli, data, toml, message):
    cfg = data / "m.toml"
    cfg.write_text(toml)
    r = build(cli, cfg)
    assert r.code == 2 and message in r.err


def test_config_not_found(cli, data):
    r = build(cli, data / "missing.toml")
    assert r.code == 2 and "file not found" in r.err


def test_every_problem_reported_at_once(cli, data):
    cfg = write_config(
        data,
        [
            {"name": "a", "path": "a.jsonl", "weight": -2.0},
            {"name": "a", "path": "gone.jsonl", "weight": 1.0},
        ],
        extra="[split]\nvalidation = 1.5\n",
    )
    r = build(cli, cfg)
    assert r.code == 2
    assert "4 problems in the config" in r.err
    for piece in (
        "split.validation",
        "weight: must be a finite",
        "duplicate source name",
        "gone.jsonl",
    ):
        assert piece in r.err


def test_missing_template_and_decisions_files_are_named(cli, data):
    cfg = write_config(
        data,
        [{"name": "a", "path": "a.jsonl"}],
        extra='[tokenizer]\npath = "x"\nchat_template = "nope.jinja"\n[[overrides]]\npath = "o.jsonl"\n',
    )
    r = build(cli, cfg)
    assert r.code == 2
    assert "tokenizer.chat_template: file not found" in r.err
    assert "overrides[0].path: decisions file not found" in r.err


def test_debug_shows_the_traceback(cli, data):
    cfg = write_config(data, [{"name": "a", "path": "a.jsonl", "bogus": 1}])
    from curate.errors import ConfigError

    with pytest.raises(ConfigError):
        from curate.cli import main

        main(["build", str(cfg), "--debug"])


def test_usage_error_exit_code(cli):
    r = cli("build")
    assert r.code == 2


def test_weights_on_some_sources_only(cli, data):
    r = build(
        cli,
        write_config(
            data,
            [{"name": "a", "path": "a.jsonl", "weight": 1.0}, {"name": "b", "path": "b.jsonl"}],
        ),
    )
    assert r.code == 2
    assert "give every source a weight, or none" in r.err and "missing on sources[1]" in r.err


def test_store_flag_and_env(cli, data, monkeypatch):
    cfg = write_config(data, [{"name": "a", "path": "a.jsonl"}])
    r = cli("build", cfg, "--workers", "1", "--json", "--store", data / "flag-store")
    assert r.code == 0 and (data / "flag-store" / "manifests").is_dir()
    monkeypatch.setenv("CURATE_STORE", str(data / "env-store"))
    r2 = cli("build", cfg, "--workers", "1", "--json")
    assert r2.code == 0 and (data / "env-store" / "manifests").is_dir()
    assert cli("show", r2.json()["manifest_id"][:10], "--json").code == 0
    monkeypatch.delenv("CURATE_STORE")
    assert (
        cli("show", r2.json()["manifest_id"][:10], "--store", data / "env-store", "--json").code
        == 0
    )
