"""`curate diff A B --html`: the build report's views of two builds side by side, led by the
figures that differ (marked) and what `curate diff` found changed."""

from __future__ import annotations

from html import escape
from typing import Any

from curate.manifests.manifest import Manifest
from curate.report.build import VIEWS
from curate.report.facts import gather
from curate.report.page import page, pct, table


def diff_report(a: Manifest, b: Manifest, changes: dict[str, Any]) -> str:
    facts = {a.id: gather(a), b.id: gather(b)}
    sections = [("figures", "Figures, A beside B", _figures(a.data, b.data))]
    sections.append(("changed", "What changed", _changes(changes)))
    for anchor, heading, view in VIEWS[1:]:
        left, right = view(a.data, facts[a.id]), view(b.data, facts[b.id])
        sections.append(
            (
                anchor,
                heading,
                f"<div class=pair><div><h3>A {a.id[:12]}</h3>{left}</div>"
                f"<div><h3>B {b.id[:12]}</h3>{right}</div></div>",
            )
        )
    verdict = "the same build" if changes["identical"] else "different builds"
    return page(
        f"curate diff · {a.id[:12]} → {b.id[:12]}", f"A {a.id} · B {b.id} · {verdict}", sections
    )


def _numbers(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {f"counts.{k}": v for k, v in data["counts"].items() if k != "rejected"}
    out |= {f"rejected.{r}": n for r, n in data["counts"]["rejected"].items()}
    for s in data["sources"]:
        out |= {f"{s['name']}.{k}": s[k] for k in ("rows_in", "rows_kept", "rows_rejected")}
    for name, e in data["mixture"].get("sources", {}).items():
        out[f"{name}.realized_share"] = pct(e.get("realized_share_rows", e.get("realized_share")))
    out |= {f"splits.{k}": v["rows"] for k, v in data["splits"].items()}
    return out


def _figures(a: dict[str, Any], b: dict[str, Any]) -> str:
    left, right = _numbers(a), _numbers(b)
    rows, marked = [], []
    for key in dict.fromkeys([*left, *right]):
        x, y = left.get(key), right.get(key)
        delta = (
            f"{y - x:+,}" if isinstance(x, int) and isinstance(y, int) else ("" if x == y else "≠")
        )
        rows.append([key, x, y, delta])
        marked.append(x != y)
    return table(["figure", "A", "B", "B − A"], rows, {1, 2, 3}, marked)


def _changes(changes: dict[str, Any]) -> str:
    if changes["identical"]:
        return "<p>Same manifest id: nothing changed.</p>"
    out = []
    config = changes.get("config", [])
    if config:
        out.append(
            "<h3>Config</h3>"
            + table(["key", "A", "B"], [[c["key"], _short(c["a"]), _short(c["b"])] for c in config])
        )
    for key in ("splits", "tokenizer"):
        if changes.get(key):
            rows = [[k, _short(v["a"]), _short(v["b"])] for k, v in changes[key].items()]
            out.append(f"<h3>{key}</h3>" + table([key, "A", "B"], rows))
    moved = changes.get("rows")
    if moved:
        out.append(
            f"<h3>Output rows</h3><p>added {moved['added']:,} · removed {moved['removed']:,}</p>"
            f"<p class=muted>added: {escape(', '.join(moved['added_ids'][:10]))}<br>"
            f"removed: {escape(', '.join(moved['removed_ids'][:10]))}</p>"
        )
    return "".join(out)


def _short(v: Any) -> str:
    text = "" if v is None else str(v)
    return text if len(text) < 160 else text[:160] + " …"
