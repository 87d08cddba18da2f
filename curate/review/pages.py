"""The review app's pages, rendered on the server: the filtered list with progress and each
rule's precision, and one rejected row beside its evidence with the keyboard to decide."""

from __future__ import annotations

import re
from html import escape
from typing import Any
from urllib.parse import urlencode

from curate.report.page import (
    Raw,
    detail_text,
    document,
    mark_diff,
    mark_span,
    pct,
    row_text,
    table,
)
from curate.review.browse import PAGE, Filters
from curate.review.decisions import Decision

KEYS = "k keep · r reject · s skip · u undo · j next · p previous · / search · n note"
TEMPLATE_REASONS = (
    "template_error", "missing_eos", "special_token_injection", "too_long", "empty_response",
)  # fmt: skip


def link(path: str, token: str, f: Filters, **extra: Any) -> str:
    params = {"token": token, **{k: v for k, v in vars(f).items() if v}, **extra}
    return f"{path}?{escape(urlencode(params))}"


def _doc(title: str, body: str, script: str) -> str:
    return document(title, KEYS, f"<main>{body}</main>", APP_STYLE, script)


APP_STYLE = """
form.filters{display:flex;flex-wrap:wrap;gap:6px;align-items:end}
form.filters label{display:flex;flex-direction:column;font-size:12px}
select,input,textarea,button{font:inherit;padding:3px 6px}
button{cursor:pointer;border:1px solid #aab;border-radius:4px;background:#fff}
.decided-keep{color:#4f9d69;font-weight:600}.decided-reject{color:#b5485d;font-weight:600}
.tok{display:inline-block;border:1px solid #ccd;border-radius:3px;margin:1px;padding:0 3px;font:12px monospace;white-space:pre}
td a{color:#3b6ea8}
"""


def _select(name: str, current: str | None, counts: dict[str, int], everything: str) -> str:
    options = [f'<option value="">{escape(everything)}</option>'] + [
        f'<option value="{escape(k)}"{" selected" if k == current else ""}>{escape(k)} ({n:,})</option>'
        for k, n in counts.items()
    ]
    return f'<label>{name}<select name="{name}" onchange="this.form.submit()">{"".join(options)}</select></label>'


def list_page(
    build: str,
    token: str,
    f: Filters,
    groups: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    total: int,
    offset: int,
    standing: dict[str, Decision],
    stats: list[dict[str, Any]],
) -> str:
    def tally(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in groups:
            out[g[key]] = out.get(g[key], 0) + g["n"]
        return dict(sorted(out.items()))

    form = (
        f'<form class=filters method=get action="/"><input type=hidden name=token value="{escape(token)}">'
        + _select("reason", f.reason, tally("reason"), "every rule (not not_sampled)")
        + _select("source", f.source, tally("source"), "every source")
        + _select("stage", f.stage, tally("stage"), "every stage")
        + f'<label>search<input id=q name=q value="{escape(f.q or "")}" placeholder="text in rejected rows"></label>'
        + "<button>filter</button></form>"
    )
    body = []
    for i, rec in enumerate(rows):
        d = standing.get(rec["id"])
        verdict = Raw(f'<span class="decided-{d.decision}">{d.decision}</span>') if d else None
        href = link("/row", token, f, i=offset + i)
        body.append(
            [
                Raw(f'<a href="{href}">{escape(rec["id"])}</a>'),
                rec["reason"],
                rec["source"],
                rec["stage"],
                rec["preview"],
                verdict,
            ]
        )
    pager = []
    if offset > 0:
        pager.append(
            f'<a href="{link("/", token, f, offset=max(offset - PAGE, 0))}">← previous</a>'
        )
    if offset + PAGE < total:
        pager.append(f'<a href="{link("/", token, f, offset=offset + PAGE)}">next →</a>')
    shown = f"rows {offset + 1:,}–{offset + len(rows):,} of {total:,}" if rows else "no rows"
    return _doc(
        f"curate review · {build}",
        f"<section>{form}<p id=shown>{shown} {' · '.join(pager)}</p>"
        + table(["id", "reason", "source", "stage", "row", "decision"], body)
        + f"</section><section><h2>Progress and precision</h2>{_stats(stats)}</section>",
        LIST_SCRIPT,
    )


def _stats(stats: list[dict[str, Any]]) -> str:
    rows = [
        [
            s["reason"],
            s["source"],
            s["rejected"],
            s["reviewed"],
            pct(s["reviewed"] / s["rejected"] if s["rejected"] else None),
            s["confirmed"],
            s["overturned"],
            pct(s["precision"]),
            f"{s['interval'][0]:.0%}–{s['interval'][1]:.0%}",
        ]
        for s in stats
    ]
    heads = [
        "reason",
        "source",
        "rejected",
        "reviewed",
        "progress",
        "confirmed",
        "overturned",
        "precision",
        "95% interval",
    ]
    return table(heads, rows, {2, 3, 4, 5, 6, 7})


def row_page(
    build: str,
    token: str,
    f: Filters,
    index: int,
    total: int,
    rec: dict[str, Any],
    decision: Decision | None,
    tokens: list[str] | None,
) -> str:
    d = rec["detail"]
    state = (
        f'<p id=state>decided: <span class="decided-{decision.decision}">{decision.decision}</span>'
        + (f" · {escape(decision.note)}" if decision.note else "")
        + "</p>"
        if decision
        else "<p id=state class=muted>not decided</p>"
    )
    head = (
        f"<p>{index + 1:,} of {total:,} · <b>{escape(rec['reason'])}</b> · {escape(rec['source'])} · "
        f"{escape(rec['stage'] or '')} · <code>{escape(rec['id'])}</code> · "
        f'<a href="{link("/", token, f, offset=index - index % PAGE)}">back to the list</a></p>'
        f"<p class=muted>{escape(detail_text(d))}</p>{state}"
    )
    controls = (
        '<p><textarea id=note rows=2 cols=50 placeholder="note (optional)"></textarea></p><p>'
        "<button id=keep data-key=k>keep (k)</button> <button id=reject data-key=r>reject (r)</button> "
        "<button id=skip data-key=s>skip (s)</button> <button id=undo data-key=u>undo (u)</button></p>"
    )
    data = (
        f'<div id=ctx data-id="{escape(rec["id"])}" data-token="{escape(token)}" '
        f'data-next="{link("/row", token, f, i=index + 1) if index + 1 < total else ""}" '
        f'data-prev="{link("/row", token, f, i=index - 1) if index > 0 else ""}"></div>'
    )
    return _doc(
        f"curate review · {build}",
        f"<section>{head}{controls}{data}</section><section>{_evidence(rec, tokens)}</section>",
        ROW_SCRIPT,
    )


def _evidence(rec: dict[str, Any], tokens: list[str] | None) -> str:
    d, twin, text = rec["detail"], rec.get("twin"), row_text(rec, 20_000)
    if twin is not None:
        a, b = mark_diff(row_text(twin, 20_000), text)
        score = {k: d[k] for k in ("jaccard", "cosine") if k in d}
        return (
            f"<h2>Beside the row it duplicates {escape(str(score or ''))}</h2><div class=pair>"
            f"<div class=ex id=twin><span class=muted>{escape(twin['status'])} {escape(twin['id'])} · {escape(twin['source'])}</span>\n{a}</div>"
            f"<div class=ex id=this><span class=muted>rejected {escape(rec['id'])}</span>\n{b}</div></div>"
        )
    if "eval_set" in d:
        match = d.get("match", "")
        return (
            f"<h2>Beside eval item {escape(str(d['eval_id']))} of {escape(d['eval_set'])} · overlap {d['overlap']:.0%}</h2><div class=pair>"
            f"<div class=ex id=this><span class=muted>rejected row</span>\n{mark_span(text, match)}</div>"
            f"<div class=ex id=twin><span class=muted>eval item</span>\n{mark_span(d.get('item') or '', match)}</div></div>"
        )
    if rec["reason"] in TEMPLATE_REASONS:
        return _template(rec, tokens)
    return f"<h2>The row</h2><div class=ex id=this>{escape(text)}</div>"


def failing_turn(rec: dict[str, Any]) -> int | None:
    """The turn a template rejection names: `turn`, or the index in `field` (messages[N]…)."""
    d, messages = rec["detail"], rec.get("messages") or []
    turn = d.get("turn")
    if not isinstance(turn, int) and (m := re.match(r"messages\[(\d+)\]", str(d.get("field", "")))):
        turn = int(m.group(1))
    return turn if isinstance(turn, int) and 0 <= turn < len(messages) else None


def _template(rec: dict[str, Any], tokens: list[str] | None) -> str:
    d, messages = rec["detail"], rec.get("messages") or []
    turn = failing_turn(rec)
    out = [f"<h2>{escape(d.get('error') or rec['reason'])}</h2>"]
    if turn is not None:
        shown = escape(messages[turn]["content"] or "")
        if d.get("token"):
            shown = shown.replace(escape(d["token"]), f"<mark>{escape(d['token'])}</mark>")
        out.append(
            f"<h3>turn {turn} ({escape(messages[turn]['role'])})</h3><div class=ex id=turn>{shown}</div>"
        )
    if tokens is not None:
        chips = "".join(f"<span class=tok>{escape(t)}</span>" for t in tokens)
        out.append(f"<h3>its tokens ({len(tokens):,})</h3><div id=tokens>{chips}</div>")
    out.append(f"<h3>the whole row</h3><div class=ex id=this>{escape(row_text(rec, 20_000))}</div>")
    return "".join(out)


LIST_SCRIPT = """
document.addEventListener('keydown', e => {
  if (e.target.matches('input,textarea,select')) return;
  if (e.key === '/') { e.preventDefault(); document.getElementById('q').focus(); }
  if (e.key === 'j') { const a = document.querySelector('td a'); if (a) location.href = a.href; }
});
"""

ROW_SCRIPT = """
const ctx = document.getElementById('ctx').dataset;
async function decide(decision) {
  const note = document.getElementById('note').value || null;
  const r = await fetch('/decide?token=' + encodeURIComponent(ctx.token), {
    method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({id: ctx.id, decision: decision, note: note})});
  if (!r.ok) { alert((await r.json()).error); return; }
  if (decision === 'undo' || !ctx.next) location.reload(); else location.href = ctx.next;
}
const act = {k: () => decide('keep'), r: () => decide('reject'), u: () => decide('undo'),
  s: () => { if (ctx.next) location.href = ctx.next; },
  j: () => { if (ctx.next) location.href = ctx.next; },
  p: () => { if (ctx.prev) location.href = ctx.prev; },
  n: () => document.getElementById('note').focus()};
document.addEventListener('keydown', e => {
  if (e.target.matches('input,textarea,select')) { if (e.key === 'Escape') e.target.blur(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const f = act[e.key]; if (f) { e.preventDefault(); f(); }
});
document.querySelectorAll('button[data-key]').forEach(b => b.addEventListener('click', act[b.dataset.key]));
"""
