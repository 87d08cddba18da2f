"""Clusters of duplicate rows and the row each keeps (shared by near and semantic dedup)."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curate.steps import Verdicts


def clusters(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected components (union-find) of n nodes joined by `edges`: a label per node."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n)
    )
    return connected_components(graph, directed=False)[1]


def cluster_ids(keys: pa.Table, n: int, edges: np.ndarray) -> pa.Array:
    """Per row, the id of the first row (canonical order) of its connected component."""
    label = clusters(n, edges) if len(edges) else np.arange(n)
    return keys.column("id").combine_chunks().take(pa.array(first_rows(label)))


def first_rows(label: np.ndarray) -> np.ndarray:
    """Per row, the index of the first row with its label."""
    n = len(label)
    first = np.full(int(label.max()) + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, label, np.arange(n))
    return first[label]


def keepers(
    label: np.ndarray, source_rank: np.ndarray, answer_chars: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(dropped rows, the kept row of each one's cluster) for clusters of two or more.

    One row per cluster is kept: the earliest source, then the longer answer, then input
    order. Dropped rows come in cluster order, then by the same ranking.
    """
    frame = pl.DataFrame(
        {
            "pos": np.arange(len(label)),
            "label": label,
            "rank": source_rank,
            "answer": answer_chars,
        }
    )
    sizes = frame.group_by("label").len()
    frame = frame.join(sizes.filter(pl.col("len") > 1), on="label", how="semi")
    ordered = frame.sort(["label", "rank", "answer", "pos"], descending=[False, False, True, False])
    keeper = (
        ordered.group_by("label", maintain_order=True)
        .first()
        .select("label", pl.col("pos").alias("keeper"))
    )
    dropped = ordered.join(keeper, on="label").filter(pl.col("pos") != pl.col("keeper"))
    return dropped["pos"].to_numpy(), dropped["keeper"].to_numpy()


def duplicate_verdicts(
    keys: pa.Table,
    label: np.ndarray,
    reason: str,
    measure: str,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Verdicts:
    """Reject all but the kept row of each cluster, with `duplicate_of`, `cluster` and the
    similarity to the kept row (`measure`: `score(dropped rows, kept rows)`, 4 decimals)."""
    rows, kept = keepers(
        label, keys.column("source_rank").to_numpy(), keys.column("answer_chars").to_numpy()
    )
    values = np.round(np.asarray(score(rows, kept), dtype=np.float64), 4)
    kept_ids = keys.column("id").combine_chunks().take(pa.array(kept))
    return Verdicts.reject(len(label), rows, reason, _details(kept_ids, measure, values))


def _details(kept_ids: pa.Array, measure: str, values: np.ndarray) -> pa.Array:
    """`{"cluster": id, "duplicate_of": id, measure: value}` as `json.dumps(...,
    sort_keys=True)` writes it, built column-wise (ids that JSON would escape go through
    `json.dumps`)."""
    plain = pc.all(pc.match_substring_regex(kept_ids, r"^[\x20-\x7e]*$")).as_py() is not False
    plain = plain and not pc.any(pc.match_substring_regex(kept_ids, r'["\\]')).as_py()
    if not plain:
        return pa.array(
            [
                json.dumps({"duplicate_of": k, "cluster": k, measure: v}, sort_keys=True)
                for k, v in zip(kept_ids.to_pylist(), values.tolist(), strict=True)
            ],
            pa.string(),
        )
    ident = pl.Series(kept_ids)
    fields = {
        "cluster": ('"', ident, '"'),
        "duplicate_of": ('"', ident, '"'),
        measure: (pl.Series(values).cast(pl.String),),
    }
    parts: list[pl.Expr] = []
    for i, name in enumerate(sorted(fields)):
        parts.append(pl.lit(("{" if i == 0 else ", ") + f'"{name}": '))
        parts += [pl.lit(p) for p in fields[name]]
    parts.append(pl.lit("}"))
    return pl.select(pl.concat_str(parts)).to_series().to_arrow().cast(pa.string())
