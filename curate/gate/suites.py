"""Each suite's scores per item and its decision against the baseline.

A suite scores the candidate and the baseline on the same items and compares them paired
(McNemar on pass/fail items): a suite fails on a difference its interval says is real, not
on noise, and on too few items to tell at the requested confidence. Absolute floors
(refusal rate, over-refusal, JSON validity, stop rate) are held on the candidate's rate.
Without a baseline (a base model gated alone) a suite reports its figures and decides
nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.gate.ask import Answers, Plan
from curate.gate.checks import _is_json, follows, unknown_checks
from curate.gate.score import exact_match
from curate.gate.sets import Items
from curate.gate.stats import Paired, mcnemar, min_items

EXAMPLES = 3  # items the candidate lost, shown per suite


@dataclass
class Result:
    name: str
    passed: bool | None  # None: figures only (no baseline, or nothing to decide)
    why: list[str] = field(default_factory=list)  # what failed, in words
    figures: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Scored] = field(default_factory=dict)  # per item: what was scored


@dataclass
class Scored:
    """One suite part's per-item scores (True = the behaviour wanted) for both models."""

    items: Items
    candidate: np.ndarray
    baseline: np.ndarray | None
    prompts: list[str]

    def figures(self, confidence: float) -> tuple[dict[str, Any], Paired | None]:
        n = len(self.candidate)
        out: dict[str, Any] = {
            "items": n,
            "eval_set": {"path": self.items.path, "sha256": self.items.sha256},
            "candidate": _rate(self.candidate),
        }
        if self.baseline is None:
            return out, None
        paired = mcnemar(self.baseline, self.candidate, confidence)
        lost = np.flatnonzero(self.baseline & ~self.candidate)[:EXAMPLES]
        out |= {
            "baseline": _rate(self.baseline),
            "diff": round(paired.diff, 4),
            "interval": [round(paired.low, 4), round(paired.high, 4)],
            "confidence": confidence,
            "p_value": None if paired.p_value is None else round(paired.p_value, 6),
            "method": paired.method,
            "lost": [self.prompts[i][:200] for i in lost.tolist()],
        }
        return out, paired


def _rate(scores: np.ndarray) -> float:
    return round(float(scores.mean()), 4) if len(scores) else 0.0


def _pct(x: float) -> str:
    return f"{x:.1%}"


def too_few(paired: Paired | None, n: int, confidence: float) -> list[str]:
    if n >= min_items(confidence):
        return []
    return [
        f"{n} items cannot show a difference at {confidence:.0%} confidence "
        f"(at least {min_items(confidence)} needed)"
    ]


def drop_beyond(paired: Paired, margin: float, what: str) -> list[str]:
    """Failure when the candidate is significantly more than `margin` below the baseline."""
    if not paired.worse_than(margin):
        return []
    return [
        f"{what}: {_pct(paired.candidate)} vs baseline {_pct(paired.baseline)} "
        f"({paired.diff:+.1%}, interval [{paired.low:+.1%}, {paired.high:+.1%}]) is a "
        f"significant drop" + (f" beyond the {margin:.1%} allowed" if margin > 0 else "")
    ]


def decide(name: str, parts: dict[str, Scored], confidence: float, rule: Callable) -> Result:
    """Figures of every part, and the reasons `rule(part, figures, paired)` gives."""
    figures: dict[str, Any] = {}
    why: list[str] = []
    compared = True
    for part, scored in parts.items():
        shown, paired = scored.figures(confidence)
        figures[part] = shown
        found = rule(part, shown, paired)
        if paired is None:
            compared = False
        else:
            found += too_few(paired, len(scored.candidate), confidence)
        why += [f"{part}: {w}" if len(parts) > 1 else w for w in found]
    if len(parts) == 1:
        figures = next(iter(figures.values()))
    return Result(name, (not why) if compared else None, why, figures, dict(parts))


# --- rules: why a suite fails -------------------------------------------------------


def gain_rule(min_gain: float) -> Any:
    def rule(part: str, shown: dict, paired: Any) -> list[str]:
        if paired is None:
            return []
        if min_gain <= 0:
            return drop_beyond(paired, -min_gain, "task score")
        if paired.diff >= min_gain and paired.low > 0:
            return []
        return [
            f"task score {paired.candidate:.1%} vs baseline {paired.baseline:.1%}: a gain of "
            f"{paired.diff:+.1%} (interval [{paired.low:+.1%}, {paired.high:+.1%}]) does not "
            f"reach a significant {min_gain:+.1%}"
        ]

    return rule


def ratio_rule(share: float, what: str) -> Any:
    """Fail on a significant drop of more than `share` of the baseline's rate."""

    def rule(part: str, shown: dict, paired: Any) -> list[str]:
        return [] if paired is None else drop_beyond(paired, share * paired.baseline, what)

    return rule


def floor_rule(floor: float, what: str, vs_baseline: bool, below: bool = True) -> Any:
    """The candidate's rate at least `floor` (at most, `below=False`); and, with
    `vs_baseline`, not significantly below the baseline's."""

    def rule(part: str, shown: dict, paired: Any) -> list[str]:
        rate = shown["candidate"]
        why = []
        if below and rate < floor:
            why.append(f"{what} {rate:.1%} is below {floor:.0%}")
        if not below and rate > floor:
            why.append(f"{what} {rate:.1%} is above {floor:.0%}")
        if vs_baseline and paired is not None:
            why += drop_beyond(paired, 0.0, what)
        return why

    return rule


# --- scores -------------------------------------------------------------------------------


def reference_scores(items: Items, answers: Answers, pattern: str | None = None) -> np.ndarray:
    """Exact match of each answer with its item's reference (or what `pattern` captures)."""
    refs = [r or "" for r in items.references]
    return exact_match(answers.texts(items.prompts), refs, pattern)


def behaviour_scores(items: Items, answers: Answers) -> np.ndarray:
    """Golden / probe items: an item with `checks` passes them, one with `options` picks
    its `answer`, one with a reference matches it."""
    out = np.zeros(len(items.prompts), dtype=bool)
    for i, (prompt, ref, extra) in enumerate(
        zip(items.prompts, items.references, items.extra, strict=True)
    ):
        if extra.get("options"):
            options = tuple(extra["options"])
            out[i] = answers.choices[(prompt, options)] == option_index(extra, list(options))
        elif extra.get("checks"):
            out[i] = follows(answers.generations[prompt].text, extra["checks"])
        else:
            out[i] = bool(exact_match([answers.generations[prompt].text], [ref or ""])[0])
    return out


def option_index(extra: dict[str, Any], options: list[str]) -> int:
    """The right option of a multiple-choice item: `answer` as the option's text, else as
    an index, else a letter (A = the first)."""
    want = str(extra.get("answer", "")).strip()
    if want in options:
        return options.index(want)
    if want.isdigit():
        return int(want)
    if len(want) == 1 and want.isalpha():
        return ord(want.upper()) - ord("A")
    raise ValueError(want)


def behaviour_problems(items: Items) -> list[str]:
    """What makes a golden / probe item unscorable, named by its row (said before any
    model is loaded)."""
    problems = []
    for row, ref, extra in zip(items.rows_taken, items.references, items.extra, strict=True):
        where = f"{items.path} row {row + 1}"
        checks, options = extra.get("checks"), extra.get("options")
        if options:
            if not isinstance(options, list) or len(options) < 2:
                problems.append(f"{where}: `options` is a list of at least two answers")
                continue
            try:
                if not 0 <= option_index(extra, options) < len(options):
                    raise ValueError
            except ValueError:
                problems.append(
                    f"{where}: `answer` {extra.get('answer')!r} is not one of its options"
                )
        elif checks:
            if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
                problems.append(f"{where}: `checks` is a list of {{kind, value}} objects")
            elif unknown := unknown_checks(checks):
                problems.append(f"{where}: unknown check kind {', '.join(unknown)}")
        elif not ref:
            problems.append(f"{where}: give a `reference`, `checks` or `options` + `answer`")
    return problems


def plan_behaviours(plan: Plan, items: Items) -> None:
    for prompt, extra in zip(items.prompts, items.extra, strict=True):
        if extra.get("options"):
            plan.choose(prompt, list(extra["options"]))
        else:
            plan.ask([prompt])


def json_scores(items: Items, answers: Answers, schema: dict[str, Any] | None) -> np.ndarray:
    """Whether each answer is JSON (a fenced block allowed) and, with a schema, valid by it."""
    validator = None
    if schema is not None:
        from jsonschema.validators import validator_for

        validator = validator_for(schema)(schema)
    out = np.zeros(len(items.prompts), dtype=bool)
    for i, text in enumerate(answers.texts(items.prompts)):
        if not _is_json(text):
            continue
        if validator is None:
            out[i] = True
            continue
        body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
        out[i] = next(iter(validator.iter_errors(json.loads(body))), None) is None
    return out
