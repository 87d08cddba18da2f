"""Word n-gram hashes of rows, vectorized: shared by near-dup (MinHash) and contamination.

Text is normalized before it is cut into words: NFKC, lower case, thousands separators
dropped ("1,000" → "1000"), every run of characters that are not letters or digits turned
into a space. Rows holding non-ASCII characters are normalized with Arrow and polars; the
compiled tokenizer of `kernels` lowers, splits and hashes every row in one pass over its
bytes. n-grams are combined from the word hashes (wrapping uint64 arithmetic, then a
splitmix64 finalizer), so no Python loop runs per word or per shingle. The hashes live only
within one build.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.rows import content_chars, list_offsets

_PRIME = np.uint64(0x100000001B3)
SEED = 0x5EED5


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


_JAMO = ((0x1100, 0x1200), (0x3130, 0x3190), (0xA960, 0xA980), (0xD7B0, 0xD800))


@lru_cache(maxsize=1)
def code_point_classes() -> np.ndarray:
    """Per BMP code point, what the tokenizer may do with it in a row that was not
    normalized: `SEPARATOR`, `WORD` (kept as it is), or `COMPLEX` (the row goes through
    `normalize` first).

    Read off `normalize` itself, one character at a time, and kept only where context
    cannot change the answer: a word character is one `normalize` leaves as it is (NFKC,
    lower case, a letter or a digit); a separator is one it turns into a space, being
    NFKC-stable punctuation, a symbol or a space, or becoming ASCII punctuation other than
    a comma (whose place in "1,000" matters). Marks, Hangul jamo (NFKC composes them with
    their neighbours), unassigned, control and format characters, and anything where
    Python's and Arrow's NFKC disagree stay `COMPLEX`.
    """
    import unicodedata

    from curate.dedup.kernels import SEPARATOR, WORD

    cps = np.array([cp for cp in range(0x80, 0x10000) if not 0xD800 <= cp < 0xE000])
    chars = [chr(cp) for cp in cps.tolist()]
    text = pa.array(chars, pa.large_string())
    normalized = normalize(text).to_pylist()
    nfkc = pc.utf8_normalize(text, "NFKC").to_pylist()
    kind = np.array([unicodedata.category(c)[0] for c in chars])
    plain = ~np.isin(kind, ["M", "C"])
    plain &= np.array([unicodedata.combining(c) == 0 for c in chars])
    plain &= np.array(
        [k == unicodedata.normalize("NFKC", c) for c, k in zip(chars, nfkc, strict=True)]
    )
    for lo, hi in _JAMO:
        plain &= (cps < lo) | (cps >= hi)
    stable = np.array([k == c for c, k in zip(chars, nfkc, strict=True)])
    same = np.array([o == c for c, o in zip(chars, normalized, strict=True)])
    blank = np.array([o.strip(" \t\n\r\f\v") == "" for o in normalized])
    ascii_punct = np.array(
        [all(c < "\x80" and not c.isalnum() and c != "," for c in k) for k in nfkc]
    )
    word = plain & same & stable & np.isin(kind, ["L", "N"])
    separator = plain & blank & ((stable & np.isin(kind, ["P", "S", "Z"])) | ascii_punct)
    classes = np.zeros(0x10000, dtype=np.uint8)
    classes[cps[separator]] = SEPARATOR
    classes[cps[word]] = WORD
    return classes


def text_bytes(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTF-8 bytes, row offsets, which rows the tokenizer decodes) of the texts for the
    compiled tokenizer.

    ASCII rows, and rows whose non-ASCII characters are all plain separators or word
    characters (`code_point_classes`: curly quotes, dashes, accented lower-case letters...),
    are left to the tokenizer, which lowers, drops thousands separators and splits them
    itself; the others are normalized first (`normalize`), and their non-ASCII bytes are
    then word bytes.
    """
    from curate.dedup.kernels import plain_rows

    text = pc.fill_null(text, "")
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if text.type != pa.large_string():
        text = text.cast(pa.large_string())
    raw, offsets = _buffers(text)
    decode = pc.invert(pc.string_is_ascii(text)).to_numpy(zero_copy_only=False)
    if decode.any():
        classes = code_point_classes()
        candidates = np.nonzero(decode)[0]
        complex_rows = candidates[~plain_rows(raw, offsets, candidates, classes)]
        if len(complex_rows):
            mask = np.zeros(len(text), dtype=bool)
            mask[complex_rows] = True
            text = pc.replace_with_mask(
                text,
                pa.array(mask),
                normalize(text.take(pa.array(complex_rows))).cast(pa.large_string()),
            )
            raw, offsets = _buffers(text)
            decode[complex_rows] = False
    return raw, offsets, decode


def _buffers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    _, offs_buf, data = text.buffers()
    offsets = np.frombuffer(offs_buf, dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return raw, offsets


def words(text: pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Word hashes (uint64) of every row, flattened, with the rows' offsets and the words
    (`kernels.tokenize` over `text_bytes`)."""
    from curate.dedup.kernels import BYTES, tokenize

    alphabet = (BYTES, code_point_classes())
    out, word_offs, row_words, hashes = tokenize(text_bytes(text), np.uint64(SEED), alphabet)
    flat = pa.LargeStringArray.from_buffers(len(hashes), pa.py_buffer(word_offs), pa.py_buffer(out))
    return hashes, row_words, flat


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
