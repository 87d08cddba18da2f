"""Sampling rejected rows for reviewers, each beside the row it was measured against.

Without a reason, the sample is stratified by reason (round-robin over the reasons present),
so a rule that rejected three rows is reviewed beside one that rejected thousands.

For duplicates the twin is the kept row (`detail.duplicate_of`), looked up in the output
first and then in the ledger (a kept twin may itself have been left out of the mixture).
"""

from __future__ import annotations

import json
from typing import Any

from curate.ledger import connect
from curate.manifests.manifest import Manifest

PAYLOAD = ("kind", "messages", "text", "chosen", "rejected", "meta", "origin", "raw")


def sample_rejections(
    manifest: Manifest,
    reason: str | None = None,
    source: str | None = None,
    n: int = 10,
    seed: int = 0,
) -> list[dict[str, Any]]:
    con = connect(manifest)
    try:
        picked = (
            con.sql(
                """
            SELECT * FROM ledger
            -- rows the mixture left out are not a rule's verdict: only when asked for
            WHERE (reason = $reason OR ($reason IS NULL AND reason != 'not_sampled'))
              AND ($source IS NULL OR source = $source)
            -- stratified: the first of each reason, then the second of each, ... so that
            -- every rule is reviewed, however rare
            ORDER BY row_number() OVER (
                PARTITION BY reason ORDER BY sha256(CAST($seed AS VARCHAR) || chr(0) || id), id
            ), reason
            LIMIT $n
            """,
                params={"reason": reason, "source": source, "seed": seed, "n": n},
            )
            .to_arrow_table()
            .to_pylist()
        )
        out = []
        for rec in picked:
            detail = json.loads(rec["detail"]) if rec["detail"] else {}
            twin = find_row(con, detail["duplicate_of"]) if "duplicate_of" in detail else None
            if "eval_set" in detail:  # a leak: the eval item it was measured against
                twin = {
                    "eval_set": detail["eval_set"],
                    "eval_id": detail["eval_id"],
                    "status": "eval item",
                    "text": detail.get("item"),
                }
            out.append(
                {
                    "id": rec["id"],
                    "source": rec["source"],
                    "stage": rec["stage"],
                    "reason": rec["reason"],
                    "detail": detail,
                    "row": _payload(rec),
                    "twin": twin,
                }
            )
        return out
    finally:
        con.close()


def find_row(con: Any, row_id: str) -> dict[str, Any] | None:
    for view, where in (("rows", "kept"), ("ledger", "rejected")):
        found = (
            con.sql(f"SELECT * FROM {view} WHERE id = $id LIMIT 1", params={"id": row_id})
            .to_arrow_table()
            .to_pylist()
        )
        if found:
            rec = found[0]
            # a rejected twin is shown with its reason (`not_sampled`: kept by the steps,
            # left out by the mixture), never as a bare "rejected"
            status = where if where == "kept" else f"{where}: {rec['reason']}"
            twin = {"id": rec["id"], "source": rec["source"], "status": status, **_payload(rec)}
            if where == "kept":
                twin["split"] = rec["split"]
            else:
                twin["reason"] = rec["reason"]
            return twin
    return None


def _payload(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in PAYLOAD if rec.get(k) is not None}
