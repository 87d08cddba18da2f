"""Failures collapsed into candidates for labelers, across mining runs.

The prompts of a run's failures are deduplicated, exactly and by MinHash, with the build
core's own steps through its public runner (`runner.run_steps`), together with the prompts
of every candidate earlier runs found (the store's candidate index, read first so that they
are the ones kept): a failure seen last week adds to that candidate's count and is not
queued again; failures of this run that repeat one another become one new candidate with a
count. The new index (earlier candidates with their counts, then the new ones in the order
their failures came) is stored as an object; the store's `runs/mining-index` names the latest.

What the run holds per failure is a few integers and short strings: prompts go to the
dedup steps as files, candidates are rows of the runner's index (positions, not ids), and
the index's text is written from the failures' files (`parts.put_ordered`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from curate.errors import UserError
from curate.manifests.store import Store
from curate.mining.parts import TEXT
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
SLIM_INDEX = {k: v for k, v in INDEX_SCHEMA.items() if k not in TEXT}
CLUSTER_COLUMNS = {"candidate": pl.String, "cluster": pl.String, "label": pl.String}


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


def latest_index(store: Store, fresh: bool = False) -> tuple[str | None, pl.DataFrame]:
    """The latest candidate index: its object id, and its rows without their text
    (SLIM_INDEX: the text stays in the object, read a row group at a time); `fresh`: none."""
    sha = None if fresh else store.read_pointer(INDEX_POINTER)
    if not sha:  # none yet, or every run forgotten
        return None, pl.DataFrame(schema=SLIM_INDEX)
    return sha, pl.read_parquet(store.verified_object(sha), columns=list(SLIM_INDEX))


def collapse(
    failures: pl.DataFrame,
    known: pl.DataFrame,
    threshold: float,
    work: Path,
    texts: tuple[Path | None, list[Path]],
    contamination: Step | None = None,
) -> tuple[pl.DataFrame, pl.Series, pl.DataFrame]:
    """The new index without its text (the known candidates with this run's counts added,
    then the new ones, each with `at`, and `new`), per failure the candidate it belongs to
    (null: its prompt overlaps an eval set), and the rows `contamination` (the build's
    step, over the eval sets) rejected: their detail. `failures` is the slim frame
    (`parts.slim`); `texts` holds the prompts: the known index's object (None without
    one) and the failures' part files."""
    from curate.dedup.exact import ExactDedup
    from curate.dedup.minhash import NearDedup
    from curate.engines.local import LocalEngine
    from curate.progress import Progress
    from curate.runner import ReadStep, run_steps
    from curate.sources import plan_blocks, scan_file

    if failures.height == 0:  # nothing new to collapse, nothing to check
        none = pl.DataFrame(schema={"detail": pl.String})
        index = known.with_columns(pl.lit(None, pl.UInt32).alias("at"), pl.lit(False).alias("new"))
        return index, pl.Series("candidate", [], pl.String), none
    tasks, ranks = [], []
    for rank, (name, prompts) in enumerate(_prompts(texts, work)):
        if prompts is not None and prompts.stat().st_size:
            found, _ = plan_blocks(name, "text", [prompts.name], [scan_file(str(prompts))])
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
        )
    # the index is in canonical order: the known candidates' rows, then the failures'
    assert run.index.height == known.height + failures.height, "a prompt went missing"
    owner = _owners(run.index)
    names = pl.concat([known["candidate"], failures["log_id"]])
    mine = pl.Series("owner", owner[known.height :]).replace(-1, None)
    member = names.gather(mine).alias("candidate")
    leaked = run.index.filter(pl.col("reason") == "contaminated")
    kept = known.with_columns(pl.Series("gone", owner[: known.height] < 0))
    index = _new_index(failures, kept, mine, names)
    return index, member, leaked.select("detail")


def _prompts(texts: tuple[Path | None, list[Path]], work: Path) -> list[tuple[str, Path | None]]:
    """The known candidates' and the failures' prompts as JSONL for the build's reader,
    written a file at a time from their Parquet files."""
    known, parts = texts
    out: list[tuple[str, Path | None]] = []
    for name, files in (("known", [known] if known else []), ("new", parts)):
        if not files:
            out.append((name, None))
            continue
        path = work / f"{name}.jsonl"
        with open(path, "wb") as fh:
            for file in files:
                pl.read_parquet(file, columns=["prompt"]).select(
                    # an empty prompt is one space: the reader refuses a row without text
                    pl.col("prompt").fill_null("").replace("", " ").alias("text"),
                ).write_ndjson(fh)
        out.append((name, path))
    return out


def _owners(index: pl.DataFrame) -> np.ndarray:
    """Per row of the runner's index, the row it collapses onto (itself when it was kept;
    -1 where it leaked from an eval set). A twin can itself be a later row's duplicate
    (exact first, then near): links are followed until none moves. Rows are positions,
    not ids: what this holds does not grow with the ids' length."""
    n = index.height
    owner = np.arange(n, dtype=np.int64)
    twins = (
        index.select(pl.int_range(n).alias("row"), "reason", "detail")
        .filter(pl.col("reason").is_in(["exact_duplicate", "near_duplicate"]))
        .select("row", pl.col("detail").str.json_path_match("$.duplicate_of").alias("id"))
    )
    if twins.height:
        rows = index.select(pl.int_range(n).alias("to"), "id")
        links = twins.join(rows, on="id", how="inner")
        owner[links["row"].to_numpy()] = links["to"].to_numpy()
        for _ in range(64):
            after = owner[owner]
            if np.array_equal(after, owner):
                break
            owner = after
    owner[(index["reason"] == "contaminated").fill_null(False).to_numpy()] = -1
    return owner


def _new_index(
    failures: pl.DataFrame, known: pl.DataFrame, owner: pl.Series, names: pl.Series
) -> pl.DataFrame:
    """Known candidates with this run's counts added (less those `gone`: they leaked
    from an eval set), then the new ones, in the order their failures came: each new one
    is its most severe failure (then the first). Without text (SLIM_INDEX), with `at`
    (where the new ones' text is) and `new`. `owner`: per failure, the row of the
    runner's index it collapsed onto (known candidates first), whose id `names` holds."""
    severity = pl.col("reason").replace_strict(SEVERITY, default=0, return_dtype=pl.Int64)
    # chosen on three integer columns; the chosen failures' columns are then gathered
    seen = (
        failures.select(owner, "at", severity.alias("severity"))
        .filter(pl.col("owner").is_not_null())
        .sort(["severity", "at"], descending=[True, False])
        .group_by("owner", maintain_order=True)
        .agg(pl.len().alias("new_count"), pl.col("at").first())
    )
    old = (
        known.with_row_index("owner")
        .with_columns(pl.col("owner").cast(owner.dtype))
        .join(seen.select("owner", "new_count"), on="owner", how="left", maintain_order="left")
        .filter(~pl.col("gone"))
        .with_columns(
            (pl.col("count") + pl.col("new_count").fill_null(0)).alias("count"),
            (pl.col("runs") + pl.col("new_count").is_not_null().cast(pl.Int64)).alias("runs"),
            pl.lit(None, pl.UInt32).alias("at"),
            pl.lit(False).alias("new"),
        )
    )
    fresh = seen.filter(pl.col("owner") >= known.height).sort("at")
    chosen = failures.select("reason", "origin", "request_id", "model")[fresh["at"]]
    fresh = fresh.hstack(chosen).with_columns(
        names.gather(fresh["owner"]).alias("candidate"),
        pl.col("new_count").alias("count"),
        pl.lit(1, pl.Int64).alias("runs"),
        pl.lit(True).alias("new"),
    )
    schema: dict[str, Any] = {**SLIM_INDEX, "at": pl.UInt32, "new": pl.Boolean}
    both = [old.select(list(schema)), fresh.select(list(schema))]
    return pl.concat(both, how="vertical_relaxed").cast(schema)  # type: ignore[arg-type]


def put_index(
    index: pl.DataFrame, known: Path | None, parts: list[Path], store: Store, scratch: Path
) -> dict[str, Any]:
    """The new candidate index as an object (INDEX_SCHEMA): the known candidates with
    their text from the earlier index's object, a row group at a time, then the new ones
    with their failures' text."""
    from curate.mining.parts import ORDER_CHUNK, put_ordered

    old = index.filter(~pl.col("new")).drop("at", "new")

    def head() -> Iterator[pl.DataFrame]:
        if known is None:
            return
        for batch in pq.ParquetFile(known).iter_batches(ORDER_CHUNK, columns=["candidate", *TEXT]):
            text = pl.from_arrow(batch)
            assert isinstance(text, pl.DataFrame)
            # a known candidate that leaked from an eval set since is not in `old`
            yield text.join(old, on="candidate", how="inner", maintain_order="left")

    return put_ordered(index.filter(pl.col("new")), parts, store, scratch, INDEX_SCHEMA, head())


def queue(
    index: pl.DataFrame, failures: pl.DataFrame, clustered: pl.DataFrame | None
) -> tuple[pl.DataFrame, np.ndarray]:
    """The new candidates with what queueing adds (cluster, label, cluster_size, u,
    json_valid, answers, priority), and the order to take them in, most urgent first:
    priority = severity × cluster size (the failures its cluster holds, over every run;
    its own count when not clustered) × (1 + uncertainty), taken in turns across clusters
    (across reasons when clustering is off) so that one large kind of failure does not
    fill the head of the queue. The order is computed on a few columns and returned as
    positions: the candidates are not copied into it."""
    if clustered is None:
        clustered = pl.DataFrame(schema=CLUSTER_COLUMNS)
    first = index.height - int(index["new"].sum())
    fresh = index.slice(first)  # the new candidates come last in the index
    assert fresh["new"].all(), "new candidates must close the index"
    doubt = (
        failures.filter(pl.col("candidate").is_not_null() & pl.col("answers").is_not_null())
        .group_by("candidate")
        .agg(pl.col("u").max(), pl.col("json_valid").min(), pl.col("answers").max())
    )
    sizes = (
        index.select("candidate", "count")
        .join(clustered, on="candidate")
        .group_by("cluster")
        .agg(pl.col("count").sum().alias("cluster_size"))
    )
    added = (
        fresh.select("candidate", "count")
        .join(clustered, on="candidate", how="left", maintain_order="left")
        .join(sizes, on="cluster", how="left", maintain_order="left")
        .join(doubt, on="candidate", how="left", maintain_order="left")
        .select(
            "cluster",
            "label",
            pl.coalesce("cluster_size", "count").alias("cluster_size"),
            pl.col("u").fill_null(0.0),
            "json_valid",
            "answers",
        )
    )
    severity = fresh["reason"].replace_strict(SEVERITY, default=1, return_dtype=pl.Float64)
    added = added.with_columns(
        (severity * added["cluster_size"] * (1 + added["u"])).round(4).alias("priority")
    )
    # unclustered: each candidate its own turn key (clustering off: its reason)
    turns = pl.coalesce("cluster", "candidate" if clustered.height else "reason")
    ranked = (
        pl.DataFrame([fresh["candidate"], fresh["reason"], added["cluster"], added["priority"]])
        .with_row_index("i")
        .sort(["priority", "candidate"], descending=[True, False])
        .with_columns(turns.alias("turns"))
    )
    ranked = ranked.with_columns(pl.int_range(pl.len()).over("turns").alias("turn"))
    order = ranked.sort(["turn", "priority", "candidate"], descending=[False, True, False])
    return fresh.hstack(added), order["i"].to_numpy()


def forget(store: Store, run_id: str) -> dict[str, Any]:
    """Take a mining run's candidates out of the index: the index goes back to the one the
    run started from. Only the latest run can be forgotten (later runs counted failures on
    its candidates): newest first. The run's record and objects stay, as history."""
    record = store.read_record("mining", run_id)
    made = record["objects"]["candidates"]["object"]
    with store.lock("mining", exclusive=True):
        current = store.read_pointer(INDEX_POINTER)
        if current != made:
            raise UserError(
                f"mining run {run_id[:12]} is not the latest to index candidates: runs after "
                "it counted failures on its candidates. Forget those first, newest first, or "
                "mine again with --fresh (an index of that run's candidates alone)"
            )
        previous = record["candidates"]["previous_index"]
        store.write_pointer(INDEX_POINTER, previous or "")
    return {
        "mining_run": run_id,
        "forgotten": int(record["candidates"]["new"]),
        "index": previous,
    }
