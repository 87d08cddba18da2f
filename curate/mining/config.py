"""mine.toml: what `curate mine` judges logs by. Every section optional; paths are relative
to the file.

```toml
[rules]
low_score = 0.5                  # automated_score below this fails
high_score = 0.8                 # at or above (and no failure): a positive
disabled = ["language_mismatch"] # rules not to run
refusals = "refusals.txt"        # phrases, one per line: replaces the built-in list
harmful = "advbench.csv"         # harmful requests: CSV (column `goal`, else the first),
                                 # JSONL (`prompt`/`goal`) or text, one per line
harmful_match = 0.7              # share of a request's word 3-grams a prompt must hold

[formats]                        # expected_format name → JSON schema file
order = "schemas/order.json"

[privacy]
pii = "redact"                   # redact (default) | reject | off

[clusters]                       # failure clusters over the candidates' prompts
enabled = true                   # default: on when sentence-transformers is installed
model = "all-MiniLM-L6-v2 folder or hub id"  # default: all-MiniLM-L6-v2 (offline package)
cosine = 0.4                     # mean cosine at which two groups of prompts are one
max_candidates = 2000            # the most severe × frequent candidates a run clusters

[[evals]]                        # as in mixture.toml: failures whose prompt overlaps an
name = "gsm8k-test"              # eval item are dropped from the queue and reported
path = "evals/gsm8k/test.jsonl"
fields = ["question"]
```
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from curate.config import (
    ConfigError,
    ContaminationSection,
    EvalSection,
    Problem,
    _Model,
    read_model,
)
from curate.errors import UserError
from curate.fsio import read_regular_text
from curate.mining.rules import RULES, RuleSettings


class RulesSection(_Model):
    low_score: float = Field(0.5, ge=0, le=1)
    high_score: float = Field(0.8, ge=0, le=1)
    truncated_min_words: int = Field(20, ge=1)
    disabled: list[str] = []
    refusals: str | None = None
    harmful: str | None = None
    safe: str | None = None  # prompts a refusal of is wrong (XSTest-like), same formats
    harmful_match: float = Field(0.7, gt=0, le=1)
    latency_mads: float = Field(5.0, gt=0)


class PrivacySection(_Model):
    pii: Literal["off", "redact", "reject"] = "redact"


class ClustersSection(_Model):
    enabled: bool | None = None  # None: when sentence-transformers can be imported
    model: str | None = None
    cosine: float = Field(0.4, gt=0, lt=1)
    # embedding is the cost (~100 prompts/s a core); linkage holds n² / 2 distances
    max_candidates: int = Field(2000, ge=1, le=50_000)


class MineConfig(_Model):
    rules: RulesSection = RulesSection()
    formats: dict[str, str] = {}
    privacy: PrivacySection = PrivacySection()
    clusters: ClustersSection = ClustersSection()
    evals: list[EvalSection] = []  # candidates overlapping these are never queued
    contamination: ContaminationSection = ContaminationSection()


def load_mine_config(path: Path | None) -> tuple[MineConfig, RuleSettings, dict[str, Any]]:
    """The config (defaults without a file), the rule settings it makes (lists and schemas
    read), and what of it identifies a mining run (the files' contents included)."""
    if path is None:
        return MineConfig(), RuleSettings(), {}
    config = read_model(path, MineConfig, "give the path of a mine.toml")
    shown = str(path)
    base = path.resolve().parent
    rules = config.rules
    problems = [
        Problem("rules.disabled", f"unknown rule (rules: {', '.join(RULES)})", r, shown)
        for r in rules.disabled
        if r not in RULES
    ]
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("refusals", "harmful", "safe"):
        name = getattr(rules, key)
        if name is not None:
            try:
                lists[key] = _phrases(base / name)
            except (OSError, ValueError) as exc:
                problems.append(Problem(f"rules.{key}", f"cannot be read: {exc}", name, shown))
    schemas = {}
    for name, file in config.formats.items():
        try:
            schemas[name] = json.loads(read_regular_text(base / file, "JSON schema"))
        except (UserError, ValueError, RecursionError) as exc:
            problems.append(Problem(f"formats.{name}", f"not a JSON schema: {exc}", file, shown))
    if problems:
        raise ConfigError(problems, shown)
    settings = RuleSettings(
        low_score=rules.low_score,
        high_score=rules.high_score,
        truncated_min_words=rules.truncated_min_words,
        refusals=tuple(p.lower() for p in lists.get("refusals", ())) or RuleSettings().refusals,
        harmful=lists.get("harmful", ()),
        safe=lists.get("safe", ()),
        harmful_match=rules.harmful_match,
        schemas=schemas,
        disabled=tuple(rules.disabled),
        latency_mads=rules.latency_mads,
    )
    identity = {**config.model_dump(), "lists": lists, "schemas": schemas}
    return config, settings, identity


def cluster_model(section: ClustersSection, base: Path) -> tuple[Any, str | None]:
    """(the embedding model clusters use, or None; why there is none when off by default).
    Asked for explicitly (`enabled = true`, or a `model`), a missing library is an error."""
    from curate.dedup.semantic import resolve_model

    if section.enabled is False:
        return None, "off in mine.toml"
    asked = section.enabled is True or section.model is not None
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:  # found, not imported: fast
        if asked:
            raise UserError(
                "clusters need sentence-transformers: pip install 'curate[semantic]', or set "
                "[clusters] enabled = false"
            )
        return None, "sentence-transformers is not installed (pip install 'curate[semantic]')"
    return resolve_model(section.model, base), None


def _phrases(path: Path) -> tuple[str, ...]:
    """One phrase per line of a text file, the `goal` / `prompt` (else first) column of a CSV, or the
    `prompt` / `goal` of each JSONL row."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            return ()
        named = [c for c in ("goal", "prompt") if c in rows[0]]  # AdvBench, XSTest
        column = rows[0].index(named[0]) if named else 0
        return tuple(r[column] for r in rows[1:] if len(r) > column and r[column].strip())
    if path.suffix == ".jsonl":
        found = []
        for line in text.splitlines():
            if line.strip():
                row = json.loads(line)
                found.append(str(row.get("prompt") or row.get("goal") or ""))
        return tuple(f for f in found if f.strip())
    return tuple(line.strip() for line in text.splitlines() if line.strip())
