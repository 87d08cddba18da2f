"""The manifest's `mixture`: per source and per role, shares asked, solved and realized, in
rows and in tokens, with the limit that bound each."""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.config import POSITIVE_ROLES, MixtureSection, SourceSection
from curate.mixers.solve import Node, role_nodes


def mixture_report(
    tree: Node,
    sources: list[SourceSection],
    mixture: MixtureSection,
    requested: list[float],
    wants: list[int],
    caps: list[int],
    source_rank: np.ndarray,
    copies: np.ndarray,
    size: np.ndarray,
    tokens: np.ndarray | None,
    total: int,
    asked_total: int | None,
) -> dict[str, Any]:
    unit = "tokens" if mixture.unit == "tokens" else "rows"
    n = len(sources)
    counts = np.bincount(source_rank, minlength=n)
    emitted = np.bincount(source_rank, weights=copies, minlength=n).astype(np.int64)
    unique = np.bincount(source_rank, weights=copies > 0, minlength=n).astype(np.int64)
    tok = tokens.astype(np.int64) if tokens is not None else None
    shrunk = asked_total is not None and total < asked_total  # the data could not fill it
    nodes = {leaf.name: leaf for leaf in tree.leaves()}
    roles = {r.name: r for r in role_nodes(tree)}
    entries: dict[str, Any] = {}
    for i, src in enumerate(sources):
        leaf, role = nodes[src.name], roles[src.role]
        entry: dict[str, Any] = {
            "role": src.role,
            "weight": src.weight,
            "requested_share": round(requested[i], 6),
            "solved_share": round(leaf.share, 6),
            f"requested_{unit}": wants[i],
            # what the weights alone would ask of this total, before any limit
            f"asked_{unit}": round(requested[i] * (asked_total or total)),
            "available_rows": int(counts[i]),
            "max_repeats": src.max_repeats,
            "realized_rows": int(emitted[i]),
            "unique_rows": int(unique[i]),
            "repeats": int(emitted[i] - unique[i]),
            "capped": leaf.bound is not None or (wants[i] >= caps[i] > 0 and shrunk),
            "bound": leaf.bound or role.bound or _group_bound(tree, src.role),
        }
        if tok is not None:
            mine = source_rank == i
            entry["available_tokens"] = int(tok[mine].sum())
            entry["realized_tokens"] = int((tok[mine] * copies[mine]).sum())
        if src.max_tokens is not None:
            entry["max_tokens"] = src.max_tokens
        entries[src.name] = entry
    report: dict[str, Any] = {
        "sources": entries,
        "requested_total": asked_total if asked_total is not None else total,
        "solved_total": total,
        "temperature": mixture.temperature,
        "strict_shares": mixture.strict_shares,
    }
    if unit == "tokens" or tok is not None:
        report["count"] = mixture.count
    _add_shares(report, entries, unit)
    report["roles"] = _roles_report(entries, roles, mixture)
    if (mined := mixture.roles.get("mined")) is not None and mined.min_positive_share:
        report["positive"] = {
            "min_positive_share": mined.min_positive_share,
            **_shares_of([e for e in entries.values() if e["role"] in POSITIVE_ROLES], report),
        }
    realized = {e["role"] for e in entries.values() if e["realized_rows"]}
    report["risks"] = {
        "forgetting_risk": not realized & {"replay", "general"},
        "safety_risk": "safety" not in realized,
    }
    return report


def _add_shares(report: dict[str, Any], entries: dict[str, Any], unit: str) -> None:
    """Realized shares per source in the unit, and in rows and tokens."""
    measures = ["rows"] + (
        ["tokens"] if any("realized_tokens" in e for e in entries.values()) else []
    )
    for measure in measures:
        whole = sum(e[f"realized_{measure}"] for e in entries.values())
        report[f"realized_total_{measure}"] = whole
        for e in entries.values():
            e[f"realized_share_{measure}"] = (
                round(e[f"realized_{measure}"] / whole, 6) if whole else 0.0
            )
    report["realized_total"] = report[f"realized_total_{unit}"]
    for e in entries.values():
        e["realized_share"] = e[f"realized_share_{unit}"]


def _shares_of(members: list[dict[str, Any]], report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in (
        "realized_share",
        "realized_share_rows",
        "realized_share_tokens",
        "solved_share",
        "requested_share",
    ):
        if members and key in members[0]:
            out[key] = round(sum(e[key] for e in members), 6)
    return out


def _roles_report(
    entries: dict[str, Any], roles: dict[str, Node], mixture: MixtureSection
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, node in roles.items():
        members = [e for e in entries.values() if e["role"] == role]
        limits = mixture.roles.get(role)
        out[role] = {
            "sources": [name for name, e in entries.items() if e["role"] == role],
            "min_share": limits.min_share if limits else None,
            "max_share": limits.max_share if limits else None,
            "realized_rows": sum(e["realized_rows"] for e in members),
            "unique_rows": sum(e["unique_rows"] for e in members),
            "repeats": sum(e["repeats"] for e in members),
            "bound": node.bound,
            **_shares_of(members, {}),
        }
        if "realized_tokens" in members[0]:
            out[role]["realized_tokens"] = sum(e["realized_tokens"] for e in members)
    return out


def _group_bound(tree: Node, role: str) -> str | None:
    for group in tree.children:
        if group.name == "positive" and role in POSITIVE_ROLES and group.bound:
            return group.bound
    return None
