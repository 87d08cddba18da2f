"""`curate mine report RUN`: what a mining run found, per rule, per model version and over
time, and its largest candidates with an example each — read from the run's record and
its stored objects (each checked against its sha256)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from curate.dedup.semantic import DEFAULT_HUB_ID
from curate.errors import UnknownIdError, UserError
from curate.manifests.store import HEX64, Store

EARLIER = "recorded by an earlier version of curate mine"


def resolve_run(store: Store, ref: str) -> str:
    """A mining run's full id from a unique prefix (8+ hex digits) or the whole id."""
    found = [r for r in store.record_ids("mining") if r.startswith(ref.strip())]
    if len(ref.strip()) >= 8 and len(found) == 1:
        return found[0]
    if HEX64.match(ref.strip()) and found:
        return found[0]
    what = "is ambiguous" if len(found) > 1 else "is not a mining run"
    raise UnknownIdError(
        f"{ref!r} {what} in store {store.location} (runs: {', '.join(r[:12] for r in store.record_ids('mining')[-5:]) or 'none'})"
    )


def mining_report(
    store: Store, ref: str, top: int = 10, against: str | None = None
) -> dict[str, Any]:
    """What run `ref` found; with `against` (a manifest id or tag), how its traffic drifted
    per week from that build's training rows."""
    rid = resolve_run(store, ref)
    record = store.read_record("mining", rid)
    # the columns the report counts, not the failures' text; candidates by a scan
    failures = pl.read_parquet(
        store.verified_object(record["objects"]["failures"]["object"]),
        columns=["model", "timestamp", "reason", "candidate"],
    )
    index = pl.scan_parquet(store.verified_object(record["objects"]["candidates"]["object"]))
    day = pl.col("timestamp").str.slice(0, 10)
    return {
        "mining_run": rid,
        "counts": record["counts"],
        "by_model": _table(failures, pl.col("model").fill_null("(none)"), "model"),
        "by_day": _table(
            failures.filter(pl.col("timestamp").is_not_null()), day, "day", sort_by_key=True
        ),
        "top_candidates": index.filter(pl.col("candidate").is_in(failures["candidate"].implode()))
        .sort(["count", "candidate"], descending=[True, False])
        .head(top)
        .select("candidate", "reason", "count", "runs", "prompt", "response", "origin")
        .collect()
        .to_dicts(),
        # a run recorded before clusters and weeks existed (record version 1) has none
        "clusters": {k: v for k, v in _clusters_of(record).items() if k != "top"},
        "top_clusters": _clusters_of(record).get("top", [])[:top],
        "by_week": record.get("by_week", []),
        "consistency": record.get("consistency", {}),
        "candidates": record["candidates"],
        "contamination": record["contamination"],
        "latency_ms": record.get("latency_ms", {}),
        "drift": _drift(store, record, against) if against else None,
        "unreadable": _unreadable(store, record, top),
    }


def _unreadable(store: Store, record: dict[str, Any], top: int) -> list[dict[str, Any]]:
    """The first unreadable rows: where (path:line), which field, why (redacted already)."""
    entry = record["objects"].get("unread")
    if not entry or not record["counts"].get("unread"):
        return []
    rows = pl.read_parquet(
        store.verified_object(entry["object"]), columns=["origin", "field", "error"]
    )
    return rows.head(top).to_dicts()


def _clusters_of(record: dict[str, Any]) -> dict[str, Any]:
    found = record.get("clusters")
    return found if found is not None else {"model": None, "skipped": EARLIER}


def _drift(store: Store, record: dict[str, Any], against: str) -> dict[str, Any]:
    """The run's weekly prompt sample against the training rows of manifest `against`,
    embedded with the model the run clustered with (the default model when it had none)."""
    from curate.dedup.semantic import resolve_model
    from curate.manifests.manifest import Manifest
    from curate.mining.traffic import drift, training_prompts

    mid = store.resolve(against)
    manifest = Manifest(mid, store.read_manifest(mid), store)
    training = training_prompts(manifest.shard_paths("train"))
    if not training:
        raise UserError(f"manifest {mid[:12]} has no training rows with a user turn to compare")
    clusters = _clusters_of(record)
    name = clusters.get("model")
    model = resolve_model(None if name in (None, DEFAULT_HUB_ID) else name, Path.cwd())
    if name is not None and model.sha256 != clusters.get("model_sha256"):
        raise UserError(
            f"the run embedded with {name} ({str(clusters.get('model_sha256'))[:12]}), which "
            f"this machine has as {model.sha256[:12]}: its distances would not compare"
        )
    if "traffic" not in record["objects"]:
        raise UserError(f"this mining run holds no sample of its traffic ({EARLIER}): mine again")
    sample = pl.read_parquet(store.verified_object(record["objects"]["traffic"]["object"]))
    found = drift(sample, training, model, str(store.root / "cache" / "embeddings"))
    return {"manifest": mid, "model": model.name, **found}


def _table(
    failures: pl.DataFrame, key: pl.Expr, name: str, sort_by_key: bool = False
) -> list[dict[str, Any]]:
    """Failures per `key` and reason: one row per key value, a column per reason."""
    if failures.height == 0:
        return []
    counts = (
        failures.group_by(key.alias(name), "reason")
        .len()
        .pivot(on="reason", index=name, values="len")
        .fill_null(0)
    )
    reasons = sorted(c for c in counts.columns if c != name)
    counts = counts.select(name, *reasons).with_columns(
        pl.sum_horizontal(reasons).alias("failures")
    )
    order = (
        counts.sort(name)
        if sort_by_key
        else counts.sort(["failures", name], descending=[True, False])
    )
    return order.to_dicts()
