"""The build report: one self-contained HTML page per build, a store object the manifest
names (`report`).

The manifest's id is the hash of a text that names the report, so the report cannot show
that id; everything else in it comes from the manifest (counts, stages, mixture, splits,
validation) or from the build's own objects (`facts.gather`). Each view is a function of one
manifest's data and facts, so `curate diff --html` lays the same views side by side.
"""

from __future__ import annotations

from html import escape
from typing import Any

from curate.manifests.manifest import Manifest
from curate.report import svg
from curate.report.facts import gather
from curate.report.page import (
    Raw,
    detail_text,
    fact,
    mark_diff,
    mark_span,
    page,
    pct,
    row_text,
    table,
)


def build_report(manifest: Manifest) -> str:
    data, facts = manifest.data, gather(manifest)
    name = data["config"].get("build", {}).get("name", "build")
    # not the parent: a rebuild's report equals a fresh store's, as its rows and counts do
    subtitle = f"{name} · {data['schema']} · curate {data['code']['curate']}"
    return page(
        f"curate build report · {name}", subtitle, [(a, h, f(data, facts)) for a, h, f in VIEWS]
    )


def summary(data: dict[str, Any], facts: dict[str, Any]) -> str:
    c = data["counts"]
    splits = ", ".join(
        f"{k} {fact(f'splits.{k}.rows', v['rows'])}" for k, v in data["splits"].items()
    )
    tokens = (
        f" · tokens out {fact('counts.tokens_out', c['tokens_out'])}"
        f" (trained {fact('counts.trained_tokens_out', c['trained_tokens_out'])})"
        if "tokens_out" in c
        else ""
    )
    from curate.manifests.manifest import warnings

    found = "".join(f"<li>{escape(w)}</li>" for w in warnings(data))
    return (
        f"<p>rows in {fact('counts.rows_in', c['rows_in'])} · kept {fact('counts.rows_kept', c['rows_kept'])}"
        f" · rejected {fact('counts.rows_rejected', c['rows_rejected'])} · out "
        f"{fact('counts.rows_out', c['rows_out'])} ({splits}){tokens}</p>"
        + (f"<h3>Warnings</h3><ul>{found}</ul>" if found else "")
    )


def funnel(data: dict[str, Any], facts: dict[str, Any]) -> str:
    stages = data["stages"]
    chart = svg.hbars("rows after each stage", [(s["name"], s["rows_out"]) for s in stages])
    stage_rows = [
        [
            s["name"],
            s["rows_in"],
            s["rows_out"],
            ", ".join(f"{r} {n:,}" for r, n in s["rejected"].items()),
        ]
        for s in stages
    ]
    reasons = sorted({r for s in data["sources"] for r in s["rejected"]})
    per_source = [
        [
            s["name"],
            s["role"],
            Raw(fact(f"sources.{s['name']}.rows_in", s["rows_in"])),
            s["rows_kept"],
            s["rows_rejected"],
        ]
        + [s["rejected"].get(r, 0) for r in reasons]
        for s in data["sources"]
    ]
    n = 5 + len(reasons)
    return (
        chart
        + table(["stage", "rows in", "rows out", "rejected"], stage_rows, {1, 2})
        + "<h3>Per source</h3>"
        + table(
            ["source", "role", "rows in", "kept", "rejected", *reasons],
            per_source,
            set(range(2, n)),
        )
        + "<h3>Rejections by reason</h3><p class=muted>Open a reason to see examples.</p>"
        + _reasons(data, facts)
    )


def _reasons(data: dict[str, Any], facts: dict[str, Any]) -> str:
    out = []
    for reason, n in sorted(data["counts"]["rejected"].items(), key=lambda kv: (-kv[1], kv[0])):
        shown = "".join(_example(rec) for rec in facts["examples"].get(reason, []))
        out.append(
            f'<details data-reason="{escape(reason)}"><summary><b>{escape(reason)}</b> '
            f"{fact(f'counts.rejected.{reason}', n)} rows</summary>{shown}</details>"
        )
    return "".join(out)


def _example(rec: dict[str, Any]) -> str:
    return (
        f'<div class="ex"><span class=muted>{escape(rec["id"])} · {escape(rec["source"])} · '
        f"{escape(rec.get('stage') or '')} · {escape(detail_text(rec['detail']))}</span>\n"
        f"{escape(row_text(rec, 600))}</div>"
    )


def lengths(data: dict[str, Any], facts: dict[str, Any]) -> str:
    found = facts["lengths"]
    if found is None:
        return "<p class=muted>No [tokenizer] in this build: lengths in tokens need one.</p>"
    edges, max_length = found["edges"], found["max_length"]
    out, rows = [], []
    for split in dict.fromkeys(g["split"] for g in found["groups"]):
        charts = []
        for g in (g for g in found["groups"] if g["split"] == split):
            for metric in ("prompt", "answer", "total"):
                m = g[metric]
                marks = {"p50": m["p50"], "p99": m["p99"]}
                if max_length and metric == "total":
                    marks["max_length"] = max_length
                charts.append(svg.histogram(f"{g['source']} · {metric}", edges, m["counts"], marks))
                rows.append(
                    [split, g["source"], metric, g["rows"], m["p50"], m["p90"], m["p99"], m["max"]]
                )
        opened = " open" if split == "train" else ""
        out.append(
            f"<details{opened}><summary>{escape(split)}</summary><div class=grid>{''.join(charts)}</div></details>"
        )
    cut = [[s, t["rows"], t["tokens"]] for s, t in found["truncated"].items()]
    too_long = {s["name"]: s["rejected"].get("too_long", 0) for s in data["sources"]}
    cut = [r + [too_long.get(r[0], 0)] for r in cut]
    return (
        f"<p>max_length {max_length or '–'}; answer = trained tokens, prompt = the rest.</p>"
        + "".join(out)
        + "<h3>Percentiles (tokens)</h3>"
        + table(
            ["split", "source", "part", "rows", "p50", "p90", "p99", "max"], rows, {3, 4, 5, 6, 7}
        )
        + "<h3>Truncation</h3>"
        + table(
            ["source", "rows cut (prompt, from the left)", "tokens cut", "rejected too_long"],
            cut,
            {1, 2, 3},
        )
    )


def mixture(data: dict[str, Any], facts: dict[str, Any]) -> str:
    mix = data["mixture"]
    out = []
    for level in ("sources", "roles"):
        entries = mix.get(level, {})
        names = list(entries)
        series = {"requested": [entries[n].get("requested_share") or 0.0 for n in names]}
        series["realized (rows)"] = [
            entries[n].get("realized_share_rows", entries[n].get("realized_share", 0.0))
            for n in names
        ]
        if any("realized_share_tokens" in e for e in entries.values()):
            series["realized (tokens)"] = [
                entries[n].get("realized_share_tokens", 0.0) for n in names
            ]
        out.append(svg.grouped(f"{level}: requested vs realized share", names, series, pct=True))
        rows = [
            [
                n,
                pct(e.get("requested_share")),
                Raw(
                    fact(
                        f"mixture.{level}.{n}.realized_share_rows",
                        pct(e.get("realized_share_rows", e.get("realized_share"))),
                    )
                ),
                pct(e.get("realized_share_tokens")),
                e.get("realized_rows"),
                e.get("realized_tokens"),
                " ".join(
                    f"{k} {pct(e[k])}" for k in ("min_share", "max_share") if e.get(k) is not None
                )
                or None,
            ]
            for n, e in entries.items()
        ]
        out.append(
            table(
                [
                    level[:-1],
                    "requested",
                    "realized rows",
                    "realized tokens",
                    "rows",
                    "tokens",
                    "floor / cap",
                ],
                rows,
                {1, 2, 3, 4, 5},
            )
        )
    risks = [k for k, v in mix.get("risks", {}).items() if v]
    if risks:
        out.append(f"<p class=bad>{escape(', '.join(risks))}</p>")
    return f"<p>counted in {escape(str(mix.get('count', mix.get('unit', 'rows'))))}</p>" + "".join(
        out
    )


def dedup(data: dict[str, Any], facts: dict[str, Any]) -> str:
    found = facts["clusters"]
    if not found["by_reason"]:
        return "<p class=muted>No duplicates removed.</p>"
    charts = "".join(
        svg.hbars(
            f"{reason}: clusters by size",
            list(zip(found["buckets"], counts, strict=True)),
            "clusters",
        )
        for reason, counts in found["by_reason"].items()
    )
    rows = [
        [f"size {b}", *[found["by_reason"][r][k] for r in found["by_reason"]]]
        for k, b in enumerate(found["buckets"])
    ]
    out = [
        charts,
        table(
            ["cluster size", *found["by_reason"]], rows, set(range(1, 1 + len(found["by_reason"])))
        ),
        "<h3>Largest clusters</h3>",
    ]
    for c in found["largest"]:
        kept, dup = c["kept"] or {}, c["duplicate"] or {}
        a, b = mark_diff(row_text(kept), row_text(dup))
        scores = (dup.get("detail") or {}).items()
        score = "".join(f" · {k} {v}" for k, v in scores if k in ("jaccard", "cosine"))
        # the row dedup kept may itself be left out later (the mixture's draw): say so
        where = "in the output" if kept.get("status") == "kept" else f"then {kept.get('reason')}"
        out.append(
            f"<h3>{escape(c['reason'])} · {c['size']} rows{escape(score)}</h3><div class=pair>"
            f"<div class=ex><span class=muted>kept by dedup {escape(kept.get('id', '?'))} · {escape(kept.get('source', ''))} · {escape(where)}</span>\n{a}</div>"
            f"<div class=ex><span class=muted>duplicate {escape(dup.get('id', '?'))} · {escape(dup.get('source', ''))}</span>\n{b}</div></div>"
        )
    return "".join(out)


def contamination(data: dict[str, Any], facts: dict[str, Any]) -> str:
    sets = data.get("contamination") or {}
    if not sets:
        return "<p class=muted>No eval sets in this build's config ([[evals]]).</p>"
    rows = [
        [
            name,
            s.get("items"),
            Raw(fact(f"contamination.{name}.leaked_items", s["leaked_items"])),
            s["rows"],
            ", ".join(f"{k} {v:,}" for k, v in s["by_source"].items()) or None,
        ]
        for name, s in sets.items()
    ]
    out = [
        table(
            ["eval set", "items", "items leaked", "rows rejected", "from sources"], rows, {1, 2, 3}
        )
    ]
    for rec in facts["leaks"]:
        d = rec["detail"]
        out.append(
            f"<h3>{escape(d['eval_set'])} · item {escape(str(d['eval_id']))} · overlap {d['overlap']:.0%}</h3>"
            f"<div class=pair><div class=ex><span class=muted>row {escape(rec['id'])} · {escape(rec['source'])}</span>\n"
            f"{mark_span(row_text(rec), d.get('match', ''))}</div>"
            f"<div class=ex><span class=muted>eval item</span>\n{mark_span(d.get('item') or '', d.get('match', ''))}</div></div>"
        )
    return "".join(out)


def validation(data: dict[str, Any], facts: dict[str, Any]) -> str:
    out = []
    for name, v in (data.get("validation") or {}).items():
        prompts = v.get("system_prompts", {})
        top = "".join(
            f"<li>{p['rows']:,} rows: {escape((p['text'] or '(none)')[:300])}</li>"
            for p in prompts.get("top", [])
        )
        pii = v.get("pii", {})
        langs = ", ".join(f"{k} {n:,}" for k, n in (v.get("languages") or {}).items())
        out.append(
            f"<h3>{escape(name)}</h3><p>system prompts: {prompts.get('variants', '–')} variants</p><ul>{top}</ul>"
            f"<p>PII: {pii.get('rows', 0):,} rows · "
            + (", ".join(f"{k} {n:,}" for k, n in pii.get("by_type", {}).items()) or "none found")
            + (f"<br>languages: {escape(langs)}" if langs else "")
            + "</p>"
        )
    tok = data.get("tokenizer") or {}
    template = tok.get("template") or {}
    if template:
        checks = [[k, v] for k, v in template.items() if k != "notes"]
        notes = "".join(f"<li>{escape(n)}</li>" for n in template.get("notes", []))
        out.append(
            "<h3>Chat template</h3>"
            + table(["check", "result"], checks)
            + (f"<ul>{notes}</ul>" if notes else "")
        )
    template_reasons = ("template_error", "missing_eos", "special_token_injection", "too_long")
    found = [(r, n) for r, n in data["counts"]["rejected"].items() if r in template_reasons]
    for reason, n in found:
        shown = "".join(_example(rec) for rec in facts["examples"].get(reason, []))
        out.append(f"<details><summary>{escape(reason)}: {n:,} rows</summary>{shown}</details>")
    return "".join(out)


VIEWS = (
    ("summary", "Summary", summary),
    ("funnel", "Funnel", funnel),
    ("lengths", "Token lengths", lengths),
    ("mixture", "Mixture", mixture),
    ("dedup", "Duplicates", dedup),
    ("contamination", "Contamination", contamination),
    ("validation", "Validation", validation),
)
