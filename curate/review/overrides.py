"""Reviewers' decisions applied in a build (`[[overrides]]`).

- `keep` (the rejection was wrong): the step that gave the reviewed reason spares the row,
  which goes on through the later steps like any kept row (a template check still runs on a
  row restored from dedup); the manifest lists it under `overrides.overridden` with the
  reason it escaped. A keep cannot restore a row that cannot be trained on (unreadable,
  malformed, or failing the template): those are refused, and listed.
- `reject`: a row every step kept goes to the ledger as `override_reject`, with the note,
  the reviewer and the decisions file:line.
- Ids the build does not have (the source changed) are counted and listed, never ignored.
The files' sha256 enter the manifest: the decision set is part of the build's identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate.config import MixtureConfig
from curate.fsio import sha256_file
from curate.review.decisions import Decision, latest, read
from curate.runner import apply_verdicts
from curate.steps import IndexStage, ReportView, Verdicts

# reasons a keep cannot overturn: the row cannot be read or trained on as it is
UNUSABLE = (
    "malformed",
    "invalid_schema",
    "empty_response",
    "template_error",
    "missing_eos",
    "too_long",
    "special_token_injection",
)


def base_id(row_id: str) -> str:
    """The id a block holds (identical copies in one source get `#k` only in the index)."""
    return row_id.split("#", 1)[0]


def spare(
    verdicts: Verdicts, ids: list[str], keeps: dict[str, str | None]
) -> tuple[Verdicts, list[int], list[str]]:
    """`verdicts` less the rejections a keep decision overturns (`ids`: the batch's row ids).
    Returns the verdicts, and the spared rows with the reasons they escaped."""
    if not keeps or len(verdicts.rows) == 0:
        return verdicts, [], []
    reasons = verdicts.reason.to_pylist()
    spared = [
        k
        for k, (row, reason) in enumerate(zip(verdicts.rows.tolist(), reasons, strict=True))
        if reason not in UNUSABLE
        and base_id(ids[row]) in keeps
        and keeps[base_id(ids[row])] in (None, reason)
    ]
    if not spared:
        return verdicts, [], []
    keep = np.ones(len(verdicts.rows), dtype=bool)
    keep[spared] = False
    take = pa.array(np.nonzero(keep)[0])
    rest = Verdicts(
        verdicts.n,
        verdicts.rows[keep],
        verdicts.reason.take(take),
        verdicts.detail.take(take),
        verdicts.columns,
    )
    return rest, [int(verdicts.rows[k]) for k in spared], [reasons[k] for k in spared]


@dataclass
class Overrides:
    """The standing decisions of the config's decisions files."""

    files: list[dict[str, Any]] = field(default_factory=list)
    standing: dict[str, Decision] = field(default_factory=dict)

    @property
    def keeps(self) -> dict[str, str | None]:
        """Base id → the reason reviewed (None: any reason a keep may overturn)."""
        return {
            base_id(i): d.reason_reviewed for i, d in self.standing.items() if d.decision == "keep"
        }


def load_overrides(config: MixtureConfig) -> Overrides:
    out = Overrides()
    decisions: list[Decision] = []
    for section in config.overrides:
        path = config.base_dir / section.path
        found = read(path, section.path)
        decisions += found
        out.files.append(
            {"path": section.path, "sha256": sha256_file(path), "decisions": len(found)}
        )
    out.standing = latest(decisions)
    return out


class OverrideStage(IndexStage):
    """`reject` decisions on rows the steps kept; the report of every decision's fate."""

    name = "overrides"
    stage = "overrides"

    def __init__(self, overrides: Overrides):
        self.overrides = overrides
        self.report: dict[str, Any] = {}

    def params(self) -> dict[str, Any]:
        return {"files": self.overrides.files}

    def run(self, index: pl.DataFrame) -> pl.DataFrame:
        standing = self.overrides.standing
        ids = index["id"].to_list()
        position = {i: k for k, i in enumerate(ids)}
        reasons = index["reason"].to_list()
        rejects = [
            (position[i], d)
            for i, d in standing.items()
            if d.decision == "reject" and i in position
        ]
        hit = [(k, d) for k, d in rejects if reasons[k] is None]
        details = [{"note": d.note, "reviewer": d.reviewer, "decision": d.where} for _, d in hit]
        rows = np.asarray([k for k, _ in hit], dtype=np.int64)
        if len(rows):
            verdicts = Verdicts.reject(len(rows), np.arange(len(rows)), "override_reject", details)
            index = apply_verdicts(index, rows, verdicts, self.stage)
        keeps = [
            (position[i], i) for i, d in standing.items() if d.decision == "keep" and i in position
        ]
        overridden = (
            index["overridden"].to_list()
            if "overridden" in index.columns
            else [None] * index.height
        )
        stale = sorted(i for i in standing if i not in position)
        self.report = {
            "files": self.overrides.files,
            "reject": {"applied": len(hit), "already_rejected": len(rejects) - len(hit)},
            "keep": {
                "applied": sum(overridden[k] is not None for k, _ in keeps),
                "refused": [
                    {"id": i, "reason": reasons[k]} for k, i in keeps if reasons[k] in UNUSABLE
                ],
                "rejected_for_another_reason": [
                    {"id": i, "reason": reasons[k]}
                    for k, i in keeps
                    if reasons[k] is not None and reasons[k] not in UNUSABLE
                ],
            },
            "overridden": [
                {"id": ids[k], "reason": r} for k, r in enumerate(overridden) if r is not None
            ],
            "stale": {"count": len(stale), "ids": stale[:20]},
        }
        return index

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        return {"overrides": self.report}
