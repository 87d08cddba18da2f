"""The mixture and the split as stages over the build's index, like every other step.

Each has `params()`, a `fingerprint()`, a `run(index)` that adds its columns (`copies`,
`split`) and verdicts (`not_sampled`), and the manifest section it owns.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate.config import MixtureConfig
from curate.mixers.split import assign_splits, unit_report
from curate.mixers.weights import id_numbers, not_sampled_detail, plan_mixture
from curate.rows import SPLIT_NAMES
from curate.runner import apply_verdicts
from curate.steps import IndexStage, ReportView, Verdicts


class MixtureStage(IndexStage):
    """How many copies of each surviving row the output holds (see `mixers.weights`)."""

    name = "mixture"
    stage = "mixture"

    def __init__(self, config: MixtureConfig):
        self.config = config
        self.report: dict[str, Any] = {}

    def params(self) -> dict[str, Any]:
        return self.config.mixture.model_dump()

    def run(self, index: pl.DataFrame) -> pl.DataFrame:
        config = self.config
        alive = np.nonzero(index["reason"].is_null().to_numpy())[0]
        # a budget in tokens counts the trained ones (the answers) unless `count = "all"`
        column = "n_trained" if config.mixture.count == "trained" else "n_tokens"
        tokens = None
        if column in index.columns:
            tokens = index[column].fill_null(0).to_numpy()[alive]
        sizes = None
        if config.mixture.unit == "tokens":
            sizes = tokens if tokens is not None else np.zeros(len(alive), dtype=np.int64)
        plan = plan_mixture(
            index["source_rank"].to_numpy()[alive],
            list(config.sources),
            config.mixture,
            config.build.seed,
            sizes,
            tokens,
            id_numbers(index["id"].gather(alive)),
            # rows a reviewer kept are drawn first: their decision reaches the output
            index["overridden"].is_not_null().to_numpy()[alive]
            if "overridden" in index.columns
            else None,
        )
        copies = np.zeros(index.height, dtype=np.int64)
        copies[alive] = plan.copies
        dropped = alive[plan.copies == 0]
        names = [s.name for s in config.sources]
        ranks = index["source_rank"].to_numpy()[dropped]
        per_source = pa.array(
            [json.dumps(not_sampled_detail(plan.report, name), sort_keys=True) for name in names],
            pa.string(),
        )
        verdicts = Verdicts.reject(
            len(dropped), np.arange(len(dropped)), "not_sampled", per_source.take(pa.array(ranks))
        )
        self.report = plan.report
        index = apply_verdicts(index, dropped, verdicts, self.stage)
        return index.with_columns(pl.Series("copies", copies))

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        return {"mixture": {"unit": self.config.mixture.unit, **self.report}}


class SplitStage(IndexStage):
    """Which split each kept row goes to (see `mixers.split`): by row, by near-duplicate
    cluster (the `cluster` column a MinHash step adds), by a meta field's value, or by time."""

    name = "split"
    stage = "split"
    # `split_unit`: the key rows were split together by (null: the row alone); `curate
    # verify` checks that no key is in two splits
    index_columns = ("split", "split_unit")

    def __init__(self, config: MixtureConfig):
        self.config = config
        self.section = config.split
        self.undated = 0
        self.units_placed: dict[str, Any] = {}  # `split.unit_report` of a split by units

    def params(self) -> dict[str, Any]:
        return self.section.model_dump(mode="json")

    def meta_fields(self) -> dict[str, str]:
        field = self.section.field
        return {} if field is None else {"group": field}

    def run(self, index: pl.DataFrame) -> pl.DataFrame:
        section = self.section
        kept = np.nonzero(index["copies"].to_numpy() > 0)[0]
        take = pa.array(kept)
        by_time = section.time_cutoff is not None
        groups = None if by_time else self.units(index, kept)
        held = np.zeros(len(kept), dtype=bool)
        if section.holdout_sources:
            ranks = [
                i for i, s in enumerate(self.config.sources) if s.name in section.holdout_sources
            ]
            held |= np.isin(index["source_rank"].to_numpy()[kept], ranks)
        if by_time:
            after, dated = at_or_after(index["group"].to_arrow().take(take), section.time_cutoff)
            held |= after
            self.undated = int((~dated).sum())
        codes = np.zeros(index.height, dtype=np.int8)
        codes[kept] = assign_splits(
            index["id"].to_arrow().take(take),
            groups,
            section.validation,
            self.config.build.seed,
            section.test,
            held,
            eval_only=by_time,
        )
        units = pl.Series("split_unit", [], pl.String).clear(index.height)
        if groups is not None:
            units = units.scatter(kept, pl.Series(groups).cast(pl.String))
            self.units_placed = unit_report(groups, codes[kept], section.validation, section.test)
        return index.with_columns(pl.Series("split", codes), units)

    def units(self, index: pl.DataFrame, kept: np.ndarray) -> pa.Array | None:
        """Per kept row, the key of the unit it is split with: its meta field's value, or
        its cluster (MinHash and, where semantic dedup ran, embedding clusters joined)."""
        if self.section.by != "cluster":
            return (
                index["group"].to_arrow().take(pa.array(kept)) if "group" in index.columns else None
            )
        found: list[str] = [c for c in ("cluster", "semantic_cluster") if c in index.columns]
        if len(found) < 2:
            return index[found[0]].to_arrow().take(pa.array(kept)) if found else None
        return joined_clusters(index[kept], found)

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        """Per split: rows (unique, before repeats) per source, and the units split over."""
        kept = view.kept
        out: dict[str, Any] = {}
        column = "split_unit" if self.section.by == "cluster" else None
        for code, name in enumerate(SPLIT_NAMES):
            mine = kept.filter(pl.col("split") == code)
            counts = mine.group_by("source_rank").len().sort("source_rank")
            entry: dict[str, Any] = {
                "unique_rows": mine.height,
                "sources": {view.sources[r]: int(k) for r, k in counts.iter_rows()},
            }
            if column is not None and column in mine.columns:
                entry["clusters"] = mine[column].n_unique() if mine.height else 0
            out[name] = entry
        if self.section.time_cutoff is not None:
            out["train"]["undated_rows"] = self.undated
        out["train"].update(self.units_placed)
        return {"splits": out}


def joined_clusters(rows: pl.DataFrame, columns: list[str]) -> pa.Array:
    """One key per row for clusters from several labelings (rows sharing any label are
    one cluster): the id of the cluster's first row."""
    from curate.dedup.clusters import clusters, first_rows

    n = rows.height
    edges = []
    offset = n
    for column in columns:  # row i joins node (offset + its label's rank); null: no label
        codes = rows[column].rank("dense").fill_null(0).to_numpy().astype(np.int64)
        present = codes > 0
        edges.append(np.stack([np.nonzero(present)[0], offset + codes[present] - 1], axis=1))
        offset += int(codes.max(initial=0))
    label = clusters(offset, np.concatenate(edges))[:n]
    return rows["id"].to_arrow().take(pa.array(first_rows(label)))


def at_or_after(values: pa.Array, cutoff: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per value (a meta field's text): is it at or after `cutoff`, and could it be read as
    a time at all? Times are ISO 8601 (naive ones read as UTC) or numbers (epoch seconds)."""
    limit = _epoch(cutoff)
    texts = pl.Series(values.cast(pa.string())).str.strip_chars()
    times = _vector_epochs(texts)
    rest = texts.filter(times.is_null() & texts.is_not_null()).unique()
    if len(rest):  # the forms polars does not parse: one Python parse per distinct text
        seconds = {v: _epoch(v) for v in rest.to_list()}
        times = times.fill_null(
            texts.replace_strict(
                list(seconds), list(seconds.values()), default=None, return_dtype=pl.Float64
            )
        )
    epochs = times.fill_null(float("nan")).to_numpy()
    dated = ~np.isnan(epochs)
    return dated & (np.nan_to_num(epochs, nan=-np.inf) >= limit), dated


ISO_FORMATS = (  # tried in order, vectorized; naive times are UTC
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
)


def _vector_epochs(texts: pl.Series) -> pl.Series:
    """Epoch seconds of numbers and the common ISO 8601 forms (null elsewhere)."""
    times = texts.cast(pl.Float64, strict=False)
    iso = texts.str.replace(r"[zZ]$", "+00:00")
    for form in ISO_FORMATS:
        parsed = iso.str.to_datetime(form, strict=False, time_unit="us", time_zone="UTC")
        times = times.fill_null(parsed.dt.epoch("us").cast(pl.Float64) / 1e6)
    return times.fill_nan(None)


def _epoch(value: Any) -> float:
    """Seconds since 1970 (UTC) of a time, a date, an ISO 8601 text or a number; NaN when
    it is none of those."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return math.nan
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    return math.nan
