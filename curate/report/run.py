"""The report of a training run: loss curves, throughput, packing, and the gate's verdict
when `curate gate` has judged the run. Read from the run folder's own files."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.fsio import read_regular
from curate.report import svg
from curate.report.page import Raw, fact, page, table
from curate.train.seal import read_json_file, read_run


def run_report(folder: Path) -> str:
    summary = read_run(folder, adapter=False)  # an adapter or merged model as saved
    metrics = _metrics(folder / "metrics.jsonl")
    gate_path = folder / "gate.json"
    gate = read_json_file(gate_path, "gate report") if gate_path.exists() else None
    if gate is not None and not isinstance(gate, dict):
        raise UserError(f"{gate_path}: not a gate report (a JSON object)")
    sections = [
        ("summary", "Summary", _summary(summary)),
        ("loss", "Loss", _loss(metrics)),
        ("throughput", "Throughput", _throughput(metrics, summary)),
        ("packing", "Packing", _packing(summary.get("packing") or {})),
        ("gate", "Gate", _gate(gate)),
    ]
    title = f"curate training run · {summary['run_id']}"
    return page(title, f"manifest {summary['manifest']} · {summary.get('device', '?')}", sections)


def _metrics(path: Path) -> list[dict[str, Any]]:
    """The logged steps; a last line torn by a kill is left out (the rest still tells the
    story), any other line that is not a step's record is exit 2 naming it."""
    if not path.exists():
        return []
    try:
        lines = read_regular(path, "training metrics").decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: training metrics cannot be read ({exc})") from None
    out = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            if number == len(lines):
                continue
            raise UserError(f"{path}:{number}: not JSON; a damaged metrics file") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("step", 0), int | float):
            raise UserError(f"{path}:{number}: not a logged step (an object with a `step`)")
        out.append({k: v for k, v in entry.items() if k == "step" or _is_number(v)})
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _summary(s: dict[str, Any]) -> str:
    keys = (
        "steps", "tokens", "tokens_per_second", "seconds", "train_loss", "eval_loss_before",
        "eval_loss_after", "peak_memory_gib", "quantized", "gradient_checkpointing", "device",
    )  # fmt: skip
    rows = [[k, Raw(fact(f"summary.{k}", s[k]))] for k in keys if k in s]
    choices = [[k, v.get("value"), v.get("why")] for k, v in (s.get("choices") or {}).items()]
    return table(["figure", "value"], rows) + (
        "<h3>Choices</h3>" + table(["setting", "value", "why"], choices) if choices else ""
    )


def _loss(metrics: list[dict[str, Any]]) -> str:
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    if not train and not evals:
        return "<p class=muted>No losses logged.</p>"
    return svg.lines("loss per step", {"train": train, "validation": evals}, "loss")


def _throughput(metrics: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """Tokens per second between logged steps, evaluation time taken out."""
    points, last, evaluating = [], None, 0.0
    for m in metrics:
        if "eval_runtime" in m:
            evaluating += float(m["eval_runtime"])
        if "num_tokens" not in m or "loss" not in m:
            continue
        if last is not None:
            spent = m["time"] - last["time"] - evaluating
            if spent > 0:
                points.append((m["step"], (m["num_tokens"] - last["num_tokens"]) / spent))
        last, evaluating = m, 0.0
    chart = svg.lines("tokens per second", {"tokens/s": points}, "tokens/s") if points else ""
    return (
        chart
        + f"<p>over the run: {fact('summary.tokens_per_second', summary.get('tokens_per_second'))} tokens/s</p>"
    )


def _packing(p: dict[str, Any]) -> str:
    if not p:
        return ""
    rows = [[k, Raw(fact(f"packing.{k}", v))] for k, v in p.items()]
    return table(["packing", "value"], rows) + (
        "<p class=muted>efficiency = real tokens / pack slots</p>"
    )


def _gate(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return "<p class=muted>Not gated yet: <code>curate gate RUN</code>.</p>"
    verdict = gate["decision"]
    why = "".join(f"<li>{escape(w)}</li>" for w in gate["why"])
    rows = []
    for name, suite in gate["suites"].items():
        parts = {k: v for k, v in suite.items() if isinstance(v, dict) and "items" in v}
        for part, f in parts.items() if parts else [(name, suite)]:
            label = name if part == name else f"{name}.{part}"
            interval = f.get("interval") or [None, None]
            figures = [f.get("candidate", f.get("win_rate")), f.get("baseline"), f.get("diff")]
            rows.append(
                [
                    label,
                    {True: "pass", False: "FAIL", None: "–"}[suite["passed"]],
                    *figures,
                    str(interval),
                    f.get("items"),
                ]
            )
    cls = "good" if verdict == "pass" else "bad"
    return (
        f'<p>decision: <span class={cls} data-fact="gate.decision">{escape(verdict)}</span></p>'
        + (f"<ul>{why}</ul>" if why else "")
        + table(
            ["suite", "verdict", "candidate", "baseline", "difference", "interval", "items"],
            rows,
            {2, 3, 4, 6},
        )
        + (
            "<p>Every item, with both answers and scores: "
            f'<a href="gate_samples.jsonl">gate_samples.jsonl</a> ({escape(gate["samples"])})</p>'
            if isinstance(gate.get("samples"), str)
            else ""
        )
    )
