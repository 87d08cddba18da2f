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

from typing import Any

import polars as pl
import pyarrow as pa

from curate.hashing import sha256_hex
from curate.mining.logs import FEEDBACK, LOG_SCHEMA, ROLES, _tags_text

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
# polars decodes a lone high surrogate escape (`\ud800`) as NUL, silently: lines with any
# surrogate escape are read in Python, which pairs them or counts the row unreadable
SURROGATE_ESCAPE = r"\\[uU][dD][89a-fA-F][0-9a-fA-F]{2}"
OTHER_SHAPES = ['"input"', '"messages"', '"responses"', '"completion"', '"tags"', '"metadata"']


def eligible(lines: pl.Series) -> pl.Series:
    """Lines the one-pass decode reads exactly as `normalize` would."""
    return (
        lines.str.contains(r"^\s*\{")
        & lines.str.contains(r'"prompt"\s*:\s*"')
        & lines.str.contains(r'"response"\s*:\s*"')
        & ~lines.str.contains_any(OTHER_SHAPES)
        & ~lines.str.contains(r":\s*(true|false)\b")
        & ~lines.str.contains(SURROGATE_ESCAPE)
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


# OpenAI chat-completion logs as proxies export them: every signal `normalize` reads, in the
# bags it reads them from (the row, its tags, the completion), text or number
TEXT_SIGNALS: tuple[str, ...] = ("request_id", "id", "expected_format", "finish_reason")
TEXT_SIGNALS += ("adapter", "model", "timestamp", "created_at", "created")
NUMBER_SIGNALS = ("latency_ms", "latency", "automated_score", "score")
SIGNALS: dict[str, Any] = {k: pl.String for k in (*TEXT_SIGNALS, "user_feedback", "feedback")}
SIGNALS.update({k: pl.Float64 for k in NUMBER_SIGNALS})
TURN = pl.Struct({"role": pl.String, "content": pl.String})
PROXY = pl.Struct(
    {
        "input": pl.Struct({"messages": pl.List(TURN)}),
        "output": pl.Struct(
            {
                "choices": pl.List(pl.Struct({"message": TURN, "finish_reason": pl.String})),
                **SIGNALS,
            }
        ),
        "tags": pl.Struct(SIGNALS),
        **SIGNALS,
    }
)


def eligible_proxy(lines: pl.Series) -> pl.Series:
    """Proxy-shaped lines the one-pass decode reads exactly as `normalize` would: every
    turn's content a string, no `metadata`, no `true` / `false`, no float where text is
    read (`created` holds an epoch; polars and Python write a float differently)."""
    return (
        lines.str.contains(r"^\s*\{")
        & lines.str.contains(r'"input"\s*:\s*\{')
        & lines.str.contains(r'"output"\s*:\s*\{')
        & ~lines.str.contains(r'"content"\s*:\s*[^"\s]')
        & ~lines.str.contains_any(['"metadata"', '"responses"'])
        & ~lines.str.contains(r":\s*(true|false)\b")
        & ~lines.str.contains(r'"(?:' + "|".join(TEXT_SIGNALS) + r')"\s*:\s*-?[0-9.]+[.eE]')
        & ~lines.str.contains(SURROGATE_ESCAPE)
    )


def decode_proxy(lines: pl.Series, origins: pl.Series) -> tuple[pa.Table, pl.Series] | None:
    """As `decode_flat`, for proxy-shaped lines (`eligible_proxy`). Tags are the one part
    read in Python: their JSON text must be what `normalize` writes."""
    import json

    try:
        decoded = lines.str.json_decode(PROXY).struct.unnest()
    except pl.exceptions.PolarsError:
        return None
    bags = [pl.col(k) for k in ("tags", "output")]

    def signal(*keys: str) -> pl.Expr:  # as `normalize`: bag by bag, key by key
        found = [pl.col(k) for k in keys]
        for bag in bags:
            found += [bag.struct.field(k) for k in keys]
        return pl.coalesce(found)

    said = signal("user_feedback", "feedback")
    score = signal("automated_score", "score")
    feedback = said.str.strip_chars().str.to_lowercase().replace_strict(FEEDBACK, default=None)
    choices = pl.col("output").struct.field("choices")
    turns = pl.col("input").struct.field("messages")
    first_finish = choices.list.first().struct.field("finish_reason")
    tags = [_tags_text(json.loads(line)) for line in lines.to_list()]
    frame = decoded.select(
        pl.Series("log_id", sha256_hex(lines.to_arrow(), 16)),
        signal("request_id", "id").alias("request_id"),
        turns.list.eval(
            pl.struct(
                pl.element().struct.field("role"),
                pl.element().struct.field("content").fill_null(""),
            )
        ).alias("messages"),
        choices.list.eval(
            pl.element().struct.field("message").struct.field("content").fill_null("")
        ).alias("responses"),
        signal("latency_ms", "latency").alias("latency_ms"),
        feedback.alias("feedback"),
        score.alias("score"),
        signal("expected_format").alias("expected_format"),
        pl.when(first_finish.fill_null("") != "")
        .then(first_finish)
        .otherwise(signal("finish_reason"))
        .alias("finish_reason"),
        signal("adapter", "model").alias("model"),
        signal("timestamp", "created_at", "created").alias("timestamp"),
        pl.Series("tags", tags, dtype=pl.String),
        origins.alias("origin"),
        # what Python would refuse, or read another way: those rows are read again
        (
            pl.col("input").is_null()
            | pl.col("output").is_null()
            | (turns.list.len().fill_null(0) == 0)
            | (choices.list.len().fill_null(0) == 0)
            | ~turns.list.eval(pl.element().struct.field("role").is_in(ROLES)).list.all()
            | (said.is_not_null() & feedback.is_null())
            | ((score < 0) | (score > 1)).fill_null(False)
        ).alias("again"),
    )
    again = frame["again"].fill_null(True)
    frame = frame.filter(~again).drop("again")
    return frame.to_arrow().cast(LOG_SCHEMA), again
