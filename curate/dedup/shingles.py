"""Word n-gram hashes of rows, vectorized: shared by near-dup (MinHash) and contamination.

Text is normalized before it is cut into words: NFKC, lower case, thousands separators
dropped ("1,000" → "1000"), every run of characters that are not letters or digits turned
into a space. Words are hashed by polars (xxh3, seeded), n-grams are combined from the word
hashes with numpy (wrapping uint64 arithmetic, then a splitmix64 finalizer), so no Python
loop runs per word or per shingle. The hashes live only within one build.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.rows import content_chars, list_offsets

_PRIME = np.uint64(0x100000001B3)
_SEED = 0x5EED5


def row_text(batch: pa.Table, roles: tuple[str, ...] = ("user", "assistant", "tool")) -> pa.Array:
    """Per row, the content a near-duplicate or a leak lives in: its turns (no system
    prompt, which a source shares across rows), or its text."""
    n = batch.num_rows
    parts: list[pa.Array] = []
    for name in ("messages", "chosen"):
        col = batch.column(name).combine_chunks()
        if col.null_count == n:
            continue
        items = col.flatten()
        keep = pc.fill_null(pc.is_in(items.field("role"), pa.array(roles)), False)
        content = pc.if_else(keep, pc.fill_null(items.field("content"), ""), "")
        lists = pa.ListArray.from_arrays(pa.array(list_offsets(col), pa.int32()), content)
        parts.append(pc.binary_join(lists, "\n"))
    text = batch.column("text").combine_chunks()
    if text.null_count < n:
        parts.append(text)
    if not parts:
        return pa.array([""] * n, pa.string())
    joined = pc.binary_join_element_wise(*[pc.fill_null(p, "") for p in parts], "\n")
    return joined


def answer_chars(batch: pa.Table) -> pa.Array:
    """Per row, the characters of its assistant turns (the keep policy's "longer answer")."""
    return pa.array(content_chars(batch, ("messages", "chosen"), roles=("assistant",)), pa.int64())


def normalize(text: pa.Array) -> pa.Array:
    ascii_only = pc.fill_null(pc.all(pc.string_is_ascii(text)), True).as_py()
    text = pc.ascii_lower(text) if ascii_only else pc.utf8_lower(pc.utf8_normalize(text, "NFKC"))
    # only rows holding a thousands separator are rewritten (a match is ~2x cheaper than a
    # replace); twice, since matches cannot overlap ("12,345,678" needs two passes)
    grouped = pc.match_substring_regex(text, r"\d,\d{3}")
    if pc.any(grouped).as_py():
        fixed = text.filter(grouped)
        for _ in range(2):
            fixed = pc.replace_substring_regex(fixed, r"(\d),(\d{3})", r"\1\2")
        text = pc.replace_with_mask(text, grouped, fixed)
    # Runs of any other character, Unicode spaces included, become one space (ASCII
    # whitespace is left to the split: a regex matching every single space is 2-3x slower).
    # What is left splits on ASCII whitespace, ~40% cheaper than on Unicode whitespace.
    # polars' regex engine does this in ~55% of the time of Arrow's RE2, conversions included.
    import polars as pl

    cleaned = pl.Series(text).str.replace_all(r"[^\p{L}\p{N} \t\n\r\f\v]+", " ")
    return cleaned.to_arrow()


def words(text: pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Word hashes (uint64) of every row, flattened, with the rows' offsets and the words."""
    import polars as pl

    lists = pc.ascii_split_whitespace(normalize(text))
    flat = lists.flatten()
    offsets = list_offsets(lists)
    # the split leaves an empty word where a row starts or ends with whitespace (as it does
    # once trailing punctuation became a space), and for an empty row: drop them
    nonempty = pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False)
    if not nonempty.all():
        owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        counts = np.bincount(owner[nonempty], minlength=len(offsets) - 1)
        offsets = np.zeros(len(offsets), dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        flat = flat.filter(pa.array(nonempty))
    hashes = pl.Series(flat).hash(_SEED).to_numpy() if len(flat) else np.zeros(0, np.uint64)
    return hashes.astype(np.uint64, copy=False), offsets, flat


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """`np.unique(values)` by sorting: numpy 2's hash-based `unique` is ~15x slower on
    millions of 64-bit hashes."""
    out = np.sort(values)
    if len(out) > 1:
        out = out[np.concatenate(([True], out[1:] != out[:-1]))]
    return out


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads the bits of combined hashes."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ngram_hashes(
    word_hash: np.ndarray, offsets: np.ndarray, n: int, short: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every word n-gram of every row: (hashes, row of each, first word of each).

    A row with fewer than n words (but some) gives one n-gram of all its words when `short`.
    """
    lengths = np.diff(offsets)
    rows = len(lengths)
    per_row = np.maximum(lengths - n + 1, 0)
    if short:
        per_row = np.where((lengths > 0) & (lengths < n), 1, per_row)
    total = int(per_row.sum())
    owner = np.repeat(np.arange(rows), per_row)
    first = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(per_row, out=first[1:])
    starts = offsets[:-1][owner] + (np.arange(total) - first[:-1][owner])
    ends = offsets[1:][owner]
    h = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        partial = bool(short and (lengths < n).any())  # short rows stop early
        for j in range(n):
            idx = starts + j
            if not partial:  # every n-gram has all n words
                h = h * _PRIME + word_hash[idx]
                continue
            valid = idx < ends
            step = h * _PRIME + word_hash[np.minimum(idx, len(word_hash) - 1)]
            h = np.where(valid, step, h)
        return mix64(h), owner, starts
