"""Row identity: canonical content, row ids and exact-dedup keys (vectorized).

Row ids follow the contract: `sha256(source + "\\0" + canonical content)[:16]`, where the
canonical content is an unambiguous, length-prefixed encoding of the row's kind and turns.
The `#k` suffix for the k-th identical copy inside one source is added once all of a source's
rows are known (see `pipeline._index_frame`). Exact-dedup keys hash the content after
folding (NFKC, case, whitespace).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.hashing import byte_ranges, hash128, sha256_concat, sha256_hex
from curate.rows import MESSAGE, MESSAGES, list_offsets


def _turn_parts(turns: pa.Array) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """(`<bytes>:<role><bytes>:<content>` per turn, each row's turns as offsets into those,
    each row's turn count as text)."""
    items = turns.flatten()
    roles = pc.fill_null(items.field("role"), "")
    contents = pc.fill_null(items.field("content"), "")
    parts = pc.binary_join_element_wise(
        pc.binary_length(roles).cast(pa.string()),
        ":",
        roles,
        pc.binary_length(contents).cast(pa.string()),
        ":",
        contents,
        "",
    )
    count = pc.fill_null(pc.list_value_length(turns), 0).cast(pa.string())
    return parts, list_offsets(turns), count


def _encode_turns(turns: pa.Array) -> pa.Array:
    """Per row: `<count>;` then `<bytes>:<role><bytes>:<content>` per turn (injective)."""
    if turns.null_count == len(turns):  # e.g. chosen/rejected of chat rows
        return pa.repeat(pa.scalar("0;"), len(turns))
    parts, offsets, count = _turn_parts(turns)
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), parts)
    return pc.binary_join_element_wise(count, pc.binary_join(lists, ""), ";")


def _encode_text(text: pa.Array) -> pa.Array:
    if text.null_count == len(text):
        return pa.repeat(pa.scalar("0:"), len(text))
    text = pc.fill_null(text, "")
    return pc.binary_join_element_wise(pc.binary_length(text).cast(pa.string()), text, ":")


def canonical_content(rows: pa.Table) -> pa.Array:
    """The content a row id is computed from: kind, then every part length-prefixed."""

    def turns(name: str) -> pa.Array:
        return _encode_turns(rows.column(name).combine_chunks())

    parts = [
        pc.fill_null(rows.column("kind").combine_chunks(), "raw"),
        turns("messages"),
        _encode_text(rows.column("text").combine_chunks()),
        turns("chosen"),
        turns("rejected"),
    ]
    return pc.binary_join_element_wise(*parts, "\x00")


# A run of two or more whitespace characters, or a single one that is not a space: only
# these need rewriting, so the regex touches little of ordinary text (≈10× faster than
# splitting on whitespace and joining).
_WHITESPACE_TO_FOLD = r"[\t\n\v\f\r \x{85}\x{2028}\x{2029}]{2,}|[\t\n\v\f\r\x{85}\x{2028}\x{2029}]"
_NEEDS_FOLD = r"^ | $|" + _WHITESPACE_TO_FOLD


def fold_text(values: pa.Array) -> pa.Array:
    """NFKC, lower case, runs of whitespace folded to one space, trimmed."""
    ascii_only = pc.fill_null(pc.string_is_ascii(values), True)
    if pc.all(ascii_only).as_py():
        folded = pc.ascii_lower(values)  # NFKC is the identity on ASCII; ~20× cheaper
    else:
        folded = pc.if_else(
            ascii_only, pc.ascii_lower(values), pc.utf8_lower(pc.utf8_normalize(values, "NFKC"))
        )
    # only the rows that change are rewritten: a match allocates no new text (in a fresh
    # worker, writing a whole new column costs more in page faults than the regex itself)
    todo = pc.fill_null(pc.match_substring_regex(folded, _NEEDS_FOLD), False)
    if not pc.any(todo).as_py():
        return folded
    fixed = pc.replace_substring_regex(folded.filter(todo), _WHITESPACE_TO_FOLD, " ")
    return pc.replace_with_mask(folded, todo, pc.utf8_trim(fixed, " "))


def row_ids(rows: pa.Table, source: str) -> pa.Array:
    """`sha256(source + "\\0" + canonical content)[:16]`; a malformed row hashes its raw text.

    For rows with messages, the canonical content is hashed in three pieces read in place
    (kind and turn count; the turns, as `_encode_turns` writes them; the other parts),
    never joined into one column: that would copy every row's text three more times.
    """
    prefix = source.encode() + b"\x00"
    raw = rows.column("raw").combine_chunks() if "raw" in rows.column_names else None
    messages = rows.column("messages").combine_chunks()
    if (raw is not None and raw.null_count < len(raw)) or messages.null_count == len(messages):
        content = canonical_content(rows)
        if raw is not None and raw.null_count < len(raw):
            content = pc.if_else(
                pc.is_null(raw), content, pc.binary_join_element_wise("raw", raw, "\x00")
            )
        return sha256_hex(content, 16, prefix=prefix)
    parts, offsets, count = _turn_parts(messages)
    kind = pc.fill_null(rows.column("kind").combine_chunks(), "raw")
    head = pc.binary_join_element_wise(kind, "\x00", count, ";", "")
    tail = pc.binary_join_element_wise(
        "",
        _encode_text(rows.column("text").combine_chunks()),
        _encode_turns(rows.column("chosen").combine_chunks()),
        _encode_turns(rows.column("rejected").combine_chunks()),
        "\x00",
    )
    view, starts, ends = byte_ranges(parts)
    bounds = np.concatenate([starts, ends[-1:]]) if len(starts) else np.zeros(1, np.int64)
    body = (view, bounds[offsets[:-1]], bounds[offsets[1:]])
    return sha256_concat([byte_ranges(head), body, byte_ranges(tail)], 16, prefix=prefix)


def dedup_keys(rows: pa.Table) -> pa.Table:
    """Exact-dedup key: a 128-bit hash (columns h1, h2) of the normalized (folded) content.

    The nested columns are folded in place and hashed as they are (polars hashes lists of
    structs natively), which spares building one long string per row.
    """

    def folded(name: str) -> pa.Array:
        col = rows.column(name).combine_chunks()
        items = col.flatten()
        struct = pa.StructArray.from_arrays(
            [items.field("role"), fold_text(items.field("content"))], fields=list(MESSAGE)
        )
        return pa.ListArray.from_arrays(
            pa.array(list_offsets(col), pa.int32()), struct, type=MESSAGES, mask=col.is_null()
        )

    text = rows.column("text").combine_chunks()
    table = pa.table(
        {
            "kind": rows.column("kind").combine_chunks(),
            "messages": folded("messages"),
            "text": fold_text(text) if text.null_count < len(text) else text,
            "chosen": folded("chosen"),
            "rejected": folded("rejected"),
        }
    )
    return hash128(table)
