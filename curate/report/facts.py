"""What a build report shows beyond the manifest, read from the build's own objects with
DuckDB: examples per reason, token-length distributions, duplicate clusters, leaks.

Every query is bounded (aggregates, or a few rows per group), so the report costs a scan of
the ledger and of the token-count columns, never the rows' text at large.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from curate.manifests.manifest import Manifest

DUPLICATES = ("exact_duplicate", "near_duplicate", "semantic_duplicate")
PAYLOAD = "kind, messages, text, chosen, rejected, meta, origin, raw"
EXAMPLES = 3
CLUSTER_BUCKETS = ((2, 2), (3, 3), (4, 5), (6, 10), (11, 50), (51, None))


def gather(manifest: Manifest) -> dict[str, Any]:
    from curate.ledger import connect

    con = connect(manifest)
    try:
        return {
            "examples": _examples(con),
            "lengths": _lengths(con, manifest.data),
            "clusters": _clusters(con),
            "leaks": _leaks(con),
        }
    finally:
        con.close()


def _records(con: Any, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out = con.sql(sql, params=params or {}).to_arrow_table().to_pylist()
    for rec in out:
        if isinstance(rec.get("detail"), str):
            rec["detail"] = json.loads(rec["detail"]) if rec["detail"] else {}
    return out


def _examples(con: Any) -> dict[str, list[dict[str, Any]]]:
    """A few rejected rows per reason (the smallest ids: stable from build to build)."""
    rows = _records(
        con,
        f"""SELECT id, source, stage, reason, detail, {PAYLOAD} FROM ledger
        QUALIFY row_number() OVER (PARTITION BY reason ORDER BY id) <= {EXAMPLES}
        ORDER BY reason, id""",
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in rows:
        out.setdefault(rec["reason"], []).append(rec)
    return out


def _lengths(con: Any, data: dict[str, Any]) -> dict[str, Any] | None:
    """Per split and source: histograms and percentiles of total, prompt and answer tokens
    (answer = trained tokens), on bin edges shared by all so charts compare."""
    columns = {r[0] for r in con.sql("DESCRIBE rows").fetchall()}
    if "n_tokens" not in columns:
        return None
    table = con.sql(
        "SELECT split, source, n_tokens, n_trained, tokens_cut FROM rows ORDER BY split, source"
    ).to_arrow_table()
    if table.num_rows == 0:
        return None
    split = table["split"].to_numpy(zero_copy_only=False)
    source = table["source"].to_numpy(zero_copy_only=False)
    total = table["n_tokens"].to_numpy(zero_copy_only=False).astype(np.int64)
    answer = table["n_trained"].to_numpy(zero_copy_only=False).astype(np.int64)
    metrics = {"prompt": total - answer, "answer": answer, "total": total}
    max_length = (data.get("tokenizer") or {}).get("max_length")
    # the range the rows span; stretched to max_length only when that is near, else the
    # rows would crowd into the first bins of a mostly empty axis
    hi = max(int(total.max()), 1)
    if max_length and max_length <= 1.25 * hi:
        hi = max(hi, int(max_length))
    edges = np.linspace(0, hi, 25)
    groups: list[dict[str, Any]] = []
    for sp in [s for s in ("train", "validation", "test") if (split == s).any()]:
        for src in sorted(set(source[split == sp])):
            sel = (split == sp) & (source == src)
            entry: dict[str, Any] = {"split": sp, "source": src, "rows": int(sel.sum())}
            for name, values in metrics.items():
                v = values[sel]
                counts, _ = np.histogram(v, bins=edges)
                entry[name] = {
                    "counts": counts.tolist(),
                    **{f"p{q}": int(np.percentile(v, q, method="lower")) for q in (50, 90, 99)},
                    "max": int(v.max()),
                }
            groups.append(entry)
    cut = table["tokens_cut"].to_numpy(zero_copy_only=False).astype(np.int64)
    truncated = {
        src: {
            "rows": int(((source == src) & (cut > 0)).sum()),
            "tokens": int(cut[source == src].sum()),
        }
        for src in sorted(set(source))
    }
    return {
        "edges": [round(float(e), 1) for e in edges],
        "max_length": max_length,
        "groups": groups,
        "truncated": truncated,
    }


def _clusters(con: Any) -> dict[str, Any]:
    """Duplicate clusters (a kept row and every row rejected as its duplicate): their size
    distribution per reason, and the largest, each with its kept row and one duplicate."""
    con.execute(
        f"""CREATE TEMP TABLE sizes AS SELECT reason, json_extract_string(detail, '$.duplicate_of') AS twin,
                   count(*) + 1 AS size, min(id) AS first
            FROM ledger WHERE reason IN {DUPLICATES} GROUP BY ALL""",
    )
    buckets: dict[str, list[int]] = {}
    for reason, size, clusters in con.sql(
        "SELECT reason, size, count(*) FROM sizes GROUP BY ALL ORDER BY reason, size"
    ).fetchall():
        counts = buckets.setdefault(reason, [0] * len(CLUSTER_BUCKETS))
        for k, (lo, hi) in enumerate(CLUSTER_BUCKETS):
            if size >= lo and (hi is None or size <= hi):
                counts[k] += clusters
    from curate.review.sample import find_row

    largest = []
    for reason, twin, size, first in con.sql(
        "SELECT reason, twin, size, first FROM sizes ORDER BY size DESC, reason, twin LIMIT 5"
    ).fetchall():
        dup = _records(
            con,
            f"SELECT id, source, detail, {PAYLOAD} FROM ledger WHERE id = $id AND reason = $r LIMIT 1",
            {"id": first, "r": reason},
        )
        largest.append(
            {
                "reason": reason,
                "size": int(size),
                "kept": find_row(con, twin),
                "duplicate": dup[0] if dup else None,
            }
        )
    return {
        "buckets": [f"{lo}" if lo == hi else f"{lo}–{hi or '…'}" for lo, hi in CLUSTER_BUCKETS],
        "by_reason": buckets,
        "largest": largest,
    }


def _leaks(con: Any) -> list[dict[str, Any]]:
    """Leaked rows per eval set and source, with a few examples and their matched spans."""
    return _records(
        con,
        f"""SELECT id, source, detail, {PAYLOAD} FROM ledger WHERE reason = 'contaminated'
        QUALIFY row_number() OVER (
            PARTITION BY json_extract_string(detail, '$.eval_set') ORDER BY id) <= {EXAMPLES}
        ORDER BY json_extract_string(detail, '$.eval_set'), id""",
    )
