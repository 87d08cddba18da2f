"""Self-consistency: where one prompt got several answers (a list in one row, or rows that
share a `request_id` — or, without one, the same prompt), how much they disagree.

Each block writes one row per answer: the prompt's group (a hash of its request id, else
of its user turns), a hash of the answer folded (case, spaces, end punctuation) and, for
JSON tasks, whether the answer parsed. The run groups them from disk (polars streams the
files), so groups may span blocks and files without the answers being held in memory.
Disagreement is the entropy of the folded answers, divided by its maximum (1: every answer
different); for JSON tasks it is at least the binary entropy of the share that parsed.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

SEED = 0x6D696E65  # fixed: every block of a run hashes alike


def group_key(request_id: pl.Series, prompts: pl.Series) -> pl.Series:
    """Per row the group its answers join: its request id, else its user turns."""
    by_request = request_id.hash(SEED)
    by_prompt = ("\x00" + prompts.fill_null("")).hash(SEED)
    return (
        pl.select(pl.when(request_id.is_not_null()).then(by_request).otherwise(by_prompt))
        .to_series()
        .alias("group")
    )


def answer_rows(judged: pl.DataFrame) -> pl.DataFrame:
    """One row per answer: group, folded answer's hash, parsed (null: not a JSON task).
    A row's first answer comes folded and parsed by the rules (`folded`, `parsed`); further
    answers of a row are folded and parsed here."""
    from curate.mining.rules import fold

    first = judged.select(
        "group", pl.col("folded").alias("answer"), pl.col("parsed").alias("json_ok")
    )
    more = judged.filter(pl.col("responses").list.len() > 1).select(
        "group", pl.col("responses").list.slice(1), "parsed"
    )
    more = more.explode("responses").with_columns(pl.col("responses").fill_null(""))
    task = more["parsed"].is_not_null().to_numpy()
    parsed: list[bool | None] = [None] * more.height
    texts = more["responses"].filter(task).to_list()
    for i, value in zip(task.nonzero()[0].tolist(), texts, strict=True):
        parsed[i] = _parses(value)  # a few: rows with several answers to a JSON task
    rest = more.select(
        "group",
        fold(pl.col("responses")).alias("answer"),
        pl.Series("json_ok", parsed, dtype=pl.Boolean),
    )
    return pl.concat([first, rest]).select(
        "group", pl.col("answer").str.strip_chars(" .!?").hash(SEED), "json_ok"
    )


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def disagreement(files: list[Path], only: pl.DataFrame) -> pl.DataFrame:
    """Per group of `only` (a `group` column) with several answers: answers, uncertainty
    in [0, 1], JSON validity rate. Answers of other groups are passed over first, so that
    what is held grows with `only`, not with every row of the logs."""
    schema = {"group": pl.UInt64, "answers": pl.UInt32, "u": pl.Float64, "json_valid": pl.Float64}
    if not files:
        return pl.DataFrame(schema=schema)
    wanted = only.lazy().select(pl.col("group").cast(pl.UInt64)).unique()
    rows = pl.scan_parquet([str(f) for f in files]).join(wanted, on="group", how="semi")
    several = rows.group_by("group").agg(pl.len().alias("answers")).filter(pl.col("answers") > 1)
    per = (
        rows.join(several, on="group", how="semi")
        .group_by("group", "answer")
        .agg(
            pl.len().alias("n"),
            pl.col("json_ok").sum().alias("ok"),
            pl.col("json_ok").count().alias("json"),
        )
    )
    share = pl.col("n") / pl.col("n").sum()
    stats = per.group_by("group").agg(
        pl.col("n").sum().alias("answers"),
        (-(share * share.log()).sum() / pl.col("n").sum().cast(pl.Float64).log()).alias("h"),
        pl.when(pl.col("json").sum() > 0)
        .then(pl.col("ok").sum() / pl.col("json").sum())
        .alias("json_valid"),
    )
    rate = pl.col("json_valid")
    binary = -(rate * rate.log() + (1 - rate) * (1 - rate).log()) / pl.lit(2.0).log()
    return (
        stats.with_columns(
            pl.max_horizontal(pl.col("h"), binary.fill_nan(0.0).fill_null(0.0)).round(4).alias("u")
        )
        .select(pl.col(k).cast(t) for k, t in schema.items())
        .collect(engine="streaming")
    )
