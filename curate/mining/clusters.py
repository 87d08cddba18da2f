"""Failure clusters: the candidates' prompts embedded (all-MiniLM-L6-v2 by default, offline)
and grouped, so that a labeler sees kinds of failure, not one failure at a time.

Which candidates: those a run saw (new ones, and earlier ones it counted again), the
`max_candidates` most severe × most frequent of them; embeddings come from the store's cache
(the build's semantic dedup shares it), so a candidate seen last week is not embedded again.
Grouping: average-linkage agglomerative clustering on cosine distance, cut where the mean
cosine between two groups falls below `cosine` — unlike joining every pair above a threshold,
one bridging prompt does not chain two topics into one cluster. Deterministic: the linkage of
scipy is exact and its input is ordered by candidate id.

A cluster is named by its first member (most failures, then smallest id), labeled by its
most distinctive words (class-based TF-IDF: frequent in the cluster, rare in the others),
and sized by the failures its candidates hold.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.mining.rules import SEVERITY

LABEL_TERMS = 3
EMBED_CHUNK = 256
CLUSTER_SCHEMA = {"candidate": pl.String, "cluster": pl.String, "label": pl.String}
# words that say nothing of a topic (English function words, and chat filler)
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    please thanks thank hi hello help want need like get give tell make also one two use using
    let know""".split()  # noqa: SIM905 - a word list, read as prose
)


@dataclass(frozen=True)
class ClusterSettings:
    model: Any  # an EmbeddingModel, or None: clustering is off
    cosine: float  # mean cosine at which two groups are one cluster
    max_candidates: int
    cache_dir: str | None  # the store's embedding cache


def cluster(candidates: pl.DataFrame, settings: ClusterSettings) -> pl.DataFrame:
    """Per clustered candidate its cluster and the cluster's label (CLUSTER_SCHEMA).
    `candidates` holds candidate, prompt, reason and count."""
    from curate.dedup.semantic import EmbeddingCache, embed_cached

    chosen = most_urgent(candidates, settings.max_candidates)
    if chosen.height == 0:
        return pl.DataFrame(schema=CLUSTER_SCHEMA)
    model = settings.model
    cache = (
        EmbeddingCache(Path(settings.cache_dir) / model.sha256[:16], time.time())
        if settings.cache_dir
        else None
    )
    vectors = embed_cached(chosen["prompt"].fill_null(" ").to_arrow(), model, cache, embed_all)
    groups = _agglomerate(vectors, settings.cosine)
    members = chosen.select("candidate", "prompt", "count").with_columns(pl.Series("group", groups))
    # the cluster's name: its member with the most failures (then the smallest id)
    names = (
        members.sort(["count", "candidate"], descending=[True, False])
        .group_by("group", maintain_order=True)
        .agg(pl.col("candidate").first().alias("cluster"))
    )
    labels = _labels(members.join(names, on="group"))
    return (
        members.join(names, on="group")
        .join(labels, on="cluster", how="left")
        .select("candidate", "cluster", pl.col("label").fill_null(""))
        .sort("candidate")
    )


def most_urgent(candidates: pl.DataFrame, n: int) -> pl.DataFrame:
    """The `n` most severe × frequent candidates (then the smallest ids), by id."""
    severity = pl.col("reason").replace_strict(SEVERITY, default=1, return_dtype=pl.Int64)
    return (
        candidates.sort([severity * pl.col("count"), "candidate"], descending=[True, False])
        .head(n)
        .sort("candidate")
    )


def embed_all(texts: list[str], path: str) -> np.ndarray:
    """`semantic.embed` over every core: chunks of texts embedded in the engine's workers,
    one thread each as builds do (so the vectors do not depend on the number of cores)."""
    from curate.dedup.semantic import embed
    from curate.engines.local import LocalEngine
    from curate.progress import Progress

    if len(texts) <= EMBED_CHUNK:
        return embed(texts, path)
    chunks = [(texts[i : i + EMBED_CHUNK], path) for i in range(0, len(texts), EMBED_CHUNK)]
    with LocalEngine(None, Progress(enabled=False), pool_only=True) as engine:  # no model here
        return np.concatenate(engine.map(embed, chunks, "embed"))


def _agglomerate(vectors: np.ndarray, cosine: float) -> np.ndarray:
    """Average-linkage cluster numbers, cut at mean cosine `cosine`."""
    n = len(vectors)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    # rounded like semantic dedup's cosines: float noise between runs cannot move a cut
    distance = np.clip(np.round(pdist(vectors.astype(np.float64), "cosine"), 6), 0, 2)
    tree = linkage(distance, method="average")
    return fcluster(tree, t=1.0 - cosine, criterion="distance").astype(np.int64)


def _labels(members: pl.DataFrame) -> pl.DataFrame:
    """Per cluster its LABEL_TERMS most distinctive words: class-based TF-IDF, a word's
    share of the cluster's words × log(1 + mean words per cluster / its count overall)."""
    words = (
        members.select(
            "cluster",
            pl.col("prompt")
            .fill_null("")
            .str.to_lowercase()
            .str.extract_all(r"[a-z][a-z0-9]*(?:'[a-z]+)?"),
        )
        .explode("prompt")
        .rename({"prompt": "word"})
        .filter(
            pl.col("word").is_not_null()
            & (pl.col("word").str.len_chars() > 2)
            & ~pl.col("word").is_in(list(STOPWORDS))
        )
    )
    if words.height == 0:
        return pl.DataFrame(schema={"cluster": pl.String, "label": pl.String})
    per = words.group_by("cluster", "word").len("tf")
    clusters = per["cluster"].n_unique()
    mean_words = words.height / clusters
    overall = per.group_by("word").agg(pl.col("tf").sum().alias("all"))
    scored = per.join(overall, on="word").with_columns(
        (
            pl.col("tf")
            / pl.col("tf").sum().over("cluster")
            * (1 + mean_words / pl.col("all")).log()
        ).alias("score")
    )
    return (
        scored.sort(["cluster", "score", "word"], descending=[False, True, False])
        .group_by("cluster", maintain_order=True)
        .agg(pl.col("word").head(LABEL_TERMS).str.join(" / ").alias("label"))
    )


def summaries(
    clusters: pl.DataFrame, failures: pl.DataFrame, index: pl.DataFrame
) -> list[dict[str, Any]]:
    """Per cluster, largest first: its label, candidates, failures (this run's and over
    every run), reasons, models and failures per ISO week with the trend between the last
    two weeks it was seen in."""
    if clusters.height == 0:
        return []
    from curate.mining.traffic import week_of

    mine = failures.filter(pl.col("candidate").is_not_null()).join(
        clusters.select("candidate", "cluster"), on="candidate"
    )
    totals = (
        clusters.join(index.select("candidate", "count"), on="candidate")
        .group_by("cluster")
        .agg(pl.len().alias("candidates"), pl.col("count").sum().alias("failures_all_runs"))
    )
    weekly = mine.with_columns(week_of(pl.col("timestamp")).alias("week"))
    out = []
    by = {c: g for (c,), g in weekly.group_by("cluster")}
    labels = dict(clusters.select("cluster", "label").unique().iter_rows())
    for row in totals.iter_rows(named=True):
        rows = by.get(row["cluster"], pl.DataFrame(schema=weekly.schema))
        weeks = _counts(rows, "week")
        out.append(
            {
                "cluster": row["cluster"],
                "label": labels.get(row["cluster"], ""),
                "candidates": row["candidates"],
                "failures": rows.height,
                "failures_all_runs": row["failures_all_runs"],
                "reasons": _counts(rows, "reason"),
                "models": _counts(rows, "model"),
                "weeks": weeks,
                "trend": _trend(weeks),
            }
        )
    return sorted(out, key=lambda c: (-c["failures"], -c["failures_all_runs"], c["cluster"]))


def _counts(rows: pl.DataFrame, column: str) -> dict[str, int]:
    counts = rows.group_by(pl.col(column).fill_null("(none)")).len()
    return {k: int(v) for k, v in sorted(counts.iter_rows())}


def _trend(weeks: dict[str, int]) -> str | None:
    """'rising' / 'falling' / 'steady' from the last two weeks (a change under a quarter,
    or under 3 failures, is steady); None with fewer than two dated weeks."""
    dated = [w for w in sorted(weeks) if w != "(none)"]
    if len(dated) < 2:
        return None
    before, last = weeks[dated[-2]], weeks[dated[-1]]
    if abs(last - before) < max(3, math.ceil(0.25 * before)):
        return "steady"
    return "rising" if last > before else "falling"
