"""Charts as inline SVG: no script, no network, the same bytes for the same numbers.

Every chart scales to its container (`viewBox`, width 100%), so one page reads at 1280 px
and on a phone. Numbers are written with fixed precision: a report is a store object whose
hash enters the manifest, so it must be byte-identical for identical inputs.
"""

from __future__ import annotations

from html import escape

PALETTE = ("#3b6ea8", "#e08a2c", "#4f9d69", "#b5485d", "#7b61a8", "#8c7b50")


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _label(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:,.0f}" if v == int(v) else f"{v:.3g}"


def _svg(width: int, height: int, title: str, body: list[str], kind: str) -> str:
    return (
        f'<svg class="chart {kind}" viewBox="0 0 {width} {height}" role="img" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def hbars(title: str, items: list[tuple[str, float]], unit: str = "rows") -> str:
    """One horizontal bar per item, its value written beside it."""
    if not items:
        return ""
    width, row, left = 600, 22, 170
    height = row * len(items) + 24
    top = max(v for _, v in items) or 1.0
    body = [f'<text x="{left}" y="12">{escape(title)}</text>']
    for i, (name, value) in enumerate(items):
        y = 20 + i * row
        w = (width - left - 70) * value / top
        body.append(
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(name[:28])}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{_n(w)}" height="{row - 7}" '
            f'fill="{PALETTE[0]}"><title>{escape(name)}: {value:,.0f} {unit}</title></rect>'
            f'<text x="{_n(left + w + 4)}" y="{y + 15}">{_label(value)}</text>'
        )
    return _svg(width, height, title, body, "hbars")


def grouped(title: str, labels: list[str], series: dict[str, list[float]], pct: bool) -> str:
    """Bars per label, one per series side by side (requested vs realized), with a legend."""
    if not labels:
        return ""
    width, left, group = 600, 130, 16 * len(series) + 10
    height = 26 + group * len(labels)
    top = max((v for vs in series.values() for v in vs), default=1.0) or 1.0
    body = [
        f'<rect x="{left + 150 * k}" y="4" width="10" height="10" fill="{PALETTE[k]}"/>'
        f'<text x="{left + 150 * k + 14}" y="13">{escape(name)}</text>'
        for k, name in enumerate(series)
    ]
    for i, label in enumerate(labels):
        y0 = 24 + i * group
        body.append(f'<text x="{left - 6}" y="{y0 + group / 2 + 3:.0f}" text-anchor="end">')
        body.append(f"{escape(label[:20])}</text>")
        for k, (name, values) in enumerate(series.items()):
            v = values[i]
            w = (width - left - 60) * v / top
            shown = f"{v:.1%}" if pct else _label(v)
            y = y0 + 16 * k
            body.append(
                f'<rect x="{left}" y="{y}" width="{_n(w)}" height="13" fill="{PALETTE[k]}">'
                f"<title>{escape(label)} {escape(name)}: {shown}</title></rect>"
                f'<text x="{_n(left + w + 4)}" y="{y + 11}">{shown}</text>'
            )
    return _svg(width, height, title, body, "grouped")


def histogram(
    title: str, edges: list[float], counts: list[int], markers: dict[str, float] | None = None
) -> str:
    """Bars over [edges[i], edges[i+1]); `markers` draw labelled vertical lines (max_length,
    percentiles) at their x."""
    if not counts:
        return ""
    width, height, left, bottom = 300, 150, 34, 22
    plot_w, plot_h = width - left - 6, height - bottom - 16
    lo, hi = edges[0], edges[-1] if edges[-1] > edges[0] else edges[0] + 1
    top = max(counts) or 1
    x = lambda v: left + plot_w * (v - lo) / (hi - lo)  # noqa: E731
    body = [f'<text x="{left}" y="10">{escape(title)}</text>']
    for i, c in enumerate(counts):
        h = plot_h * c / top
        x0, x1 = x(edges[i]), x(edges[i + 1])
        body.append(
            f'<rect x="{_n(x0)}" y="{_n(16 + plot_h - h)}" width="{_n(max(x1 - x0 - 0.5, 0.5))}" '
            f'height="{_n(h)}" fill="{PALETTE[0]}"><title>{edges[i]:.0f}–{edges[i + 1]:.0f}: '
            f"{c:,}</title></rect>"
        )
    for k, (name, v) in enumerate((markers or {}).items()):
        if lo <= v <= hi:
            mx = x(v)
            body.append(
                f'<line x1="{_n(mx)}" x2="{_n(mx)}" y1="16" y2="{16 + plot_h}" '
                f'stroke="{PALETTE[1 + k % 5]}" stroke-dasharray="3,2"/>'
                f'<text x="{_n(mx + 2 if mx < width - 60 else mx - 2)}" y="{24 + 9 * k}" '
                f'class="mark" text-anchor="{"start" if mx < width - 60 else "end"}">'
                f"{escape(name)}</text>"
            )
    body.append(
        f'<text x="{left}" y="{height - 6}">{lo:.0f}</text>'
        f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end">{hi:.0f}</text>'
        f'<text x="{left - 4}" y="22" text-anchor="end">{_label(top)}</text>'
    )
    return _svg(width, height, title, body, "histogram")


def lines(title: str, series: dict[str, list[tuple[float, float]]], ylabel: str) -> str:
    """One polyline per series over a shared x (steps), with points and a legend."""
    points = [p for s in series.values() for p in s]
    if not points:
        return ""
    width, height, left, bottom = 600, 220, 48, 24
    plot_w, plot_h = width - left - 10, height - bottom - 22
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    px = lambda v: left + plot_w * (v - x0) / (x1 - x0)  # noqa: E731
    py = lambda v: 22 + plot_h * (1 - (v - y0) / (y1 - y0))  # noqa: E731
    body = [f'<text x="{left}" y="12">{escape(ylabel)}</text>']
    for k, (name, pts) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        body.append(
            f'<rect x="{left + 170 + 130 * k}" y="3" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + 184 + 130 * k}" y="12">{escape(name)}</text>'
        )
        path = " ".join(f"{_n(px(a))},{_n(py(b))}" for a, b in pts)
        body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        body += [
            f'<circle cx="{_n(px(a))}" cy="{_n(py(b))}" r="2.5" fill="{colour}">'
            f"<title>{escape(name)} step {a:g}: {b:.4g}</title></circle>"
            for a, b in pts
        ]
    body.append(
        f'<text x="{left - 4}" y="{26}" text-anchor="end">{y1:.3g}</text>'
        f'<text x="{left - 4}" y="{22 + plot_h}" text-anchor="end">{y0:.3g}</text>'
        f'<text x="{left}" y="{height - 6}">step {x0:g}</text>'
        f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end">{x1:g}</text>'
    )
    return _svg(width, height, title, body, "lines")
