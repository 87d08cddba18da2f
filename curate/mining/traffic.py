"""Traffic over time: how many rows and failures each ISO week and model version brought,
and a bounded sample of each week's prompts — what `mine report --against` compares with a
training manifest to show when production traffic moves away from what a model was tuned on.

Each block keeps, per week, the SAMPLE_PER_WEEK rows with the smallest log ids (log ids are
sha256 digests: a uniform, deterministic sample); the run keeps the smallest of those, so the
sample does not depend on how the logs were split into blocks, and memory stays bounded by
weeks × SAMPLE_PER_WEEK whatever the logs' size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

SAMPLE_PER_WEEK = 256
TRAIN_SAMPLE = 1024
NO_WEEK = "(none)"


def week_of(timestamp: pl.Expr) -> pl.Expr:
    """ISO week ("2026-W47") of an ISO-8601 timestamp or date, or of Unix seconds (a
    chat completion's `created`); null when it is none of those."""
    epoch = (
        pl.when(timestamp.str.contains(r"^\d{9,10}(\.\d+)?$"))
        .then((timestamp.cast(pl.Float64, strict=False) * 1e6).cast(pl.Int64))
        .cast(pl.Datetime("us", "UTC"))
    )
    parsed = pl.coalesce(
        epoch,
        timestamp.str.to_datetime(strict=False, time_zone="UTC"),
        timestamp.str.slice(0, 10).str.to_date(strict=False).cast(pl.Datetime("us", "UTC")),
    )
    return parsed.dt.strftime("%G-W%V")


def block_traffic(judged: pl.DataFrame, prompts: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows, failures and prompt characters per week and model; the week's sample)."""
    frame = judged.select(
        week_of(pl.col("timestamp")).fill_null(NO_WEEK).alias("week"),
        pl.col("model").fill_null(NO_WEEK).alias("model"),
        pl.col("reason").is_not_null().alias("failed"),
        "log_id",
        pl.Series("prompt", prompts),
    ).with_columns(pl.col("prompt").str.len_chars().alias("chars"))
    stats = frame.group_by("week", "model").agg(
        pl.len().alias("rows"),
        pl.col("failed").sum().cast(pl.Int64).alias("failures"),
        pl.col("chars").sum().cast(pl.Int64).alias("chars"),
    )
    return stats, _smallest(frame.select("week", "log_id", "prompt", "chars"))


def _smallest(sample: pl.DataFrame) -> pl.DataFrame:
    return sample.sort("week", "log_id").group_by("week", maintain_order=True).head(SAMPLE_PER_WEEK)


def merge(
    stats: list[pl.DataFrame], samples: list[pl.DataFrame]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The blocks' week counts summed, and their samples cut to the run's."""
    if not stats:
        return pl.DataFrame(), pl.DataFrame()
    total = (
        pl.concat(stats)
        .group_by("week", "model")
        .agg(pl.col("rows", "failures", "chars").sum())
        .sort("week", "model")
    )
    return total, _smallest(pl.concat(samples))


def by_week(stats: pl.DataFrame) -> list[dict[str, Any]]:
    """Per week: rows, failures, failure rate, mean prompt characters, and per model."""
    if stats.height == 0:
        return []
    out = []
    for (week,), rows in stats.group_by("week", maintain_order=True):
        n = int(rows["rows"].sum())
        failures = int(rows["failures"].sum())
        out.append(
            {
                "week": week,
                "rows": n,
                "failures": failures,
                "failure_rate": round(failures / n, 4) if n else 0.0,
                "mean_prompt_chars": round(int(rows["chars"].sum()) / n, 1) if n else 0.0,
                "models": {
                    m: {"rows": int(r), "failures": int(f)}
                    for m, r, f in rows.select("model", "rows", "failures").iter_rows()
                },
            }
        )
    return out


def drift(
    sample: pl.DataFrame, training: list[str], model: Any, cache_dir: str | None
) -> dict[str, Any]:
    """Per week of production prompts against the training rows' prompts: median length
    and the cosine distance between the two embedding centroids; `noise` is the distance
    between two halves of the training sample, the floor a week's distance is read against."""
    import time

    import pyarrow as pa

    from curate.dedup.semantic import EmbeddingCache, embed_cached
    from curate.mining.clusters import embed_all

    cache = EmbeddingCache(Path(cache_dir) / model.sha256[:16], time.time()) if cache_dir else None
    # one embedding pass over both sides (over every core); the weeks are rows of it
    texts = [*(training or [" "]), *sample["prompt"].fill_null(" ").to_list()]
    vectors = embed_cached(pa.array(texts, pa.string()), model, cache, embed_all)
    trained, produced = vectors[: len(training or [" "])], vectors[len(training or [" "]) :]
    centroid = trained.mean(axis=0)
    half = len(trained) // 2
    noise = _distance(trained[:half].mean(axis=0), trained[half:].mean(axis=0)) if half else None
    lengths = np.array([len(t) for t in training]) if training else np.zeros(1)
    weeks = []
    weekly = sample.with_row_index("at").group_by("week", maintain_order=True)
    for (week,), rows in weekly:
        mine = produced[rows["at"].to_numpy()]
        weeks.append(
            {
                "week": week,
                "sampled": rows.height,
                "median_prompt_chars": float(rows["chars"].cast(pl.Float64).median() or 0.0),  # type: ignore[arg-type]
                "centroid_distance": _distance(mine.mean(axis=0), centroid),
            }
        )
    return {
        "training_rows_sampled": len(training),
        "training_median_prompt_chars": float(np.median(lengths)),
        "noise": noise,
        "weeks": sorted(weeks, key=lambda w: w["week"]),
    }


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
    return round(1.0 - cos, 4)


def training_prompts(paths: list[Path], limit: int = TRAIN_SAMPLE) -> list[str]:
    """The user turns of up to `limit` training rows (those with the smallest ids: a
    uniform, deterministic sample), one text per row."""
    from curate.mining.candidates import prompt_text

    if not paths:
        return []
    # the smallest ids found while scanning: a large training set is not read into memory
    scan = pl.scan_parquet([str(p) for p in paths]).select("id", "messages")
    rows = scan.sort("id").head(limit).collect()
    return [t for t in prompt_text(rows).to_list() if t.strip()]
