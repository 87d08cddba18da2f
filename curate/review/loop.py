"""The reviewers' loop over one build: record a decision on a row, measure each rule.

Decisions go to the decisions file beside the build's config (`review/decisions.jsonl`) unless
another is named; the next build reads it through `[[overrides]]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.ledger import connect
from curate.manifests.manifest import Manifest
from curate.review.decisions import append, latest, read, record, rule_stats


def decisions_path(manifest: Manifest, given: str | Path | None = None) -> Path:
    if given is not None:
        return Path(given)
    config_dir = manifest.store.read_run(manifest.id).get("config_dir")
    if not config_dir:
        raise UserError(
            f"manifest {manifest.id[:12]} does not say where its config was; "
            "give the decisions file with --decisions FILE"
        )
    return Path(config_dir) / "review" / "decisions.jsonl"


def rows_where(manifest: Manifest, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per id: its `reason` (None for a kept row) and `source`, from the ledger and output."""
    if not ids:
        return {}
    con = connect(manifest)
    try:
        con.execute("CREATE TEMP TABLE wanted (id VARCHAR)")
        con.executemany("INSERT INTO wanted VALUES (?)", [[i] for i in ids])
        found: dict[str, dict[str, Any]] = {}
        for view, reason in (("ledger", "reason"), ("rows", "NULL")):
            query = (
                f"SELECT DISTINCT id, {reason} AS reason, source FROM {view} "
                "WHERE id IN (SELECT id FROM wanted)"
            )
            for row_id, why, source in con.sql(query).fetchall():
                found.setdefault(row_id, {"reason": why, "source": source})
        return found
    finally:
        con.close()


def decide(
    manifest: Manifest,
    row_id: str,
    decision: str,
    note: str | None = None,
    reviewer: str | None = None,
    path: str | Path | None = None,
) -> dict[str, Any]:
    """Append one decision on a row of this build; returns the record written."""
    where = rows_where(manifest, [row_id]).get(row_id)
    if where is None:
        raise UserError(f"build {manifest.id[:12]} has no row {row_id!r} (output or ledger)")
    if decision == "keep" and where["reason"] is None:
        raise UserError(f"row {row_id} is already in the output: nothing to keep")
    rec = record(row_id, decision, where["reason"], manifest.id, note, reviewer)
    append(decisions_path(manifest, path), [rec])
    return rec


def stats(
    manifest: Manifest, paths: list[str | Path] | None = None, threshold: float = 0.9
) -> list[dict[str, Any]]:
    """Per rule (reason) and source of this build: its precision by the reviews."""
    files = [Path(p) for p in paths] if paths else [decisions_path(manifest)]
    standing = latest([d for f in files if f.exists() for d in read(f)])
    where = rows_where(manifest, list(standing))
    # rows a keep decision restored in this build: their rule rejected them, a reviewer
    # overturned it; they count against the rule here too, not only in the build reviewed
    overridden = {
        o["id"]: o["reason"] for o in manifest.data.get("overrides", {}).get("overridden", [])
    }
    reviewed = {}
    for i, w in where.items():
        reason = overridden.get(i, w["reason"])
        if reason not in (None, *NOT_RULES) and standing[i].reason_reviewed in (None, reason):
            reviewed[i] = (reason, w["source"])
    rejected = {
        (reason, src["name"]): n
        for src in manifest.data["sources"]
        for reason, n in src["rejected"].items()
        if reason not in NOT_RULES
    }
    for i, reason in overridden.items():
        if i in where:
            key = (reason, where[i]["source"])
            rejected[key] = rejected.get(key, 0) + 1
    return rule_stats(rejected, reviewed, standing, threshold)


# Not rules whose precision reviews measure: the mixture's draw, and reviewers' own rejects.
NOT_RULES = ("not_sampled", "override_reject")
