"""The canonical row schema and the normalizers from every input format into it.

Every source is normalized to one Arrow schema (`ROW_SCHEMA`). Normalization is vectorized:
a block of raw rows arrives as an Arrow table whose columns have the types a format expects
(`coerce`), and `normalize` turns it into canonical rows with pyarrow compute and numpy,
marking each row that cannot be used with a reason from the ledger vocabulary
(`invalid_schema`, `empty_response`) and its evidence. Rows that are not even JSON objects
(`malformed`) are caught earlier by the readers (see `sources.py`).

Row ids and exact-dedup keys are computed from these rows in `identity.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import transcripts

SPLIT_NAMES = ("train", "validation", "test")  # the output's splits, in this order

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

ROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("messages", MESSAGES),
        ("text", pa.string()),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("meta", pa.string()),
        ("origin", pa.string()),
    ]
)

# With a [tokenizer], each kept row also carries what the trainer trains on: the token ids
# of its render, the token ranges [start, end) that are trained (assistant turns with their
# end-of-turn token), the counts, and how many prompt tokens `truncate_prompt` cut.
SPAN = pa.struct([("start", pa.int32()), ("end", pa.int32())])
TOKEN_FIELDS = [
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("mask_spans", pa.list_(SPAN)),
    pa.field("n_tokens", pa.int32()),
    pa.field("n_trained", pa.int32()),
    pa.field("tokens_cut", pa.int32()),
]

# Columns a block carries through a build besides the row itself: the row's place in its
# source, the raw text of an unparseable line, and the verdict of reading it.
BUILD_SCHEMA = pa.schema(
    list(ROW_SCHEMA)
    + [
        ("order", pa.int64()),
        ("raw", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}


def _turns(key_role: str, key_content: str) -> pa.DataType:
    return pa.list_(pa.struct([(key_role, pa.string()), (key_content, pa.string())]))


# What each format reads, with the Arrow type it expects; `required` must be present.
FORMAT_FIELDS: dict[str, dict[str, pa.DataType]] = {
    "chat": {"messages": _turns("role", "content")},
    "sharegpt": {"conversations": _turns("from", "value"), "system": pa.string()},
    "alpaca": {
        "instruction": pa.string(),
        "input": pa.string(),
        "output": pa.string(),
        "system": pa.string(),
    },
    "prompt_completion": {"prompt": pa.string(), "completion": pa.string(), "system": pa.string()},
    "text": {"text": pa.string()},
    "preference": {"prompt": pa.string(), "chosen": pa.string(), "rejected": pa.string()},
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "preference": ("chosen", "rejected"),
}
# `auto` picks, per row, the first format whose required fields are all present.
AUTO_ORDER = ("chat", "sharegpt", "preference", "alpaca", "prompt_completion", "text")
ALL_FIELDS: dict[str, pa.DataType] = {k: v for f in FORMAT_FIELDS.values() for k, v in f.items()}


def fields_of(fmt: str) -> dict[str, pa.DataType]:
    return ALL_FIELDS if fmt == "auto" else FORMAT_FIELDS[fmt]


class CoerceError(Exception):
    """A block whose columns do not have the types the format expects (handled row by row)."""


# ---------------------------------------------------------------------------------------
# coercion: raw Arrow columns → the types a format expects


def coerce(raw: pa.Table, fmt: str) -> tuple[pa.Table, pa.Array | None]:
    """Project `raw` onto the format's fields with their expected types, plus a `meta` column.

    Raises CoerceError when a column has a type that cannot be taken as is (a number where a
    string belongs, a string where a list belongs): the caller then checks that block row by
    row so that only the offending rows are rejected.
    """
    wanted = fields_of(fmt)
    n = raw.num_rows
    cols: dict[str, pa.Array] = {}
    for name, typ in wanted.items():
        if name in raw.column_names:
            cols[name] = _coerce_column(raw.column(name).combine_chunks(), typ, name)
        else:
            cols[name] = pa.nulls(n, typ)
    extra = [c for c in raw.column_names if c not in wanted]
    return pa.table(cols), _meta_json(raw.select(extra)) if extra else None


def _coerce_column(col: pa.Array, typ: pa.DataType, name: str) -> pa.Array:
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), typ)
    if pa.types.is_string(typ):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return col.cast(pa.string())
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            try:  # text stored as bytes by some writers: taken when it is all UTF-8
                return col.cast(pa.string())
            except pa.ArrowInvalid as exc:
                raise CoerceError(f"{name}: bytes that are not UTF-8 text") from exc
        raise CoerceError(f"{name}: expected strings, column has {col.type}")
    # list<struct<a: string, b: string>>
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise CoerceError(f"{name}: expected a list, column has {col.type}")
    items = col.flatten()
    if pa.types.is_null(items.type):
        items = pa.nulls(len(items), typ.value_type)
    if not pa.types.is_struct(items.type):
        raise CoerceError(f"{name}: expected a list of objects, column has {col.type}")
    known = {f.name for f in typ.value_type}
    for field in items.type:
        if field.name not in known and items.field(field.name).null_count < len(items):
            # e.g. tool_calls, name, a per-turn weight: the row-by-row path rejects the rows
            # that carry one rather than let them lose it silently
            raise CoerceError(f"{name}[].{field.name}: a turn field curate does not keep")
    children = []
    for field in typ.value_type:
        if items.type.get_field_index(field.name) >= 0:
            child = items.field(field.name)
            children.append(_coerce_column(child, pa.string(), f"{name}[].{field.name}"))
        else:
            children.append(pa.nulls(len(items), pa.string()))
    # a null element inside the list becomes an element with null fields (caught as missing)
    struct = pa.StructArray.from_arrays(children, fields=list(typ.value_type))
    offsets = list_offsets(col)
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), struct, type=typ, mask=col.is_null()
    )


def list_offsets(col: pa.Array) -> np.ndarray:
    """int64 offsets of a list array (nulls count as empty), honouring slices."""
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(col) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def content_chars(
    batch: pa.Table, fields: tuple[str, ...], roles: tuple[str, ...] | None = None
) -> np.ndarray:
    """Per row, the characters of its turns in `fields` (only `roles`, if given) and its text."""
    n = batch.num_rows
    total = np.zeros(n, dtype=np.int64)
    for name in fields:
        col = batch.column(name).combine_chunks()
        if col.null_count == n:
            continue
        items = col.flatten()
        lengths = pc.fill_null(pc.utf8_length(items.field("content")), 0)
        if roles is not None:
            keep = pc.fill_null(pc.is_in(items.field("role"), pa.array(roles)), False)
            lengths = pc.if_else(keep, lengths, 0)
        cum = np.concatenate([[0], np.cumsum(lengths.to_numpy(zero_copy_only=False))])
        offsets = list_offsets(col)
        total += cum[offsets[1:]] - cum[offsets[:-1]]
    text = batch.column("text").combine_chunks()
    if text.null_count < n:
        total += pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
    return total


def _holds_binary(typ: pa.DataType) -> bool:
    if (
        pa.types.is_binary(typ)
        or pa.types.is_large_binary(typ)
        or pa.types.is_fixed_size_binary(typ)
    ):
        return True
    return any(_holds_binary(typ.field(i).type) for i in range(typ.num_fields))


def _meta_json(extra: pa.Table) -> pa.Array:
    """Extra fields of each row as one compact JSON object: keys sorted, null fields left out
    (as the row-by-row path writes it), null when there are none."""
    import polars as pl

    if any(_holds_binary(f.type) for f in extra.schema):
        # polars panics (a BaseException) writing bytes as JSON: row by row instead, where
        # bytes become text or base64
        raise CoerceError("extra fields: binary values")
    try:
        frame = pl.from_arrow(extra)
        assert isinstance(frame, pl.DataFrame)
        # `{"name":value}` per column, braces cut off, joined over the non-null fields
        fragments = [
            pl.when(pl.col(c).is_not_null()).then(
                pl.struct(c).struct.json_encode().str.slice(1).str.strip_suffix("}")
            )
            for c in sorted(frame.columns)
        ]
        joined = pl.concat_str(fragments, separator=",", ignore_nulls=True)
        encoded = frame.select(
            pl.when(joined != "").then("{" + joined + "}").alias("m")
        ).to_series()
        return encoded.to_arrow().cast(pa.string())
    except Exception as exc:  # an exotic type polars cannot encode: row by row instead
        raise CoerceError(f"extra fields: {exc}") from exc


# ---------------------------------------------------------------------------------------
# normalization: coerced columns → canonical rows with verdicts


class _Verdicts:
    """First reason per row; later checks never overwrite an earlier one."""

    def __init__(self, n: int):
        self.reason: list[str | None] = [None] * n
        self.detail: list[str | None] = [None] * n

    def mark(self, rows: np.ndarray, reason: str, details: Sequence[dict] | dict) -> None:
        for j, row in enumerate(rows.tolist()):
            if self.reason[row] is None:
                d = details[j] if isinstance(details, Sequence) else details
                self.reason[row] = reason
                self.detail[row] = json.dumps(d, ensure_ascii=False, sort_keys=True)

    def alive(self) -> np.ndarray:
        return np.array([r is None for r in self.reason], dtype=bool)


def normalize(cols: pa.Table, meta: pa.Array | None, fmt: str, source: str) -> pa.Table:
    """Canonical rows (ROW_SCHEMA columns without id/origin) plus stage/reason/detail."""
    n = cols.num_rows
    verdicts = _Verdicts(n)
    kinds = np.full(n, None, dtype=object)
    msgs: list[tuple[np.ndarray, pa.Array]] = []  # (row indices, messages) per format group
    texts = pa.nulls(n, pa.string())
    chosen = pa.nulls(n, MESSAGES)
    rejected = pa.nulls(n, MESSAGES)

    for name, rows in _format_groups(cols, fmt, verdicts):
        if len(rows) == 0:
            continue
        sub = cols.take(pa.array(rows))
        _check_required(sub, name, rows, verdicts)
        if name == "text":
            text = sub.column("text").combine_chunks()
            spoken = transcripts.is_transcript(text)  # `Human: … Assistant: …`: a chat
            if spoken.any():
                kinds[rows[spoken]] = "chat"
                turns = _turn_rows(text.filter(pa.array(spoken)))
                _check_turns(turns, rows[spoken], ("text", "role", "content"), verdicts)
                msgs.append((rows[spoken], turns))
                rows, text = rows[~spoken], text.filter(pa.array(~spoken))
            kinds[rows] = "text"
            blank = _is_blank(text)
            verdicts.mark(
                rows[blank],
                "empty_response",
                {"field": "text", "error": "empty or whitespace only"},
            )
            texts = _scatter(texts, rows, text)
            continue
        if name == "preference":
            kinds[rows] = "preference"
            prompt = sub.column("prompt").combine_chunks()
            spoken = prompt.is_null().to_numpy(zero_copy_only=False) & transcripts.is_transcript(
                sub.column("chosen").combine_chunks()
            )
            if spoken.any():  # hh-rlhf's pairs: the conversation is in each side
                pairs = _transcript_pairs(sub.filter(pa.array(spoken)), rows[spoken], verdicts)
                msgs.append((rows[spoken], pairs[0]))
                chosen = _scatter(chosen, rows[spoken], pairs[1])
                rejected = _scatter(rejected, rows[spoken], pairs[2])
                rows, sub = rows[~spoken], sub.filter(pa.array(~spoken))
                prompt = sub.column("prompt").combine_chunks()
            msgs.append((rows, _build_turns(len(rows), [("user", prompt)])))
            for field in ("chosen", "rejected"):
                answer = sub.column(field).combine_chunks()
                blank = _is_blank(answer)
                verdicts.mark(
                    rows[blank],
                    "empty_response",
                    {"field": field, "error": "empty or whitespace only"},
                )
                built = _build_turns(len(rows), [("assistant", answer)])
                if field == "chosen":
                    chosen = _scatter(chosen, rows, built)
                else:
                    rejected = _scatter(rejected, rows, built)
            continue
        kinds[rows] = "chat"
        turns, labels = _chat_turns(sub, name)
        _check_turns(turns, rows, labels, verdicts)
        msgs.append((rows, turns))

    messages = pa.nulls(n, MESSAGES)
    for rows, built in msgs:
        messages = _scatter(messages, rows, built)
    _check_speakers(messages, chosen, rejected, verdicts)
    out = pa.table(
        {
            "source": pa.array([source] * n, pa.string()),
            "kind": pa.array(kinds.tolist(), pa.string()),
            "messages": messages,
            "text": texts,
            "chosen": chosen,
            "rejected": rejected,
            "meta": meta if meta is not None else pa.nulls(n, pa.string()),
        }
    )
    reasons = pa.array(verdicts.reason, pa.string())
    stage = pc.if_else(pc.is_null(reasons), pa.scalar(None, pa.string()), pa.scalar("read"))
    out = out.append_column("stage", stage).append_column("reason", reasons)
    return out.append_column("detail", pa.array(verdicts.detail, pa.string()))


def _turn_rows(texts: pa.Array) -> pa.Array:
    """MESSAGES rows of written transcripts."""
    return pa.array([transcripts.split(t) for t in texts.to_pylist()], MESSAGES)


def _transcript_pairs(
    sub: pa.Table, rows: np.ndarray, verdicts: _Verdicts
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(prompt turns, chosen, rejected) of preference rows written as transcripts; a pair
    whose sides do not share their conversation is rejected, naming why."""
    prompts, chosen, rejected, bad, why = [], [], [], [], []
    pairs = zip(sub.column("chosen").to_pylist(), sub.column("rejected").to_pylist(), strict=True)
    for k, (a, b) in enumerate(pairs):
        found = transcripts.preference(a or "", b or "")
        if isinstance(found, str):
            bad.append(k)
            why.append({"field": "chosen", "error": found})
            found = ([], [], [])
        prompts.append(found[0])
        chosen.append(found[1])
        rejected.append(found[2])
    verdicts.mark(rows[np.array(bad, dtype=np.int64)], "invalid_schema", why)
    return (pa.array(prompts, MESSAGES), pa.array(chosen, MESSAGES), pa.array(rejected, MESSAGES))


def _check_speakers(
    messages: pa.Array, chosen: pa.Array, rejected: pa.Array, verdicts: _Verdicts
) -> None:
    """A row with no user turn, or an answer that still holds `\n\nHuman:`: a conversation
    read as one turn, rejected with a reason of its own, never trained."""
    no_user, marked = transcripts.wrong_turns(messages, [chosen, rejected])
    verdicts.mark(
        np.flatnonzero(no_user),
        "no_user_turn",
        {"field": "messages", "error": "no user turn: nothing asked this answer"},
    )
    verdicts.mark(
        np.flatnonzero(marked),
        "role_marker_in_answer",
        {
            "error": "an answer holds '\\n\\nHuman:' / '\\n\\nAssistant:': a conversation read as one turn"
        },
    )


def _format_groups(cols: pa.Table, fmt: str, verdicts: _Verdicts):
    n = cols.num_rows
    if fmt != "auto":
        yield fmt, np.arange(n)
        return
    unassigned = np.ones(n, dtype=bool)
    for name in AUTO_ORDER:
        has = np.ones(n, dtype=bool)
        for field in REQUIRED[name]:
            has &= cols.column(field).is_valid().to_numpy(zero_copy_only=False)
        pick = unassigned & has
        unassigned &= ~pick
        yield name, np.nonzero(pick)[0]
    rest = np.nonzero(unassigned)[0]
    if len(rest):
        present = cols.take(pa.array(rest)).to_pylist()
        details = [
            {
                "error": "no known format: expected messages, conversations, chosen+rejected, "
                "instruction+output, prompt+completion or text",
                "fields": sorted(k for k, v in row.items() if v is not None),
            }
            for row in present
        ]
        verdicts.mark(rest, "invalid_schema", details)


def _check_required(sub: pa.Table, fmt: str, rows: np.ndarray, verdicts: _Verdicts) -> None:
    for field in REQUIRED[fmt]:
        missing = sub.column(field).is_null().to_numpy(zero_copy_only=False)
        verdicts.mark(rows[missing], "invalid_schema", {"field": field, "error": "missing"})


def _is_blank(values: pa.Array) -> np.ndarray:
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.fill_null(pc.equal(trimmed, ""), False).to_numpy(zero_copy_only=False)


def _scatter(base: pa.Array, rows: np.ndarray, values: pa.Array) -> pa.Array:
    """`base` with positions `rows` replaced by `values` (vectorized, keeps order)."""
    if len(rows) == len(base):
        return values
    combined = pa.concat_arrays([base, values])
    index = np.arange(len(base))
    index[rows] = len(base) + np.arange(len(rows))
    return combined.take(pa.array(index))


def _chat_turns(sub: pa.Table, fmt: str) -> tuple[pa.Array, tuple[str, str, str]]:
    """Messages of the chat-like formats, plus the field names to name in errors."""
    n = sub.num_rows
    if fmt == "chat":
        col = sub.column("messages").combine_chunks()
        items = col.flatten()
        struct = pa.StructArray.from_arrays(
            [items.field("role"), items.field("content")], fields=list(MESSAGE)
        )
        built = pa.ListArray.from_arrays(
            pa.array(list_offsets(col), pa.int32()), struct, type=MESSAGES, mask=col.is_null()
        )
        return built, ("messages", "role", "content")
    if fmt == "sharegpt":
        col = sub.column("conversations").combine_chunks()
        items = col.flatten()
        raw_roles = items.field("from")
        keys = pa.array(list(SHAREGPT_ROLES))
        mapped = pa.array(list(SHAREGPT_ROLES.values())).take(
            pc.index_in(pc.utf8_lower(raw_roles), keys)
        )
        # an unknown `from` keeps its original value so that the check can name it
        roles = pc.if_else(pc.is_null(mapped), raw_roles, mapped)
        struct = pa.StructArray.from_arrays([roles, items.field("value")], fields=list(MESSAGE))
        turns = pa.ListArray.from_arrays(
            pa.array(list_offsets(col), pa.int32()), struct, type=MESSAGES, mask=col.is_null()
        )
        system = sub.column("system").combine_chunks()
        if system.null_count < n:
            turns = _prepend_system(system, turns)
        return turns, ("conversations", "from", "value")
    if fmt == "alpaca":
        instruction = sub.column("instruction").combine_chunks()
        extra = sub.column("input").combine_chunks()
        has_input = ~_is_blank(extra) & extra.is_valid().to_numpy(zero_copy_only=False)
        joined = pc.binary_join_element_wise(instruction, extra, "\n\n")
        prompt = pc.if_else(pa.array(has_input), joined, instruction)
        answer = sub.column("output").combine_chunks()
    else:  # prompt_completion
        prompt = sub.column("prompt").combine_chunks()
        answer = sub.column("completion").combine_chunks()
    system = sub.column("system").combine_chunks()
    turns = _build_turns(n, [("system", system), ("user", prompt), ("assistant", answer)])
    return turns, ("messages", "role", "content")


def _prepend_system(system: pa.Array, turns: pa.Array) -> pa.Array:
    return _concat_lists(_build_turns(len(system), [("system", system)]), turns)


def _concat_lists(a: pa.Array, b: pa.Array) -> pa.Array:
    la = pc.fill_null(pc.list_value_length(a), 0).to_numpy(zero_copy_only=False)
    lb = pc.fill_null(pc.list_value_length(b), 0).to_numpy(zero_copy_only=False)
    n = len(a)
    flat = pa.concat_arrays([a.flatten(), b.flatten()])
    oa, ob = list_offsets(a), list_offsets(b)
    index = np.empty(int(la.sum() + lb.sum()), dtype=np.int64)
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(la + lb, out=out_offsets[1:])
    row = np.repeat(np.arange(n), la + lb)
    pos = np.arange(len(index)) - out_offsets[row]
    from_a = pos < la[row]
    index[from_a] = oa[row[from_a]] + pos[from_a]
    index[~from_a] = len(a.flatten()) + ob[row[~from_a]] + pos[~from_a] - la[row[~from_a]]
    mask = pc.and_(a.is_null(), b.is_null())
    return pa.ListArray.from_arrays(
        pa.array(out_offsets, pa.int32()), flat.take(pa.array(index)), type=MESSAGES, mask=mask
    )


def _build_turns(n: int, turns: list[tuple[str, pa.Array]]) -> pa.Array:
    """Rows of messages from per-turn columns; a null entry means the turn is absent."""
    count = len(turns)
    contents = pa.concat_arrays([c.cast(pa.string()) for _, c in turns])  # turn-major
    present = np.concatenate([c.is_valid().to_numpy(zero_copy_only=False) for _, c in turns])
    row_major = (np.arange(n)[:, None] + np.arange(count)[None, :] * n).ravel()
    picked = row_major[present[row_major]]
    roles = pa.array([r for r, _ in turns]).take(pa.array(picked // max(n, 1)))
    struct = pa.StructArray.from_arrays(
        [roles, contents.take(pa.array(picked))], fields=list(MESSAGE)
    )
    per_row = present.reshape(count, n).sum(axis=0)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(per_row, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), struct, type=MESSAGES)


def _check_turns(
    turns: pa.Array, rows: np.ndarray, labels: tuple[str, str, str], verdicts: _Verdicts
) -> None:
    """Unknown roles, missing content, no assistant turn, empty assistant turns."""
    list_name, role_key, content_key = labels
    n = len(turns)
    offsets = list_offsets(turns)
    lengths = np.diff(offsets)
    empty_rows = np.nonzero(lengths == 0)[0]
    verdicts.mark(rows[empty_rows], "invalid_schema", {"field": list_name, "error": "no turns"})
    items = turns.flatten()
    roles, contents = items.field("role"), items.field("content")
    elem_row = np.repeat(np.arange(n), lengths)
    turn = np.arange(len(items)) - offsets[elem_row]
    known = pc.fill_null(pc.is_in(roles, pa.array(ROLES)), False).to_numpy(zero_copy_only=False)
    has_content = contents.is_valid().to_numpy(zero_copy_only=False)
    is_assistant = pc.fill_null(pc.equal(roles, "assistant"), False).to_numpy(zero_copy_only=False)

    bad = np.nonzero(~known | ~has_content)[0]
    first_rows, first_at = np.unique(elem_row[bad], return_index=True)
    if len(first_rows):
        elems = bad[first_at]
        role_values = roles.take(pa.array(elems)).to_pylist()
        details = []
        for e, role in zip(elems.tolist(), role_values, strict=True):
            k = int(turn[e])
            if not known[e]:
                details.append(
                    {
                        "field": f"{list_name}[{k}].{role_key}",
                        "value": role,
                        "error": "missing role"
                        if role is None
                        else "unknown role; expected one of " + ", ".join(ROLES),
                    }
                )
            else:
                details.append(
                    {"field": f"{list_name}[{k}].{content_key}", "error": "missing or not a string"}
                )
        verdicts.mark(rows[first_rows], "invalid_schema", details)

    assistant_count = np.bincount(elem_row[is_assistant], minlength=n)
    no_answer = np.nonzero((assistant_count == 0) & (lengths > 0))[0]
    verdicts.mark(
        rows[no_answer], "invalid_schema", {"field": list_name, "error": "no assistant turn"}
    )

    blank = is_assistant & _is_blank(contents)
    blank_elems = np.nonzero(blank)[0]
    blank_rows, blank_at = np.unique(elem_row[blank_elems], return_index=True)
    details = [
        {
            "field": f"{list_name}[{int(turn[e])}].{content_key}",
            "turn": int(turn[e]),
            "error": "empty assistant turn",
        }
        for e in blank_elems[blank_at].tolist()
    ]
    verdicts.mark(rows[blank_rows], "empty_response", details)
