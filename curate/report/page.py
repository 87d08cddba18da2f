"""The HTML around the charts: one self-contained page (styles inlined, no network), tables,
and the marks that show evidence: the words two near-duplicates differ in, the span of a row
that matched an eval item. Shared by the static report and the review app.
"""

from __future__ import annotations

import difflib
import json
import re
from html import escape
from typing import Any

STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:12px 16px}
header h1{font-size:18px;margin:0}header p{margin:4px 0 0;color:#c9d1e0;word-break:break-all}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;padding:8px 16px;background:#fff;border-bottom:1px solid #dde1e8}
nav a{color:#3b6ea8;text-decoration:none}
main{max-width:1240px;margin:0 auto;padding:8px 12px 40px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:12px 0;padding:10px 14px}
h2{font-size:16px;margin:4px 0 8px}h3{font-size:14px;margin:10px 0 4px}
.wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;min-width:50%}
th,td{padding:3px 8px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:8px 14px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}
@media (max-width:700px){.pair{grid-template-columns:1fr}.grid{grid-template-columns:repeat(auto-fit,minmax(160px,1fr))}}
svg.chart{width:100%;height:auto;max-width:720px;font-size:11px;fill:#1d2330}
svg.chart text.mark{font-size:9px}
details{margin:4px 0}summary{cursor:pointer}
.ex{border-left:3px solid #dde1e8;padding:4px 8px;margin:6px 0;white-space:pre-wrap;word-break:break-word;font-size:12.5px}
.muted{color:#6b7385}.changed{background:#fff3cd}.bad{color:#b5485d;font-weight:600}.good{color:#4f9d69;font-weight:600}
del,.diff-del{background:#fbd5dc;text-decoration:none}ins,.diff-ins{background:#cdeed6;text-decoration:none}
mark{background:#ffe58a}
code{font-size:12px;background:#f0f2f5;padding:0 3px;border-radius:3px}
"""


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """A whole document: `sections` are (anchor, heading, body html); empty bodies are left out."""
    shown = [s for s in sections if s[2]]
    nav = "".join(f'<a href="#{a}">{escape(h)}</a>' for a, h, _ in shown)
    body = "".join(f'<section id="{a}"><h2>{escape(h)}</h2>{b}</section>' for a, h, b in shown)
    return document(title, subtitle, f"<nav>{nav}</nav><main>{body}</main>")


def document(title: str, subtitle: str, body: str, style: str = "", script: str = "") -> str:
    """The page around `body`: head, inlined styles (STYLE + `style`), header, `script`."""
    tail = f"<script>{script}</script>" if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}{style}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f"{body}{tail}</body></html>\n"
    )


def fact(key: str, value: Any) -> str:
    """A number as shown, tagged with the manifest key it comes from (tests compare them)."""
    shown = f"{value:,}" if isinstance(value, int) else escape(str(value))
    return f'<span data-fact="{escape(key)}">{shown}</span>'


def table(
    headers: list[str],
    rows: list[list[Any]],
    numeric: set[int] | None = None,
    marked: list[bool] | None = None,
) -> str:
    """Cells are escaped unless they are `Raw`; columns in `numeric` align right; rows whose
    `marked` is true get the class `changed`."""
    numeric = numeric or set()
    marked = marked or [False] * len(rows)
    head = "".join(
        f"<th{' class=n' if i in numeric else ''}>{escape(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        ("<tr class=changed>" if m else "<tr>")
        + "".join(
            f"<td{' class=n' if i in numeric else ''}>{cell(v)}</td>" for i, v in enumerate(r)
        )
        + "</tr>"
        for r, m in zip(rows, marked, strict=True)
    )
    return f'<div class="wrap"><table><tr>{head}</tr>{body}</table></div>'


class Raw(str):
    """HTML already escaped (a fact, a mark)."""


def cell(v: Any) -> str:
    if isinstance(v, Raw):
        return str(v)
    if v is None:
        return '<span class="muted">–</span>'
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def row_text(row: dict[str, Any], limit: int = 1200) -> str:
    """A row as a reviewer reads it: its turns (role: content), its text, or its raw line."""
    if row.get("messages"):
        text = "\n".join(f"{m['role']}: {m['content']}" for m in row["messages"])
    elif row.get("chosen"):
        text = "\n".join(f"{m['role']}: {m['content']}" for m in row["chosen"])
    else:
        text = row.get("text") or row.get("raw") or ""
    return text if len(text) <= limit else text[:limit] + " …"


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def mark_diff(a: str, b: str) -> tuple[str, str]:
    """Both texts escaped, with the words only `a` has in <del> and only `b` has in <ins>."""
    wa, wb = _TOKEN.findall(a), _TOKEN.findall(b)
    if len(wa) * len(wb) > 4_000_000:  # quadratic matcher: past this, show them unmarked
        return escape(a), escape(b)
    out_a: list[str] = []
    out_b: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        out_a.append(_marked(wa[i1:i2], "del" if op != "equal" else ""))
        out_b.append(_marked(wb[j1:j2], "ins" if op != "equal" else ""))
    return "".join(out_a), "".join(out_b)


def _marked(tokens: list[str], tag: str) -> str:
    """Tokens escaped; words (never the spaces between them) wrapped in `tag`."""
    if not tag:
        return escape("".join(tokens))
    return "".join(t if t.isspace() else f"<{tag}>{escape(t)}</{tag}>" for t in tokens)


def mark_span(text: str, span: str) -> str:
    """`text` escaped, with the words of the (normalized) matched `span` marked where they
    occur in order: the span is lowercased and stripped of punctuation by the contamination
    index, so it is matched word by word, not as a substring."""
    if not span:
        return escape(text)
    tokens = _TOKEN.findall(text)
    norm = [re.sub(r"[^\w]", "", t).lower() for t in tokens]
    wanted = [w for w in re.sub(r"[^\w\s]", " ", span.lower()).split() if w]
    words = [(i, w) for i, w in enumerate(norm) if w]
    matcher = difflib.SequenceMatcher(None, [w for _, w in words], wanted, autojunk=False)
    marked: set[int] = set()
    for block in matcher.get_matching_blocks():
        if block.size >= 3 or block.size == len(wanted):
            marked.update(words[k][0] for k in range(block.a, block.a + block.size))
    out = []
    for i, t in enumerate(tokens):
        out.append(f"<mark>{escape(t)}</mark>" if i in marked else escape(t))
    return "".join(out)


def detail_text(detail: dict[str, Any]) -> str:
    """A ledger detail, without the bulky evidence shown elsewhere."""
    small = {k: v for k, v in detail.items() if k not in ("item", "match")}
    return json.dumps(small, ensure_ascii=False, sort_keys=True)
