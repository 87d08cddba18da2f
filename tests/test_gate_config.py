"""gate.toml: the contract `curate gate` reads, every problem named at once."""

from __future__ import annotations

import pytest

from curate.errors import ConfigError
from curate.gate.config import load_gate_config, suites

GOOD = """
[generation]
limit = 50

[target]
path = "evals/task.jsonl"
prompt_field = "question"
reference_field = "answer"
extract = '#### *(-?[0-9.,]+)'

[safety]
harmful = "advbench.csv"
safe = "xstest.csv"
safe_where = { label = "safe" }

[format]
path = "evals/json.jsonl"
schema = "answer.json"

[stop]
"""


def _files(tmp_path):
    (tmp_path / "evals").mkdir()
    for name in ("evals/task.jsonl", "evals/json.jsonl", "advbench.csv", "xstest.csv"):
        (tmp_path / name).write_text("")
    (tmp_path / "answer.json").write_text('{"type": "object"}')


def test_a_gate_toml_loads_with_defaults_and_names_its_suites(tmp_path):
    _files(tmp_path)
    (tmp_path / "gate.toml").write_text(GOOD)
    config, base = load_gate_config(tmp_path / "gate.toml")
    assert base == tmp_path.resolve()
    assert list(suites(config)) == ["target", "safety", "format", "stop"]
    assert config.generation.limit == 50 and config.generation.max_new_tokens == 256
    assert config.safety is not None and config.safety.min_refusal == 0.8
    assert config.safety.safe_where == {"label": "safe"}
    assert config.format is not None and config.format.schema_ == "answer.json"
    assert config.stop is not None and config.stop.min_rate == 0.95


def test_every_problem_is_named_with_its_key(tmp_path):
    _files(tmp_path)
    bad = (
        GOOD.replace("limit = 50", "limit = 50\ntemperature = 0.7")
        .replace("extract = '#### *(-?[0-9.,]+)'", "extract = '#### [0-9'")
        .replace('safe = "xstest.csv"', 'safe = "xstest.tsv"\nmin_refusal = 1.5')
        .replace('schema = "answer.json"', 'schema = "nope.json"')
        + '\n[regression]\npath = "golden.jsonl"\n\n[judge]\nendpoint = "127.0.0.1:8000"\nmodel = "j"\n'
    )
    (tmp_path / "gate.toml").write_text(bad)
    with pytest.raises(ConfigError) as caught:
        load_gate_config(tmp_path / "gate.toml")
    keys = [p.key for p in caught.value.problems]
    # pydantic's problems first (the file is not read further until they are fixed)
    assert keys == ["generation.temperature", "safety.min_refusal"]
    fixed = bad.replace("\ntemperature = 0.7", "").replace("\nmin_refusal = 1.5", "")
    (tmp_path / "gate.toml").write_text(fixed)
    with pytest.raises(ConfigError) as caught:
        load_gate_config(tmp_path / "gate.toml")
    found = {p.key: p.message for p in caught.value.problems}
    assert found == {
        "regression.path": "file not found",
        "safety.safe": "an eval set is .jsonl or .csv",
        "target.extract": found["target.extract"],
        "format.schema": found["format.schema"],
        "judge.endpoint": "an http(s) URL",
    }
    assert found["target.extract"].startswith("not a regex")
    assert found["format.schema"].startswith("not a JSON schema")


def test_a_regex_must_capture_and_safety_needs_a_set(tmp_path):
    _files(tmp_path)
    text = GOOD.replace("'#### *(-?[0-9.,]+)'", "'#### *-?[0-9.,]+'")
    text = text.replace('harmful = "advbench.csv"\nsafe = "xstest.csv"\n', "")
    (tmp_path / "gate.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_gate_config(tmp_path / "gate.toml")
    assert [p.key for p in caught.value.problems] == ["safety", "target.extract"]
