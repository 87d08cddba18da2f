"""What the CLI shows in a terminal: build summaries, rows beside their evidence, diffs,
rule statistics, and the one-row-at-a-time review loop. The library decides; this renders."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# control characters (C0 but newline and tab, DEL, C1) and the bidi overrides that reorder
# what a terminal shows: shown as escapes, so no row can move the cursor, clear the screen,
# retitle the window, ring the bell or hide text
_UNSAFE = [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0),
           *range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # fmt: skip
_SHOWN = str.maketrans({c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE})


def clean(text: str) -> str:
    """`text` as a terminal may show it: control characters as `\\x1b`-style escapes."""
    return text.translate(_SHOWN)


def make_console(stderr: bool = False) -> Any:
    """A rich console whose every string (text, markup, table cells, panels, titles) has
    its control characters escaped (`clean`): user data rendered by it cannot drive the
    terminal; rich's own styling still does."""
    from rich.console import Console

    class SafeConsole(Console):
        def render_str(self, text: str, **kwargs: Any) -> Any:
            return super().render_str(clean(text), **kwargs)

    stream = sys.stderr if stderr else sys.stdout
    # piped or captured: as wide as the content (up to COLUMNS, else 200), not cut at 80
    width = None if stream.isatty() else int(os.environ.get("COLUMNS") or 200)
    return SafeConsole(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def render_summary(mid: str, data: dict[str, Any], run: dict[str, Any]) -> None:
    from rich.table import Table

    console = make_console()
    table = Table(
        "source",
        "role",
        "rows in",
        "kept",
        "rejected",
        "emitted",
        "requested share",
        "solved",
        "realized share",
        title="sources",
    )
    mix = data["mixture"]["sources"]
    for s in data["sources"]:
        m = mix.get(s["name"], {})
        table.add_row(
            s["name"],
            s["role"],
            str(s["rows_in"]),
            str(s["rows_kept"]),
            str(s["rows_rejected"]),
            str(s["rows_emitted"]),
            f"{m.get('requested_share', 0):.3f}",
            f"{m.get('solved_share', m.get('requested_share', 0)):.3f}"
            + (f" ({m['bound']})" if m.get("bound") else ""),
            f"{m.get('realized_share', 0):.3f}",
        )
    console.print(table)
    counts = data["counts"]
    if counts["rejected"]:
        reasons = Table("reason", "rows", title="rejections")
        for reason, n in sorted(counts["rejected"].items(), key=lambda kv: -kv[1]):
            reasons.add_row(reason, str(n))
        console.print(reasons)
    from curate.rows import SPLIT_NAMES

    order = [n for n in SPLIT_NAMES if n in data["splits"]]
    splits = ", ".join(f"{name} {data['splits'][name]['rows']}" for name in order)
    secs = f" in {run['seconds']:.1f}s" if run.get("seconds") is not None else ""
    console.print(
        f"rows in {counts['rows_in']}, kept {counts['rows_kept']}, rejected {counts['rows_rejected']}, out {counts['rows_out']} ({splits}){secs}"
    )
    tok = data.get("tokenizer")
    if tok:
        tpl = tok["template"]
        share = counts["trained_tokens_out"] / counts["tokens_out"] if counts["tokens_out"] else 0
        cut = sum(s.get("tokens", {}).get("truncated_rows", 0) for s in data["sources"])
        console.print(
            f"tokens out {counts['tokens_out']:,} (trained {share:.1%}); end of turn "
            f"{tpl['end_of_turn']!r}; {cut} rows with the prompt truncated to {tok['max_length']}"
        )
        for note in tpl["notes"]:
            console.print(f"[cyan]template:[/cyan] {note}")
    redacted = {
        name: v["pii"]["rows"]
        for name, v in data.get("validation", {}).items()
        if v.get("pii", {}).get("rows")
    }
    if redacted:
        console.print(
            "PII redacted in " + ", ".join(f"{n} rows of {name!r}" for name, n in redacted.items())
        )
    from curate.manifests.manifest import warnings as manifest_warnings

    for warning in manifest_warnings(data):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"manifest [bold]{mid}[/bold]")


def render_diff(report: dict[str, Any]) -> None:
    console = make_console()

    def say(text: str) -> None:  # config keys and values hold brackets: no markup
        console.print(text, markup=False, highlight=False)

    say(f"a {report['a']}\nb {report['b']}")
    if report["identical"]:
        say("identical")
        return
    for change in report.get("config", []):
        say(f"config {change['key']}: {change['a']!r} → {change['b']!r}")
    for name, sides in report.get("sources", {}).items():
        a, b = sides["a"] or {}, sides["b"] or {}
        say(
            f"source {name}: in {a.get('rows_in')} → {b.get('rows_in')}, kept "
            f"{a.get('rows_kept')} → {b.get('rows_kept')}, rejected {a.get('rejected')} → "
            f"{b.get('rejected')}" + (", files changed" if a.get("files") != b.get("files") else "")
        )
    for name, sides in report.get("mixture", {}).items():
        a, b = sides["a"] or {}, sides["b"] or {}
        say(
            f"mixture {name}: share {a.get('realized_share')} → {b.get('realized_share')}, "
            f"rows {a.get('realized_rows')} → {b.get('realized_rows')}"
        )
    for name, sides in report.get("splits", {}).items():
        say(f"split {name}: {sides['a']} → {sides['b']} rows")
    for key, sides in report.get("tokenizer", {}).items():
        say(f"tokenizer {key}: {sides['a']} → {sides['b']}")
    rows = report.get("rows")
    if rows:
        say(f"rows: {rows['added']} added, {rows['removed']} removed")
        for row in rows.get("added_rows", []):
            console.print(f"  + {render_row(row)}")
        for row in rows.get("removed_rows", []):
            console.print(f"  - {render_row(row)}")


def render_item(console: Any, item: dict[str, Any]) -> None:
    """A rejected row beside its evidence: the kept twin (words that differ highlighted),
    or the eval item it leaked."""
    from rich.columns import Columns
    from rich.panel import Panel

    title = f"{item['reason']} · {item['source']} · {item['id']} · {item['row'].get('origin', '')}"
    twin = item["twin"]
    left, right = render_row(item["row"]), render_row(twin) if twin else None
    if twin and "eval_set" not in twin:
        left, right = highlight_differences(item["row"], twin)
    panels = [Panel(left, title="rejected", width=60)]
    if twin:
        name = (
            f"eval item {twin['eval_set']}/{twin['eval_id']}"
            if "eval_set" in twin
            else f"twin {twin['id']} ({twin['status']})"
        )
        panels.append(Panel(right or "", title=name, width=60))
    console.rule(title)
    console.print(json.dumps(item["detail"], ensure_ascii=False), markup=False)
    console.print(Columns(panels))


def highlight_differences(row: dict[str, Any], twin: dict[str, Any]) -> tuple[str, str]:
    """Both rows' text with the words the other lacks in reverse video."""
    from difflib import SequenceMatcher

    from rich.markup import escape

    def words(r: dict[str, Any]) -> list[str]:
        turns = r.get("messages") or [{"role": "text", "content": r.get("text") or ""}]
        return [w for t in turns for w in [f"{t['role']}:", *(t["content"] or "").split()]]

    a, b = words(row), words(twin)
    left: list[str] = []
    right: list[str] = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        mark = op != "equal"
        left += [f"[reverse]{escape(w)}[/reverse]" if mark else escape(w) for w in a[i1:i2]]
        right += [f"[reverse]{escape(w)}[/reverse]" if mark else escape(w) for w in b[j1:j2]]
    return " ".join(left), " ".join(right)


def decide_loop(
    manifest: Any, items: list[dict[str, Any]], reviewer: str | None, path: Path | None
) -> None:
    """One row at a time: k keep, r reject (text after the key is the note), s skip, u undo,
    q quit. Each decision is appended at once, so quitting or a crash loses none."""
    from rich.markup import escape

    from curate.review.decisions import append, record
    from curate.review.loop import decisions_path

    target = decisions_path(manifest, path)
    console = make_console()
    done: list[int] = []  # items decided, for undo
    i = 0
    while i < len(items):
        item = items[i]
        render_item(console, item)
        try:
            line = console.input(escape("[k]eep [r]eject [s]kip [u]ndo [q]uit (+ note): ")).strip()
        except EOFError:
            break
        key, _, text = line.partition(" ")
        if key in ("k", "r"):
            decision = "keep" if key == "k" else "reject"
            rec = record(item["id"], decision, item["reason"], manifest.id, text or None, reviewer)
            append(target, [rec])
            done.append(i)
            i += 1
        elif key == "s":
            i += 1
        elif key == "u" and done:
            i = done.pop()
            append(target, [record(items[i]["id"], "undo", None, manifest.id, None, reviewer)])
        elif key == "q":
            break
    console.print(f"{len(done)} decisions in {target}")


def render_stats(rows: list[dict[str, Any]], as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print_json(rows)
        return
    table = Table(
        "reason", "source", "rejected", "reviewed", "confirmed", "overturned", "precision (95%)"
    )
    for r in rows:
        lo, hi = r["interval"]
        shown = "—" if r["precision"] is None else f"{r['precision']:.2f} [{lo:.2f}, {hi:.2f}]"
        if r["flagged"]:
            shown = f"[red]{shown} below threshold[/red]"
        table.add_row(
            r["reason"],
            r["source"],
            str(r["rejected"]),
            str(r["reviewed"]),
            str(r["confirmed"]),
            str(r["overturned"]),
            shown,
        )
    make_console().print(table)


def render_row(row: dict[str, Any]) -> str:
    from rich.markup import escape

    if row.get("messages"):
        lines = [f"[bold]{m['role']}[/bold]: {escape(m['content'] or '')}" for m in row["messages"]]
        for key in ("chosen", "rejected"):
            if row.get(key):
                lines += [f"[bold]{key}[/bold]: {escape(m['content'] or '')}" for m in row[key]]
        return "\n".join(lines)
    if row.get("text") is not None:
        return escape(row["text"])
    return escape(row.get("raw") or "")


def render_mining(record: dict[str, Any], rid: str) -> None:
    """What a mining run found, per rule."""
    from rich.table import Table

    console = make_console()
    counts = record["counts"]
    console.print(
        f"{counts['rows']} log rows: {counts['failures']} failures, {counts['positives']} "
        f"positives, {counts['unread']} unreadable, {counts['latency_outliers']} latency outliers"
    )
    if counts.get("refusals") and not counts.get("refusals_judged"):
        console.print(
            f"{counts['refusals']} answers refuse: not judged (give [rules] harmful, the "
            "requests they may refuse, or [rules] safe, the prompts they must answer, to queue "
            "wrong refusals as unexpected_refusal)",
            markup=False,
        )
    table = Table("rule", "rows", "the most severe for")
    for rule, n in counts["by_rule"].items():
        table.add_row(rule, str(n), str(counts["by_reason"].get(rule, 0)))
    if counts["by_rule"]:
        console.print(table)
    if record["pii"]:
        found = ", ".join(f"{k} {v}" for k, v in record["pii"].items())
        console.print(f"secrets redacted before anything was stored: {found}")
    console.print(_candidates_line(record), markup=False, highlight=False)
    console.print(f"mining run {rid}")


def _candidates_line(record: dict[str, Any]) -> str:
    """New candidates, failures counted on earlier ones, clusters, eval overlaps dropped."""
    found = record["candidates"]
    line = (
        f"{found['new']} new candidates for labelers ({found['seen_before']} failures counted "
        f"on candidates of earlier runs)"
    )
    clusters = record["clusters"]
    if clusters.get("model"):
        line += f"; {clusters['count']} failure clusters of {clusters['clustered']} candidates"
    else:
        line += f"; no failure clusters: {clusters.get('skipped')}"
    dropped = record["contamination"]
    if dropped["dropped"]:
        by = ", ".join(f"{k} {v}" for k, v in dropped["by_eval"].items())
        line += (
            f"; {dropped['dropped']} kept from the queue: their prompt overlaps an eval set ({by})"
        )
    return line


def render_mining_report(report: dict[str, Any]) -> None:
    """A mining run's failures per rule, model version and day, and its top candidates."""
    from rich.table import Table

    console = make_console()
    render_mining({**report, "pii": {}}, report["mining_run"])
    for key, title in (("by_model", "model"), ("by_day", "day")):
        rows = report[key]
        if not rows:
            continue
        columns = list(rows[0])
        table = Table(*columns, title=f"failures per {title}")
        for row in rows:
            table.add_row(*[str(row[c]) for c in columns])
        console.print(table)
    _render_weeks(report, console)
    for row in report.get("unreadable", []):  # the rows `unreadable` counts, where they are
        field = f" {row['field']}:" if row["field"] else ""
        console.print(f"unreadable {row['origin']}:{field} {row['error']}", markup=False)
    top = Table("candidate", "reason", "count", "runs", "prompt", title="largest candidates")
    for c in report["top_candidates"]:
        top.add_row(c["candidate"], c["reason"], str(c["count"]), str(c["runs"]), c["prompt"][:80])
    if report["top_candidates"]:
        console.print(top)


def _render_weeks(report: dict[str, Any], console: Any) -> None:
    """Failure clusters, traffic per week and, when asked, its drift from a training set."""
    from rich.table import Table

    clusters = Table("cluster", "label", "failures", "candidates", "trend", "weeks")
    clusters.title = "failure clusters"
    for c in report["top_clusters"]:
        per_week = ", ".join(f"{w}: {n}" for w, n in c["weeks"].items())
        clusters.add_row(
            c["cluster"],
            c["label"],
            str(c["failures"]),
            str(c["candidates"]),
            c["trend"] or "",
            per_week,
        )
    if report["top_clusters"]:
        console.print(clusters)
    elif report["clusters"].get("skipped"):
        console.print(f"[yellow]no failure clusters: {report['clusters']['skipped']}[/]")
    weeks = Table("week", "rows", "failures", "rate", "mean prompt chars", title="traffic per week")
    for w in report["by_week"]:
        weeks.add_row(
            w["week"],
            str(w["rows"]),
            str(w["failures"]),
            f"{w['failure_rate']:.1%}",
            str(w["mean_prompt_chars"]),
        )
    if report["by_week"]:
        console.print(weeks)
    drift = report.get("drift")
    if drift:
        table = Table("week", "prompts sampled", "median prompt chars", "centroid distance")
        table.title = (
            f"drift from {drift['manifest'][:12]} (training: median "
            f"{drift['training_median_prompt_chars']:.0f} chars, {drift['training_rows_sampled']} "
            f"rows sampled; noise floor {drift['noise']})"
        )
        for w in drift["weeks"]:
            table.add_row(
                w["week"],
                str(w["sampled"]),
                f"{w['median_prompt_chars']:.0f}",
                str(w["centroid_distance"]),
            )
        console.print(table)
