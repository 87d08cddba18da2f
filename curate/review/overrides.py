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
    "no_user_turn",
    "role_marker_in_answer",
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
    verdicts: Verdicts, ids: pa.Array | pa.ChunkedArray, keeps: dict[str, str | None]
) -> tuple[Verdicts, np.ndarray, list[str]]:
    """`verdicts` less the rejections a keep decision overturns (`ids`: the batch's row ids).
    Returns the verdicts, and the spared rows with the reasons they escaped. Only the
    rejected rows are looked at, in one join with the (few) keep decisions."""
    none = np.empty(0, dtype=np.int64)
    if not keeps or len(verdicts.rows) == 0:
        return verdicts, none, []
    hit = pl.DataFrame(
        {
            "k": np.arange(len(verdicts.rows)),
            "base": pl.Series(ids.take(pa.array(verdicts.rows))).str.split("#").list.first(),
            "reason": pl.Series(verdicts.reason, dtype=pl.String),
        }
    )
    wanted = pl.DataFrame(
        {"base": list(keeps), "want": list(keeps.values())},
        schema={"base": pl.String, "want": pl.String},
    )
    found = (
        hit.join(wanted, on="base", how="inner")
        .filter(
            ~pl.col("reason").is_in(UNUSABLE)
            & (pl.col("want").is_null() | (pl.col("want") == pl.col("reason")))
        )
        .sort("k")
    )
    if found.height == 0:
        return verdicts, none, []
    spared = found["k"].to_numpy()
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
    return rest, verdicts.rows[spared], found["reason"].to_list()


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
        standing = list(self.overrides.standing.values())
        decided = pl.DataFrame(
            {
                "id": [d.id for d in standing],
                "decision": [d.decision for d in standing],
                "at": np.arange(len(standing)),
            },
            schema={"id": pl.String, "decision": pl.String, "at": pl.Int64},
        )
        columns = ["id", "reason"] + (["overridden"] if "overridden" in index.columns else [])
        found = (  # the decided rows of this build, in canonical order: one join, no loop
            index.select(columns).with_row_index("k").join(decided, on="id").sort("k")
        )
        if "overridden" not in found.columns:
            found = found.with_columns(pl.lit(None, pl.String).alias("overridden"))
        rejects = found.filter(pl.col("decision") == "reject")
        hit = rejects.filter(pl.col("reason").is_null())
        if hit.height:
            details = []
            for at in hit["at"].to_list():
                d = standing[at]
                details.append({"note": d.note, "reviewer": d.reviewer, "decision": d.where})
            rows = hit["k"].cast(pl.Int64).to_numpy()
            verdicts = Verdicts.reject(len(rows), np.arange(len(rows)), "override_reject", details)
            index = apply_verdicts(index, rows, verdicts, self.stage)
        keeps = found.filter(pl.col("decision") == "keep")
        unusable = pl.col("reason").is_in(UNUSABLE)
        stale = sorted(set(decided["id"].to_list()) - set(found["id"].to_list()))
        overridden = (
            index.filter(pl.col("overridden").is_not_null()).select("id", pl.col("overridden"))
            if "overridden" in index.columns
            else pl.DataFrame(schema={"id": pl.String, "overridden": pl.String})
        )
        self.report = {
            "files": self.overrides.files,
            "reject": {"applied": hit.height, "already_rejected": rejects.height - hit.height},
            "keep": {
                "applied": keeps.filter(pl.col("overridden").is_not_null()).height,
                "refused": keeps.filter(unusable).select("id", "reason").to_dicts(),
                "rejected_for_another_reason": keeps.filter(
                    pl.col("reason").is_not_null() & ~unusable
                )
                .select("id", "reason")
                .to_dicts(),
            },
            "overridden": [{"id": i, "reason": r} for i, r in overridden.iter_rows()],
            "stale": {"count": len(stale), "ids": stale[:20]},
        }
        return index

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        """The decisions' report, with where the rows kept ended: in the output, or not
        (a later stage, the mixture's sample say, dropped them again)."""
        if "overridden" not in view.index.columns:
            return {"overrides": self.report}
        kept = view.index.filter(pl.col("overridden").is_not_null())
        lost = kept.filter(pl.col("reason").is_not_null())
        landed = {
            "kept": kept.height,
            "in_output": kept.height - lost.height,
            "not_in_output": dict(sorted(lost["reason"].value_counts().iter_rows())),
            "ids_not_in_output": lost["id"].head(20).to_list(),
        }
        return {"overrides": {**self.report, "landed": landed}}
