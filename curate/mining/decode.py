"""The common case of `logs.read_block` in one pass: flat rows with a text `prompt` and a
text `response` and signals at the top level, decoded by polars' JSON reader for a whole
block at once instead of `json.loads` and `normalize` per row.

A line takes this path only when its result must be what `logs.normalize` gives: no chat
turns, several answers, proxy shape, tags or metadata (the JSON text of tags is written by
Python), no `true` / `false` (polars would read them as text or numbers where Python
refuses them), and `prompt` and `response` written as strings. A decoded row whose signals
would be refused (an unknown feedback, a score outside [0, 1]) goes back to the Python path
too, which names the problem. Everything else is read by `logs.read_block` row by row.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from curate.hashing import sha256_hex
from curate.mining.logs import FEEDBACK, LOG_SCHEMA

FLAT = pl.Struct(
    {
        "prompt": pl.String,
        "response": pl.String,
        "request_id": pl.String,
        "id": pl.String,
        "user_feedback": pl.String,
        "feedback": pl.String,
        "automated_score": pl.Float64,
        "score": pl.Float64,
        "expected_format": pl.String,
        "finish_reason": pl.String,
        "adapter": pl.String,
        "model": pl.String,
        "timestamp": pl.String,
        "created_at": pl.String,
        "created": pl.String,
        "latency_ms": pl.Float64,
        "latency": pl.Float64,
    }
)
OTHER_SHAPES = ['"input"', '"messages"', '"responses"', '"completion"', '"tags"', '"metadata"']


def eligible(lines: pl.Series) -> pl.Series:
    """Lines the one-pass decode reads exactly as `normalize` would."""
    return (
        lines.str.contains(r"^\s*\{")
        & lines.str.contains(r'"prompt"\s*:\s*"')
        & lines.str.contains(r'"response"\s*:\s*"')
        & ~lines.str.contains_any(OTHER_SHAPES)
        & ~lines.str.contains(r":\s*(true|false)\b")
    )


def decode_flat(lines: pl.Series, origins: pl.Series) -> tuple[pa.Table, pl.Series] | None:
    """The rows of `lines` (eligible ones) in LOG_SCHEMA, and a mask of the lines to read
    again one by one (signals Python would refuse); None when polars cannot decode them
    all (a type it will not coerce: Python then reads the whole block)."""
    try:
        decoded = lines.str.json_decode(FLAT).struct.unnest()
    except pl.exceptions.PolarsError:
        return None
    said = pl.coalesce("user_feedback", "feedback")
    score = pl.coalesce("automated_score", "score")
    feedback = said.str.strip_chars().str.to_lowercase().replace_strict(FEEDBACK, default=None)
    frame = decoded.select(
        pl.Series("log_id", sha256_hex(lines.to_arrow(), 16)),
        pl.coalesce("request_id", "id").alias("request_id"),
        pl.concat_list(
            pl.struct(pl.lit("user").alias("role"), pl.col("prompt").alias("content"))
        ).alias("messages"),
        pl.concat_list("response").alias("responses"),
        pl.coalesce("latency_ms", "latency").alias("latency_ms"),
        feedback.alias("feedback"),
        score.alias("score"),
        "expected_format",
        "finish_reason",
        pl.coalesce("adapter", "model").alias("model"),
        pl.coalesce("timestamp", "created_at", "created").alias("timestamp"),
        pl.lit(None, pl.String).alias("tags"),
        origins.alias("origin"),
        # signals Python would refuse: those rows are read again, one by one
        (
            (said.is_not_null() & feedback.is_null()) | ((score < 0) | (score > 1)).fill_null(False)
        ).alias("again"),
    )
    again = frame["again"]
    frame = frame.filter(~again).drop("again")
    return frame.to_arrow().cast(LOG_SCHEMA), again
