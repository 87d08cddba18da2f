"""The mixture and the split as stages over the build's index, like every other step.

Each has `params()`, a `fingerprint()`, a `run(index)` that adds its columns (`copies`,
`split`) and verdicts (`not_sampled`), and the manifest section it owns.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate.config import MixtureConfig
from curate.mixers.split import assign_splits
from curate.mixers.weights import not_sampled_detail, plan_mixture
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

    def fingerprint(self) -> str:
        return hashlib.sha256(
            json.dumps({"step": self.name, "params": self.params()}, sort_keys=True).encode()
        ).hexdigest()

    def run(self, index: pl.DataFrame) -> pl.DataFrame:
        config = self.config
        alive = np.nonzero(index["reason"].is_null().to_numpy())[0]
        sizes = None
        if config.mixture.unit == "tokens":
            sizes = index["n_tokens"].to_numpy()[alive] if "n_tokens" in index.columns else None
            if sizes is None:
                sizes = np.zeros(len(alive), dtype=np.int64)
        plan = plan_mixture(
            index["source_rank"].to_numpy()[alive],
            list(config.sources),
            config.mixture,
            config.build.seed,
            sizes,
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
    """Which split each kept row goes to (see `mixers.split`)."""

    name = "split"
    stage = "split"

    def __init__(self, config: MixtureConfig):
        self.config = config

    def params(self) -> dict[str, Any]:
        return self.config.split.model_dump()

    def meta_fields(self) -> dict[str, str]:
        by = self.config.split.by
        return {} if by == "row" else {"group": by}

    def run(self, index: pl.DataFrame) -> pl.DataFrame:
        kept = np.nonzero(index["copies"].to_numpy() > 0)[0]
        groups = (
            index["group"].to_arrow().take(pa.array(kept)) if "group" in index.columns else None
        )
        codes = np.zeros(index.height, dtype=np.int8)
        codes[kept] = assign_splits(
            index["id"].to_arrow().take(pa.array(kept)),
            groups,
            self.config.split.validation,
            self.config.build.seed,
        )
        return index.with_columns(pl.Series("split", codes))
