"""Row identity: canonical content, row ids and exact-dedup keys (vectorized).

Row ids follow the contract: `sha256(source + "\\0" + canonical content)[:16]`, where the
canonical content is an unambiguous, length-prefixed encoding of the row's kind and turns.
The `#k` suffix for the k-th identical copy inside one source is added once all of a source's
rows are known (see `runner._index_frame`). Exact-dedup keys hash the content after
folding (NFKC, case, whitespace).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.hashing import hash128, sha256_hex
from curate.rows import MESSAGE, MESSAGES, list_offsets


def _turn_parts(
    turns: pa.Array, before: pa.Array | None = None, after: pa.Array | None = None
) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """(`<bytes>:<role><bytes>:<content>` per turn, each row's turns as offsets into those,
    each row's turn count as text). `before` / `after` (one string per row) are glued to
    the row's first / last turn."""
    offsets = list_offsets(turns)
    items = turns.flatten()
    roles = pc.fill_null(items.field("role"), "")
    contents = pc.fill_null(items.field("content"), "")
    glue: list[pa.Array | str] = ["", ""]
    if before is not None and after is not None and len(items):
        lengths = np.diff(offsets)
        owner = pa.array(np.repeat(np.arange(len(lengths)), lengths))
        first = np.zeros(len(items), dtype=bool)
        last = np.zeros(len(items), dtype=bool)
        first[offsets[:-1][lengths > 0]] = True
        last[offsets[1:][lengths > 0] - 1] = True
        glue = [
            pc.if_else(pa.array(first), before.take(owner), ""),
            pc.if_else(pa.array(last), after.take(owner), ""),
        ]
    parts = pc.binary_join_element_wise(
        glue[0],
        pc.binary_length(roles).cast(pa.string()),
        ":",
        roles,
        pc.binary_length(contents).cast(pa.string()),
        ":",
        contents,
        glue[1],
        "",
    )
    count = pc.fill_null(pc.list_value_length(turns), 0).cast(pa.string())
    return parts, offsets, count


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
    """The content a row id is computed from: kind, then every part length-prefixed:
    `kind \\0 <messages> \\0 <text> \\0 <chosen> \\0 <rejected>`.

    Written with two copies of the text (each turn's encoding, with the row's other parts
    glued to its first and last turn; then each row's turns joined), not one per part.
    """
    kind = pc.fill_null(rows.column("kind").combine_chunks(), "raw")
    messages = rows.column("messages").combine_chunks()
    tail = pc.binary_join_element_wise(
        "",
        _encode_text(rows.column("text").combine_chunks()),
        _encode_turns(rows.column("chosen").combine_chunks()),
        _encode_turns(rows.column("rejected").combine_chunks()),
        "\x00",
    )
    if messages.null_count == len(messages):
        return pc.binary_join_element_wise(kind, "\x000;", tail, "")
    count = pc.fill_null(pc.list_value_length(messages), 0).cast(pa.string())
    head = pc.binary_join_element_wise(kind, "\x00", count, ";", "")
    parts, offsets, _ = _turn_parts(messages, head, tail)
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), parts)
    joined = pc.binary_join(lists, "")
    empty = np.diff(offsets) == 0  # no turns: nothing carried the head and the tail
    if empty.any():
        joined = pc.if_else(pa.array(empty), pc.binary_join_element_wise(head, tail, ""), joined)
    return joined


def _needs_folding(folded: pa.Array, ascii_only: pa.Array) -> pa.Array:
    """Which values `_WHITESPACE_TO_FOLD` or the trim would change: a double space, a
    whitespace character other than a space, or a space at either end. Searched with
    polars' literal and byte-class searches (memchr), ~4x faster than one RE2 match of
    the whole pattern; the non-ASCII spaces only in the rows that have non-ASCII text."""
    import polars as pl

    text = pl.Series(folded)
    need = (
        text.str.contains("  ", literal=True)
        | text.str.contains(r"[\t\n\x0b\x0c\r]")
        | text.str.starts_with(" ")
        | text.str.ends_with(" ")
    ).fill_null(False)
    if not pc.all(ascii_only).as_py():
        need = need | text.str.contains(r"[\x{85}\x{2028}\x{2029}]").fill_null(False)
    return need.to_arrow()


# A run of two or more whitespace characters, or a single one that is not a space: only
# these need rewriting, so the regex touches little of ordinary text (≈10× faster than
# splitting on whitespace and joining).
_WHITESPACE_TO_FOLD = r"[\t\n\v\f\r \x{85}\x{2028}\x{2029}]{2,}|[\t\n\v\f\r\x{85}\x{2028}\x{2029}]"


def fold_text(values: pa.Array) -> pa.Array:
    """NFKC, lower case, runs of whitespace folded to one space, trimmed."""
    ascii_only = pc.fill_null(pc.string_is_ascii(values), True)
    if pc.all(ascii_only).as_py():
        folded = pc.ascii_lower(values)  # NFKC is the identity on ASCII; ~20× cheaper
    else:
        folded = pc.if_else(
            ascii_only, pc.ascii_lower(values), pc.utf8_lower(pc.utf8_normalize(values, "NFKC"))
        )
    # only the rows that change are rewritten: a search allocates no new text (in a fresh
    # worker, writing a whole new column costs more in page faults than the regex itself)
    todo = _needs_folding(folded, ascii_only)
    if not pc.any(todo).as_py():
        return folded
    fixed = pc.replace_substring_regex(folded.filter(todo), _WHITESPACE_TO_FOLD, " ")
    return pc.replace_with_mask(folded, todo, pc.utf8_trim(fixed, " "))


def row_ids(rows: pa.Table, source: str) -> pa.Array:
    """`sha256(source + "\\0" + canonical content)[:16]`; a malformed row hashes its raw text."""
    content = canonical_content(rows)
    raw = rows.column("raw").combine_chunks() if "raw" in rows.column_names else None
    if raw is not None and raw.null_count < len(raw):
        content = pc.if_else(
            pc.is_null(raw), content, pc.binary_join_element_wise("raw", raw, "\x00")
        )
    return sha256_hex(content, 16, prefix=source.encode() + b"\x00")


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
