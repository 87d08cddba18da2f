"""The manifest: what a build read, did, kept and rejected, as canonical JSON.

Its id is the sha256 of its canonical bytes (see `store.canonical_json`); nothing volatile
(time, host, durations, absolute paths) goes in it, so the same inputs, config and code give
the same id on any machine and in any store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from curate import __version__
from curate.config import MixtureConfig
from curate.manifests.store import Store
from curate.mixers.split import SPLIT_NAMES

MANIFEST_SCHEMA = "curate.manifest/1"


def stage_entry(
    name: str, fingerprint: str, params: dict[str, Any], state: pl.DataFrame, stage: str
) -> dict[str, Any]:
    """Rows in/out and rejections by reason of one stage, read off the build's state."""
    mine = state.filter(pl.col("stage") == stage)
    rejected = {r: int(n) for r, n in mine.group_by("reason").len().sort("reason").iter_rows()}
    alive_after = int(state["reason"].is_null().sum())
    return {
        "name": name,
        "fingerprint": fingerprint,
        "params": params,
        "rows_in": alive_after + mine.height,
        "rows_out": alive_after,
        "rejected": rejected,
    }


def assemble(
    config: MixtureConfig,
    state: pl.DataFrame,
    file_entries: list[list[dict[str, Any]]],
    stages: list[dict[str, Any]],
    mixture_report: dict[str, Any],
    splits: dict[str, Any],
    ledger: dict[str, Any],
    parent: str | None,
) -> dict[str, Any]:
    sources = []
    for rank, src in enumerate(config.sources):
        rows = state.filter(pl.col("source_rank") == rank)
        rejected = rows.filter(pl.col("reason").is_not_null())
        by_reason = {
            r: int(n) for r, n in rejected.group_by("reason").len().sort("reason").iter_rows()
        }
        sources.append(
            {
                "name": src.name,
                "role": src.role,
                "license": src.license,
                "format": src.format,
                "weight": src.weight,
                "max_repeats": src.max_repeats,
                "files": file_entries[rank],
                "rows_in": rows.height,
                "rows_kept": int((rows["copies"] > 0).sum()),
                "rows_rejected": rejected.height,
                "rows_emitted": int(rows["copies"].sum()),
                "rejected": by_reason,
            }
        )
    totals = {
        r: int(n)
        for r, n in state.filter(pl.col("reason").is_not_null())
        .group_by("reason")
        .len()
        .sort("reason")
        .iter_rows()
    }
    return {
        "schema": MANIFEST_SCHEMA,
        "parent": parent,
        "config": config.canonical(),
        "sources": sources,
        "stages": stages,
        "tokenizer": None,
        "mixture": {"unit": config.mixture.unit, **mixture_report},
        "splits": splits,
        "ledger": ledger,
        "report": None,
        "counts": {
            "rows_in": state.height,
            "rows_kept": int((state["copies"] > 0).sum()),
            "rows_rejected": int(state["reason"].is_not_null().sum()),
            "rows_out": sum(splits[s]["rows"] for s in SPLIT_NAMES),
            "rejected": totals,
        },
        "code": {
            "curate": __version__,
            "pyarrow": pa.__version__,
            "reader": stages[0]["fingerprint"][:16],
        },
    }


@dataclass(frozen=True)
class Manifest:
    """A manifest read back from a store, with paths to its objects."""

    id: str
    data: dict[str, Any]
    store: Store

    def split_names(self) -> list[str]:
        return [name for name in SPLIT_NAMES if name in self.data["splits"]]

    def shard_paths(self, split: str) -> list[Path]:
        if split not in self.data["splits"]:
            raise KeyError(split)
        return [self.store.object_path(s["object"]) for s in self.data["splits"][split]["shards"]]

    def ledger_paths(self) -> list[Path]:
        return [self.store.object_path(p["object"]) for p in self.data["ledger"]["parts"]]

    def objects(self) -> list[str]:
        shas = [s["object"] for split in self.data["splits"].values() for s in split["shards"]]
        shas += [p["object"] for p in self.data["ledger"]["parts"]]
        if self.data.get("report"):
            shas.append(self.data["report"]["object"])
        return shas

    @property
    def counts(self) -> dict[str, Any]:
        return self.data["counts"]


def warnings(data: dict[str, Any]) -> list[str]:
    """What a user should look at before training on a build (derived from the manifest)."""
    out: list[str] = []
    read_reasons = ("malformed", "invalid_schema", "empty_response")
    for src in data["sources"]:
        name, rows_in = src["name"], src["rows_in"]
        if rows_in == 0:
            out.append(f"source {name!r}: no rows (are its files empty?)")
            continue
        unreadable = sum(n for r, n in src["rejected"].items() if r in read_reasons)
        if unreadable * 2 >= rows_in:
            worst = max(
                ((r, n) for r, n in src["rejected"].items() if r in read_reasons),
                key=lambda rn: rn[1],
            )
            out.append(
                f"source {name!r}: {unreadable} of {rows_in} rows could not be used (mostly {worst[0]}); "
                f'check its `format`, or map its fields with `columns = {{ your_field = "prompt", ... }}`; '
                f"`curate review ID --source {name}` shows them"
            )
        left_out = src["rejected"].get("not_sampled", 0)
        if left_out * 2 >= rows_in:
            out.append(
                f"source {name!r}: {left_out} of {rows_in} rows left out to honour the weights (`not_sampled`)"
            )
        mix = data["mixture"]["sources"].get(name, {})
        if mix.get("capped") and mix.get("available_rows"):
            out.append(
                f"source {name!r}: asked for {mix['requested_rows']} rows, has {mix['available_rows']} "
                f"(max_repeats {mix['max_repeats']}): got {mix['realized_rows']}"
            )
    return out
