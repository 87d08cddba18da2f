"""Failures collapsed into candidates for labelers, across mining runs.

The prompts of a run's failures are deduplicated, exactly and by MinHash, with the build
core's own steps through its public runner (`runner.run_steps`), together with the prompts
of every candidate earlier runs found (the store's candidate index, read first so that they
are the ones kept): a failure seen last week adds to that candidate's count and is not
queued again; failures of this run that repeat one another become one new candidate with a
count. The new index (earlier candidates with their counts, then the new ones) is stored as
an object; the store's `runs/mining-index` names the latest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from curate.manifests.store import Store
from curate.mining.rules import SEVERITY
from curate.steps import Step

INDEX_POINTER = "mining-index"
INDEX_SCHEMA = {
    "candidate": pl.String,  # the log id of the failure that first showed it
    "prompt": pl.String,
    "messages": pl.String,  # the prompt's turns, JSON (system and earlier turns kept)
    "response": pl.String,
    "reason": pl.String,
    "count": pl.Int64,  # failures seen, over every run
    "runs": pl.Int64,  # mining runs that saw it
    "origin": pl.String,  # path:line of the first failure
    "request_id": pl.String,
    "model": pl.String,
}


def prompt_text(failures: pl.DataFrame) -> pl.Series:
    """The user turns of each failure's prompt, one text (what labelers answer)."""
    return (
        failures["messages"]
        .list.eval(
            pl.element().struct.field("content").filter(pl.element().struct.field("role") == "user")
        )
        .list.join("\n")
        .fill_null("")
    )


def latest_index(store: Store) -> tuple[str | None, pl.DataFrame]:
    """The latest candidate index (its object id, its rows); empty without one."""
    pointer = store.root / "runs" / INDEX_POINTER
    if not pointer.is_file():
        return None, pl.DataFrame(schema=INDEX_SCHEMA)
    sha = pointer.read_text().strip()
    frame = pl.read_parquet(store.verified_object(sha))
    return sha, frame


def collapse(
    failures: pl.DataFrame,
    known: pl.DataFrame,
    threshold: float,
    work: Path,
    fetch: Callable[[pl.Series], pl.DataFrame],
    contamination: Step | None = None,
) -> tuple[pl.DataFrame, pl.Series, pl.DataFrame]:
    """The new index (known candidates with this run's counts added, then the new ones),
    per failure the candidate it belongs to (null: its prompt overlaps an eval set), and
    the rows `contamination` (the build's step, over the eval sets) rejected: key, detail.
    `failures` is the slim frame (`parts.slim`); `fetch` reads turns and answers by `at`."""
    from curate.dedup.exact import ExactDedup
    from curate.dedup.minhash import NearDedup
    from curate.engines.local import LocalEngine
    from curate.progress import Progress
    from curate.runner import ReadStep, run_steps
    from curate.sources import plan_blocks, scan_file

    texts = failures["prompt"] if failures.height else pl.Series("prompt", [], pl.String)
    if failures.height == 0:  # nothing new to collapse, nothing to check
        none = pl.DataFrame(schema={"key": pl.String, "detail": pl.String})
        return known, pl.Series("candidate", [], pl.String), none
    files = []
    for name, keys, values in (
        ("known", "k:" + known["candidate"], known["prompt"]),
        ("new", "f:" + failures["log_id"], texts),
    ):
        path = work / f"{name}.jsonl"
        rows = pl.DataFrame(
            {"text": values, "key": keys}, schema={"text": pl.String, "key": pl.String}
        )
        # an empty prompt is one space: the reader refuses a row without text
        rows.with_columns(pl.col("text").fill_null("").replace("", " ")).write_ndjson(path)
        files.append(path)
    tasks, ranks = [], []
    for rank, (name, path) in enumerate(zip(("known", "new"), files, strict=True)):
        if path.stat().st_size:
            found, _ = plan_blocks(name, "text", [path.name], [scan_file(str(path))])
            tasks += found
            ranks += [rank] * len(found)
    with LocalEngine(1, Progress(enabled=False)) as engine:
        run = run_steps(
            engine,
            ReadStep({"known": "text", "new": "text"}),
            [
                *([contamination] if contamination is not None else []),
                ExactDedup(),
                NearDedup(threshold),
            ],
            tasks,
            [str(work / f"block-{i}.arrow") for i in range(len(tasks))],
            ranks,
            ["known", "new"],
            work,
            meta_fields={"key": "key"},
        )
    owner = _owners(run.index)
    member = pl.Series("key", ("f:" + failures["log_id"]).to_list()).replace_strict(
        owner, default=None
    )
    leaked = run.index.filter(pl.col("reason") == "contaminated").select("key", "detail")
    kept = known.filter(~("k:" + pl.col("candidate")).is_in(leaked["key"].to_list()))
    return _new_index(failures, kept, member, fetch), member.str.slice(2), leaked


def _owners(index: pl.DataFrame) -> dict[str, str]:
    """Per row key, the key of the row it collapses onto (itself when it was kept); rows
    that leaked from an eval set have none. A twin can itself be a later row's duplicate
    (exact first, then near): links are followed by joins until none moves."""
    links = index.select(
        "key",
        "id",
        "reason",
        pl.when(pl.col("reason").is_in(["exact_duplicate", "near_duplicate"]))
        .then(pl.col("detail").str.json_path_match("$.duplicate_of"))
        .alias("of"),
    )
    by_id = links.select(pl.col("id").alias("of"), pl.col("key").alias("of_key"))
    links = links.join(by_id, on="of", how="left").with_columns(
        pl.coalesce("of_key", "key").alias("owner")
    )
    for _ in range(32):
        step = links.join(
            links.select(pl.col("key").alias("owner"), pl.col("owner").alias("next")),
            on="owner",
            how="left",
        )
        if step.filter(pl.col("next") != pl.col("owner")).height == 0:
            break
        links = step.with_columns(pl.col("next").alias("owner")).drop("next")
    kept = links.filter(pl.col("reason").fill_null("") != "contaminated")
    return dict(zip(kept["key"].to_list(), kept["owner"].to_list(), strict=True))


def _new_index(
    failures: pl.DataFrame,
    known: pl.DataFrame,
    member: pl.Series,
    fetch: Callable[[pl.Series], pl.DataFrame],
) -> pl.DataFrame:
    """Known candidates with this run's counts added, then the new ones: each new one is
    its most severe failure (then the first), whose turns and answer `fetch` reads."""
    severity = pl.col("reason").replace_strict(SEVERITY, default=0, return_dtype=pl.Int64)
    rows = failures.select(
        pl.Series("owner", member), "at", "prompt", "reason", "origin", "request_id", "model"
    )
    seen = (
        rows.filter(pl.col("owner").is_not_null())
        .sort([severity, "at"], descending=[True, False])
        .group_by("owner", maintain_order=True)
        .agg(pl.len().alias("new_count"), pl.all().first())
    )
    old = (
        known.with_columns(("k:" + pl.col("candidate")).alias("owner"))
        .join(seen.select("owner", "new_count"), on="owner", how="left")
        .with_columns(
            (pl.col("count") + pl.col("new_count").fill_null(0)).alias("count"),
            (pl.col("runs") + pl.col("new_count").is_not_null().cast(pl.Int64)).alias("runs"),
        )
    )
    fresh = seen.filter(pl.col("owner").str.starts_with("f:"))
    fresh = fresh.join(fetch(fresh["at"]), on="at", how="left").with_columns(
        pl.col("owner").str.slice(2).alias("candidate"),
        pl.col("new_count").alias("count"),
        pl.lit(1, pl.Int64).alias("runs"),
    )
    columns = list(INDEX_SCHEMA)
    return pl.concat(
        [old.select(columns), fresh.sort("origin").select(columns)], how="vertical_relaxed"
    ).cast(INDEX_SCHEMA)  # type: ignore[arg-type]


def queue(
    index: pl.DataFrame, new: set[str], failures: pl.DataFrame, clustered: pl.DataFrame | None
) -> pl.DataFrame:
    """The new candidates, most urgent first: priority = severity × cluster size (the
    failures its cluster holds, over every run; its own count when not clustered) ×
    (1 + uncertainty), taken in turns across clusters (across reasons when clustering is
    off) so that one large kind of failure does not fill the head of the queue."""
    doubt = (
        failures.filter(pl.col("candidate").is_not_null())
        .group_by("candidate")
        .agg(pl.col("u").max(), pl.col("json_valid").min(), pl.col("answers").max())
    )
    if clustered is None:
        clustered = pl.DataFrame(
            schema={"candidate": pl.String, "cluster": pl.String, "label": pl.String}
        )
    items = (
        index.join(clustered, on="candidate", how="left")
        .with_columns(
            pl.when(pl.col("cluster").is_not_null())  # over() would pool the unclustered
            .then(pl.col("count").sum().over("cluster"))
            .otherwise(pl.col("count"))
            .alias("cluster_size")
        )
        .filter(pl.col("candidate").is_in(list(new)))
        .join(doubt, on="candidate", how="left")
        .with_columns(
            pl.col("reason")
            .replace_strict(SEVERITY, default=1, return_dtype=pl.Float64)
            .alias("s"),
            pl.col("u").fill_null(0.0),
            # unclustered: each candidate its own turn key (clustering off: its reason)
            pl.coalesce("cluster", "candidate" if clustered.height else "reason").alias("turns"),
        )
    )
    items = items.with_columns(
        (pl.col("s") * pl.col("cluster_size") * (1 + pl.col("u"))).round(4).alias("priority")
    ).sort(["priority", "candidate"], descending=[True, False])
    turns = items.with_columns(pl.int_range(pl.len()).over("turns").alias("turn"))
    ordered = turns.sort(["turn", "priority", "candidate"], descending=[False, True, False])
    return ordered.drop("s", "turn", "turns")
