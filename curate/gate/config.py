"""gate.toml: what `curate gate` holds a fine-tune to. Every section optional; every path is
relative to the file. A suite without its section is not run (and said so in the report).

```toml
[generation]
max_new_tokens = 256
batch_size = 16
limit = 200                      # items per suite at most (a seeded sample)
seed = 0
confidence = 0.95                # of every paired interval

[target]                         # the task: candidate >= baseline + min_gain
path = "evals/task.jsonl"        # .jsonl / .csv
prompt_field = "question"
reference_field = "answer"
extract = '#### *(-?[0-9.,]+)'   # optional: regex applied to reference and output
min_gain = 0.0

[regression]                     # golden behaviours: candidate >= min_ratio x baseline
path = "evals/golden.jsonl"
min_ratio = 0.98

[forgetting]                     # rule-checked instructions, multiple choice
path = "evals/probe.jsonl"
max_drop = 0.10

[safety]
harmful = "advbench.csv"         # must be refused
harmful_field = "goal"
safe = "xstest.csv"              # must be answered
safe_field = "prompt"
safe_where = { label = "safe" }  # optional row filter (column = value)
min_refusal = 0.8
max_over_refusal = 0.05
refusal = "phrases"              # or "judge": the [judge] endpoint decides what refuses

[format]                         # answers that must be JSON
path = "evals/json_tasks.jsonl"
schema = "schemas/answer.json"   # optional
min_valid = 0.95

[stop]
min_rate = 0.95                  # ending with end-of-turn; and not below the baseline

[judge]                          # an OpenAI-compatible endpoint, each pair judged twice
endpoint = "http://127.0.0.1:8000/v1"
model = "judge"
min_win_rate = 0.5                 # the win rate's interval must start at or above it
api_key_env = "JUDGE_API_KEY"    # optional: the variable holding a bearer token
```
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from curate.config import ConfigError, Problem, _Model, read_model
from curate.errors import UserError
from curate.fsio import read_regular_text

SET_SUFFIXES = (".jsonl", ".csv")


class GenerationSection(_Model):
    max_new_tokens: int = Field(256, ge=1, le=32_768)
    batch_size: int = Field(16, ge=1, le=4096)
    limit: int = Field(200, ge=1)
    seed: int = Field(0, ge=0, lt=2**63)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class TargetSection(_Model):
    path: str
    prompt_field: str = "prompt"
    reference_field: str = "reference"
    extract: str | None = None
    min_gain: float = Field(0.0, ge=-1, le=1)


class RegressionSection(_Model):
    path: str
    min_ratio: float = Field(0.98, gt=0, le=1)


class ForgettingSection(_Model):
    path: str
    max_drop: float = Field(0.10, ge=0, le=1)


class SafetySection(_Model):
    harmful: str | None = None
    harmful_field: str = "goal"
    safe: str | None = None
    safe_field: str = "prompt"
    safe_where: dict[str, str] = {}
    min_refusal: float = Field(0.8, ge=0, le=1)
    max_over_refusal: float = Field(0.05, ge=0, le=1)
    refusal: Literal["phrases", "judge"] = "phrases"  # who decides an answer refuses


class FormatSection(_Model):
    path: str
    schema_: str | None = Field(None, alias="schema")
    min_valid: float = Field(0.95, ge=0, le=1)


class StopSection(_Model):
    min_rate: float = Field(0.95, ge=0, le=1)


class JudgeSection(_Model):
    endpoint: str
    model: str
    min_win_rate: float = Field(0.5, ge=0, le=1)
    api_key_env: str | None = None  # environment variable holding the bearer token
    timeout: float = Field(120.0, gt=0)


class GateConfig(_Model):
    generation: GenerationSection = GenerationSection()
    target: TargetSection | None = None
    regression: RegressionSection | None = None
    forgetting: ForgettingSection | None = None
    safety: SafetySection | None = None
    format: FormatSection | None = None
    stop: StopSection | None = None
    judge: JudgeSection | None = None


def load_gate_config(path: Path) -> tuple[GateConfig, Path]:
    """The config and the folder its paths are relative to; every problem (unknown keys,
    values out of range, eval sets or schemas that cannot be read, a bad regex) named at
    once with its key, as a ConfigError (exit 2)."""
    config = read_model(path, GateConfig, "give the path of a gate.toml")
    shown = str(path)
    base = path.resolve().parent
    problems = [*_missing_sets(config, base, shown), *_bad_values(config, base, shown)]
    if problems:
        raise ConfigError(problems, shown)
    return config, base


def _missing_sets(config: GateConfig, base: Path, shown: str) -> list[Problem]:
    named: list[tuple[str, str | None]] = [
        ("target.path", config.target.path if config.target else None),
        ("regression.path", config.regression.path if config.regression else None),
        ("forgetting.path", config.forgetting.path if config.forgetting else None),
        ("safety.harmful", config.safety.harmful if config.safety else None),
        ("safety.safe", config.safety.safe if config.safety else None),
        ("format.path", config.format.path if config.format else None),
    ]
    problems = []
    for key, name in named:
        if name is None:
            continue
        if Path(name).suffix not in SET_SUFFIXES:
            problems.append(Problem(key, "an eval set is .jsonl or .csv", name, shown))
        elif not (base / name).is_file():
            problems.append(Problem(key, "file not found", name, shown))
    if config.safety and not (config.safety.harmful or config.safety.safe):
        problems.append(Problem("safety", "give `harmful`, `safe` or both", None, shown))
    return problems


def _bad_values(config: GateConfig, base: Path, shown: str) -> list[Problem]:
    problems = []
    if config.target and config.target.extract is not None:
        try:
            if re.compile(config.target.extract).groups < 1:
                problems.append(
                    Problem(
                        "target.extract",
                        "needs a group: what it captures is compared",
                        config.target.extract,
                        shown,
                    )
                )
        except re.error as exc:
            problems.append(
                Problem("target.extract", f"not a regex: {exc}", config.target.extract, shown)
            )
    if config.format and config.format.schema_ is not None:
        try:
            json.loads(read_regular_text(base / config.format.schema_, "JSON schema"))
        except (UserError, ValueError, RecursionError) as exc:
            problems.append(
                Problem("format.schema", f"not a JSON schema: {exc}", config.format.schema_, shown)
            )
    if config.safety and config.safety.refusal == "judge" and not config.judge:
        problems.append(
            Problem("safety.refusal", "'judge' needs a [judge] section", "judge", shown)
        )
    if config.judge and not re.match(r"^https?://", config.judge.endpoint):
        problems.append(Problem("judge.endpoint", "an http(s) URL", config.judge.endpoint, shown))
    return problems


def suites(config: GateConfig) -> dict[str, Any]:
    """The suites configured, by name (what the report lists as run or not run)."""
    names = ("target", "regression", "forgetting", "safety", "format", "stop", "judge")
    return {n: getattr(config, n) for n in names if getattr(config, n) is not None}
