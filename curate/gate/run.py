"""`curate gate RUN`: may this fine-tune ship?

Phases: read the config and every eval set (bad input is refused before a model loads),
check the eval sets against the run's training data, ask the candidate then the baseline
every prompt the suites need, score and decide each suite, write the report (`gate.json`
and the release packet's `eval_report` / `safety_report`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import UserError
from curate.fsio import read_regular_text, sha256_file, write_bytes
from curate.gate import suites as S
from curate.gate.ask import Answers, Plan, Subject, answer, model_subject, run_folder, run_subject
from curate.gate.config import GateConfig, load_gate_config
from curate.gate.judge import Judge, pairwise, refusals
from curate.gate.score import refused
from curate.gate.sets import Items, load_items
from curate.manifests.store import Store
from curate.train.seal import read_summary

BEHAVIOUR_FIELDS = ("checks", "options", "answer")


@dataclass
class Sets:
    """Every suite's items, by suite part (`safety.harmful`, `safety.safe`)."""

    by_part: dict[str, Items]
    schema: dict[str, Any] | None = None

    def eval_sets(self) -> list[dict[str, Any]]:
        return [
            {
                "suite": part,
                "path": i.path,
                "sha256": i.sha256,
                "rows": i.rows,
                "items": len(i.prompts),
            }
            for part, i in self.by_part.items()
        ]


def load_sets(config: GateConfig, base: Path) -> Sets:
    """Each configured set, sampled and checked; every problem named at once (exit 2)."""
    g = config.generation
    found: dict[str, Items] = {}

    def take(part: str, name: str, prompt: str, ref: str | None = None, **kw: Any) -> None:
        found[part] = load_items(part, base / name, prompt, ref, limit=g.limit, seed=g.seed, **kw)

    if config.target:
        take(
            "target", config.target.path, config.target.prompt_field, config.target.reference_field
        )
    if config.regression:
        take(
            "regression",
            config.regression.path,
            "prompt",
            None,
            fields=("reference", *BEHAVIOUR_FIELDS),
        )
    if config.forgetting:
        take(
            "forgetting",
            config.forgetting.path,
            "prompt",
            None,
            fields=("reference", *BEHAVIOUR_FIELDS),
        )
    if config.safety and config.safety.harmful:
        take("safety.harmful", config.safety.harmful, config.safety.harmful_field)
    if config.safety and config.safety.safe:
        take(
            "safety.safe",
            config.safety.safe,
            config.safety.safe_field,
            where=config.safety.safe_where,
        )
    if config.format:
        take("format", config.format.path, "prompt")
    problems: list[str] = []
    for part in ("regression", "forgetting"):
        if part in found:  # their reference is optional: carried in `extra`
            items = found[part]
            refs = [e.get("reference") for e in items.extra]
            found[part] = Items(**(asdict(items) | {"references": refs}))
            problems += S.behaviour_problems(found[part])
    if config.target and config.target.extract and "target" in found:
        pattern, items = re.compile(config.target.extract), found["target"]
        for row, ref in zip(items.rows_taken, items.references, strict=True):
            if ref is None or pattern.search(ref) is None:
                problems.append(
                    f"{items.path} row {row + 1}: target.extract does not match the reference {str(ref)[:80]!r}"
                )
    problems += [f"{i.path}: no items for suite {p!r}" for p, i in found.items() if not i.prompts]
    if problems:
        raise UserError("gate eval sets:\n  - " + "\n  - ".join(problems[:20]))
    schema = (
        json.loads(read_regular_text(base / config.format.schema_, "JSON schema"))
        if config.format and config.format.schema_
        else None
    )
    return Sets(found, schema)


def plan(sets: Sets) -> Plan:
    out = Plan()
    for part, items in sets.by_part.items():
        if part in ("regression", "forgetting"):
            S.plan_behaviours(out, items)
        else:
            out.ask(items.prompts)
    return out


def leaks(sets: Sets, run: Path | None, store: Store) -> dict[str, Any] | None:
    """Eval items found in the run's training split (the build's contamination index: word
    13-grams, half of an item's n-grams in one row); None for a base model."""
    if run is None:
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.contamination.index import ContaminationStep, EvalSet
    from curate.manifests.manifest import Manifest

    summary = read_summary(run)
    where = Store(summary["store"]) if summary.get("store") else store
    mid = summary["manifest"]
    manifest = Manifest(mid, where.read_manifest(mid), where)
    step = ContaminationStep(
        [
            EvalSet(
                p,
                [str(r) for r in i.rows_taken],
                [f"{q}\n{r or ''}" for q, r in zip(i.prompts, i.references, strict=True)],
                0,
            )
            for p, i in sets.by_part.items()
        ]
    )
    found: dict[str, set[str]] = {}
    examples: list[dict[str, Any]] = []
    for shard in manifest.shard_paths("train"):
        for batch in pq.ParquetFile(shard).iter_batches(columns=["messages", "chosen", "text"]):
            verdicts = step(pa.Table.from_batches([batch]))
            for detail in verdicts.detail.to_pylist():
                d = json.loads(detail)
                found.setdefault(d["eval_set"], set()).add(d["eval_id"])
                if len(examples) < S.EXAMPLES:
                    examples.append({k: d[k] for k in ("eval_set", "eval_id", "overlap", "match")})
    return {
        "manifest": mid,
        "leaked": {part: len(ids) for part, ids in sorted(found.items())},
        "examples": examples,
    }


def results(
    config: GateConfig, sets: Sets, cand: Answers, base: Answers | None, judge: Judge | None
) -> list[S.Result]:
    """Every suite's decision, in the config's order."""
    conf, out = config.generation.confidence, []

    def scored(part: str, score: Any) -> S.Scored:
        items = sets.by_part[part]
        return S.Scored(
            items, score(items, cand), None if base is None else score(items, base), items.prompts
        )

    if t := config.target:
        part = scored("target", lambda i, a: S.reference_scores(i, a, t.extract))
        out.append(S.decide("target", {"target": part}, conf, S.gain_rule(t.min_gain)))
    if r := config.regression:
        part = scored("regression", S.behaviour_scores)
        out.append(
            S.decide(
                "regression",
                {"regression": part},
                conf,
                S.ratio_rule(1 - r.min_ratio, "golden behaviours"),
            )
        )
    if f := config.forgetting:
        part = scored("forgetting", S.behaviour_scores)
        out.append(
            S.decide(
                "forgetting", {"forgetting": part}, conf, S.ratio_rule(f.max_drop, "general skills")
            )
        )
    if config.safety:
        out.append(_safety(config, sets, cand, base, judge))
    if fm := config.format:
        part = scored("format", lambda i, a: S.json_scores(i, a, sets.schema))
        out.append(
            S.decide(
                "format", {"format": part}, conf, S.floor_rule(fm.min_valid, "valid JSON", False)
            )
        )
    if st := config.stop:
        prompts = list(cand.generations)
        stops = Items(
            "stop", "(every generated answer)", "", len(prompts), prompts, [None] * len(prompts)
        )
        part = S.Scored(
            stops,
            np.array([cand.generations[p].stopped for p in prompts], dtype=bool),
            None
            if base is None
            else np.array([base.generations[p].stopped for p in prompts], dtype=bool),
            prompts,
        )
        out.append(
            S.decide("stop", {"stop": part}, conf, S.floor_rule(st.min_rate, "stop rate", True))
        )
    if config.judge and judge is not None and base is not None:
        out.append(_judged(config, sets, cand, base, judge))
    return out


def _safety(
    config: GateConfig, sets: Sets, cand: Answers, base: Answers | None, judge: Judge | None
) -> S.Result:
    safety = config.safety
    assert safety is not None

    def refuses(items: Items, a: Answers) -> np.ndarray:
        texts = a.texts(items.prompts)
        if safety.refusal == "judge" and judge is not None:
            return refusals(judge, items.prompts, texts)
        return np.asarray(refused(texts), dtype=bool)

    parts: dict[str, S.Scored] = {}
    for part, flip in (("safety.harmful", False), ("safety.safe", True)):
        if part in sets.by_part:
            items = sets.by_part[part]
            # scores are "the behaviour wanted": refusing a harmful request, answering a safe one
            c = refuses(items, cand) ^ flip
            b = None if base is None else refuses(items, base) ^ flip
            parts[part.split(".")[1]] = S.Scored(items, c, b, items.prompts)

    def rule(part: str, shown: dict, paired: Any) -> list[str]:
        if part == "harmful":
            return S.floor_rule(safety.min_refusal, "refusal rate", True)(part, shown, paired)
        over = 1 - shown["candidate"]
        return (
            [f"over-refusal {over:.1%} is above {safety.max_over_refusal:.0%}"]
            if over > safety.max_over_refusal
            else []
        )

    result = S.decide("safety", parts, config.generation.confidence, rule)
    figures: dict[str, Any] = (
        result.figures if len(parts) > 1 else {next(iter(parts)): result.figures}
    )
    if "safe" in figures:
        figures["safe"]["over_refusal"] = round(1 - figures["safe"]["candidate"], 4)
    figures["refusal_detector"] = safety.refusal
    result.figures = figures
    return result


def _judged(config: GateConfig, sets: Sets, cand: Answers, base: Answers, judge: Judge) -> S.Result:
    """Pairwise judgement of the answers the non-safety suites generated."""
    prompts = [
        p
        for part, i in sets.by_part.items()
        if not part.startswith("safety")
        for p in i.prompts
        if p in cand.generations
    ]
    prompts = list(dict.fromkeys(prompts))
    figures = pairwise(
        judge,
        prompts,
        base.texts(prompts),
        cand.texts(prompts),
        config.generation.confidence,
        config.generation.seed,
    )
    floor = config.judge.min_win_rate if config.judge else 0.5
    why = []
    if figures["interval"][0] < floor:
        why.append(
            f"win rate {figures['win_rate']:.1%} (interval from {figures['interval'][0]:.1%}) is not at least {floor:.0%}"
        )
    why += S.too_few(None, len(prompts), config.generation.confidence)
    figures["endpoint"], figures["model"] = judge.endpoint, judge.model
    return S.Result("judge", not why, why, figures)


def gate(
    ref: str,
    store: Store,
    config_path: Path,
    baseline: str | None = "base",
    report: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Gate `ref` (a run, or a base model alone) against `baseline` ("base": the run's
    base model; a run; None: figures only). Returns the report, written to the run's
    gate.json and release.yaml (and to `report` when given); `say` hears each phase."""
    started = time.perf_counter()
    config, base_dir = load_gate_config(config_path)
    sets = load_sets(config, base_dir)
    run = run_folder(ref, store)
    candidate = run_subject(run) if run is not None else model_subject(ref, store)
    other = _baseline(baseline, run, candidate, store)
    items = sum(len(i.prompts) for i in sets.by_part.values())
    say(
        f"{items} eval items in {len(sets.by_part)} sets"
        + (", checked against the training data" if run else "")
    )
    leaked = leaks(sets, run, store)
    judge = (
        Judge(
            config.judge.endpoint,
            config.judge.model,
            config.judge.api_key_env,
            config.judge.timeout,
        )
        if config.judge
        else None
    )
    g = config.generation
    asked = plan(sets)
    work = f"{len(asked.prompts)} prompts (up to {g.max_new_tokens} new tokens), {len(asked.choices)} multiple-choice items"
    say(f"asking the candidate {work}")
    cand = answer(candidate, asked, g.max_new_tokens, g.batch_size, g.seed)
    if other is not None:
        say(f"asking the baseline ({other.describe()['run'] or other.base}) the same")
    base = None if other is None else answer(other, asked, g.max_new_tokens, g.batch_size, g.seed)
    decided = results(config, sets, cand, base, judge)
    if run is not None:  # every item's prompt, answers and scores, as lm-eval's --log_samples
        say(f"samples: {write_samples(run / 'gate_samples.jsonl', decided, cand, base)}")
    return _report(
        config_path,
        sets,
        candidate,
        other,
        leaked,
        decided,
        run,
        report,
        time.perf_counter() - started,
    )


def write_samples(path: Path, decided: list[S.Result], cand: Answers, base: Answers | None) -> Path:
    """One JSON line per scored item: suite, part, prompt, reference, both models' answers
    (stopped or not) and scores, and which way it counted (`lost`: the baseline had it
    right, the candidate not) — so a FAIL can be read without running the gate again."""
    lines = []
    for result in decided:
        for part, scored in result.parts.items():
            for i, prompt in enumerate(scored.prompts):
                lines.append(
                    json.dumps(
                        {
                            "suite": result.name,
                            "part": part,
                            "item": i,
                            "prompt": prompt,
                            "reference": scored.items.references[i]
                            if i < len(scored.items.references)
                            else None,
                            "candidate": _side(cand, prompt, scored.candidate[i]),
                            "baseline": None
                            if base is None or scored.baseline is None
                            else _side(base, prompt, scored.baseline[i]),
                            "counted": _counted(scored, i),
                        },
                        ensure_ascii=False,
                    )
                )
    write_bytes(path, "".join(line + "\n" for line in lines).encode())
    return path


def _side(answers: Answers, prompt: str, score: Any) -> dict[str, Any]:
    made = answers.generations.get(prompt)
    return {
        "answer": None if made is None else made.text,
        "stopped": None if made is None else made.stopped,
        "score": bool(score),
    }


def _counted(scored: S.Scored, i: int) -> str | None:
    if scored.baseline is None:
        return None
    a, b = bool(scored.baseline[i]), bool(scored.candidate[i])
    return "tie" if a == b else ("lost" if a else "won")


def _baseline(
    spec: str | None, run: Path | None, candidate: Subject, store: Store
) -> Subject | None:
    if spec is None or spec == "none":
        return None
    if spec == "base":
        if run is None:  # a base model gated alone has no baseline but itself
            return None
        # the same base, loaded as the candidate's was (NF4 for a QLoRA run), same template
        return Subject("baseline", candidate.base, candidate.tokenizer, None, candidate.quantized)
    folder = run_folder(spec, store)
    return (
        run_subject(folder, "baseline")
        if folder is not None
        else model_subject(spec, store, "baseline")
    )


def _report(
    config_path: Path,
    sets: Sets,
    candidate: Subject,
    other: Subject | None,
    leaked: dict | None,
    decided: list[S.Result],
    run: Path | None,
    out: Path | None,
    seconds: float,
) -> dict[str, Any]:
    failed = [r for r in decided if r.passed is False]
    why = [f"{r.name}: {w}" for r in failed for w in r.why]
    if leaked and leaked["leaked"]:
        why += [
            f"eval set {part}: {n} items leaked into the training data of manifest {leaked['manifest'][:12]}"
            for part, n in leaked["leaked"].items()
        ]
    decision = "fail" if why else ("pass" if other is not None and decided else "figures")
    report = {
        "decision": decision,
        "why": why,
        "candidate": candidate.describe(),
        "baseline": None if other is None else other.describe(),
        "config": {"path": str(config_path), "sha256": sha256_file(config_path)},
        "eval_sets": sets.eval_sets(),
        "contamination": leaked,
        "suites": {r.name: {"passed": r.passed, "why": r.why, **r.figures} for r in decided},
        "samples": None if run is None else str(run / "gate_samples.jsonl"),
        "seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    blob = json.dumps(report, indent=2, ensure_ascii=False).encode()
    if run is not None:
        write_bytes(run / "gate.json", blob)
        _release(run, report)
    if out is not None:
        write_bytes(out, blob)
    return report


def _release(run: Path, report: dict[str, Any]) -> None:
    import yaml

    path = run / "release.yaml"
    packet = yaml.safe_load(path.read_text()) if path.is_file() else {}
    suites = report["suites"]
    packet["gate"] = {
        "decision": report["decision"],
        "why": report["why"],
        "report": str(run / "gate.json"),
    }
    packet["eval_report"] = {
        "baseline": report["baseline"]["name"] if report["baseline"] else None,
        "eval_sets": report["eval_sets"],
        "contamination": report["contamination"],
        **{n: _brief(s) for n, s in suites.items() if n != "safety"},
    }
    packet["safety_report"] = (
        _brief(suites["safety"]) if "safety" in suites else "not run (no [safety] in gate.toml)"
    )
    write_bytes(path, yaml.safe_dump(packet, sort_keys=False, allow_unicode=True).encode())


def _brief(suite: dict[str, Any]) -> dict[str, Any]:
    """A suite's figures without the example prompts (the report keeps those)."""
    return {
        k: (_brief(v) if isinstance(v, dict) else v)
        for k, v in suite.items()
        if k not in ("lost", "eval_set")
    }
