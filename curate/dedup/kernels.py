"""Compiled kernels (numba) for the per-byte and per-shingle work of near dedup and
contamination: one pass per row over its bytes or its words, no Python loop per row.

- `tokenize`: ASCII lower case, thousands separators dropped exactly as two passes of the
  regex `(\\d),(\\d{3})` → `\\1\\2` do, every other ASCII character that is not a letter or a
  digit a separator. A non-ASCII character is a separator or a word character as the code
  point table says (`shingles.code_point_classes`), in rows whose every such character is
  in it; in rows that went through the Unicode normalization of `shingles.normalize`
  first, its bytes are word bytes. Words are written back to back (an Arrow string array
  without copies) and hashed (FNV-1a, then splitmix64's finalizer, seeded).
- `near_sketch`: per row, straight from its text, the hashes of its word n-grams, its
  one-permutation MinHash signature (densified as `minhash` describes), the LSH band
  hashes of that signature and its unique 32-bit shingle hashes.
- `pair_jaccard`: exact Jaccard of pairs of rows' unique shingle hashes, with a hash set.

Compiled once per machine (numba's cache beside this file, or its user cache where this
folder is read-only); a process loads the compiled code in a fraction of a second.
"""

from __future__ import annotations

import numpy as np
from numba import njit

EMPTY = np.uint32(0xFFFFFFFF)
COMPLEX, SEPARATOR, WORD = 0, 1, 2  # classes of BMP code points (`shingles.code_point_classes`)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _mix(x: np.uint64) -> np.uint64:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def _digit(c: np.uint8) -> bool:
    return bool(48 <= c <= 57)


@njit(cache=True, nogil=True)
def _thousands(src: np.ndarray, length: int, dst: np.ndarray) -> int:
    """One pass of `(\\d),(\\d{3})` → `\\1\\2` (leftmost, non-overlapping) from src to dst."""
    p = 0
    q = 0
    while p < length:
        if (
            p + 4 < length
            and src[p + 1] == 44
            and _digit(src[p])
            and _digit(src[p + 2])
            and _digit(src[p + 3])
            and _digit(src[p + 4])
        ):
            dst[q] = src[p]
            dst[q + 1] = src[p + 2]
            dst[q + 2] = src[p + 3]
            dst[q + 3] = src[p + 4]
            p += 5
            q += 4
        else:
            dst[q] = src[p]
            p += 1
            q += 1
    return q


def _byte_table() -> np.ndarray:
    """Per byte: what it becomes in a word (lower case), or 0 for a separator."""
    table = np.zeros(256, dtype=np.uint8)
    for c in range(256):
        if c >= 128 or chr(c).isdigit() or chr(c).islower():
            table[c] = c
        elif chr(c).isupper():
            table[c] = c + 32
    return table


BYTES = _byte_table()


@njit(cache=True, nogil=True)
def _split(
    src: np.ndarray,
    a: int,
    length: int,
    table: np.ndarray,
    classes: np.ndarray,
    decode: bool,
    start_hash: np.uint64,
    out: np.ndarray,
    q: int,
    word_offs: np.ndarray,
    hashes: np.ndarray,
    w: int,
    stop: bool,
) -> tuple[int, int, bool]:
    """Words of src[a:a+length] appended to out / word_offs / hashes from q / w; with
    `stop`, gives up (third value False) at a comma that follows a digit, where thousands
    separators may need rewriting first.

    With `decode`, a non-ASCII character is a separator or a word character as `classes`
    (per BMP code point) says; without it, its bytes are word bytes (a normalized row).
    """
    inside = False
    h = start_hash
    prev_digit = False
    cont = 0  # continuation bytes left of a multi-byte character
    cont_word = False
    for i in range(a, a + length):
        raw = src[i]
        if cont > 0:
            cont -= 1
            if cont_word:
                out[q] = raw
                q += 1
                h = (h ^ np.uint64(raw)) * _FNV_PRIME
            continue
        c = table[raw]
        if raw >= 192 and decode:
            if raw >= 224:
                cp = ((raw & 15) << 12) | ((src[i + 1] & 63) << 6) | (src[i + 2] & 63)
                cont = 2
            else:
                cp = ((raw & 31) << 6) | (src[i + 1] & 63)
                cont = 1
            cont_word = classes[cp] == WORD
            if not cont_word:
                c = 0
        if c != 0:
            if not inside:
                inside = True
                h = start_hash
            out[q] = c
            q += 1
            h = (h ^ np.uint64(c)) * _FNV_PRIME
            prev_digit = 48 <= c <= 57
            continue
        if stop and raw == 44 and prev_digit:
            return q, w, False
        prev_digit = False
        if inside:
            inside = False
            hashes[w] = _mix(h)
            w += 1
            word_offs[w] = q
    if inside:
        hashes[w] = _mix(h)
        w += 1
        word_offs[w] = q
    return q, w, True


@njit(cache=True, nogil=True)
def plain_rows(
    data: np.ndarray, offsets: np.ndarray, rows: np.ndarray, classes: np.ndarray
) -> np.ndarray:
    """Which of `rows` the tokenizer can take as they are: every non-ASCII character a
    whole BMP code point that `classes` calls a separator or a word character (`_split`
    decodes only such rows)."""
    ok = np.ones(len(rows), dtype=np.bool_)
    for k in range(len(rows)):
        r = rows[k]
        i = offsets[r]
        end = offsets[r + 1]
        while i < end:
            raw = data[i]
            if raw < 128:
                i += 1
                continue
            width = 3 if raw >= 224 else 2
            if raw >= 240 or raw < 192 or i + width > end:  # 4-byte, stray or cut short
                ok[k] = False
                break
            if raw >= 224:
                cp = ((raw & 15) << 12) | ((data[i + 1] & 63) << 6) | (data[i + 2] & 63)
                i += 3
            else:
                cp = ((raw & 31) << 6) | (data[i + 1] & 63)
                i += 2
            if classes[cp] == COMPLEX:
                ok[k] = False
                break
    return ok


@njit(cache=True, nogil=True)
def _row_words(
    data: np.ndarray,
    a: int,
    length: int,
    decode: bool,
    tok: tuple[np.ndarray, np.ndarray, np.uint64, np.ndarray, np.ndarray],
    out: np.ndarray,
    q: int,
    word_offs: np.ndarray,
    hashes: np.ndarray,
    w: int,
) -> tuple[int, int]:
    """The words of one row (data[a:a+length]) appended from q / w. `tok`: the byte table,
    the code point classes, the seeded start hash, and two scratch buffers of at least
    `length` bytes."""
    table, classes, start_hash, buf, tmp = tok
    q2, w2, done = _split(
        data, a, length, table, classes, decode, start_hash, out, q, word_offs, hashes, w, True
    )
    if done:
        return q2, w2
    # rewrite "1,000" as "1000" (two regex passes), then split that
    for i in range(length):
        buf[i] = data[a + i]
    length = _thousands(buf, length, tmp)
    length = _thousands(tmp, length, buf)
    q2, w2, _ = _split(
        buf, 0, length, table, classes, decode, start_hash, out, q, word_offs, hashes, w, False
    )
    return q2, w2


@njit(cache=True, nogil=True)
def _longest(offsets: np.ndarray) -> int:
    longest = 0
    for r in range(len(offsets) - 1):
        longest = max(longest, offsets[r + 1] - offsets[r])
    return longest


@njit(cache=True, nogil=True)
def _tokenizer(
    offsets: np.ndarray, seed: np.uint64, table: np.ndarray, classes: np.ndarray
) -> tuple[int, tuple[np.ndarray, np.ndarray, np.uint64, np.ndarray, np.ndarray]]:
    """The longest row, and `_row_words`' settings with scratch buffers for that row."""
    longest = _longest(offsets)
    scratch = (np.empty(longest, np.uint8), np.empty(longest, np.uint8))
    return longest, (table, classes, _FNV_OFFSET ^ seed, scratch[0], scratch[1])


@njit(cache=True, nogil=True)
def _word_space(most: int) -> tuple[np.ndarray, np.ndarray]:
    """Word offsets (from 0) and word hashes for up to `most` words: a word takes a byte
    and, but for a row's last, a separator, so a text of B bytes in R rows has at most
    B // 2 + R of them."""
    word_offs = np.empty(most + 1, dtype=np.int64)
    word_offs[0] = 0
    return word_offs, np.empty(most, dtype=np.uint64)


@njit(cache=True, nogil=True)
def tokenize(
    text: tuple[np.ndarray, np.ndarray, np.ndarray],
    seed: np.uint64,
    alphabet: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(word bytes back to back, word offsets, each row's first word, word hashes) of
    `text`: (UTF-8 bytes, row offsets, which rows to decode: `shingles.text_bytes`).
    `alphabet`: the byte table and the code point classes."""
    data, offsets, decode = text
    table, classes = alphabet
    rows = len(offsets) - 1
    total = offsets[rows] - offsets[0]
    out = np.empty(total, dtype=np.uint8)
    word_offs, hashes = _word_space(total // 2 + rows + 1)
    row_words = np.zeros(rows + 1, dtype=np.int64)
    _, tok = _tokenizer(offsets, seed, table, classes)
    q = 0  # bytes written to out
    w = 0  # words so far
    for r in range(rows):
        a = offsets[r]
        q, w = _row_words(data, a, offsets[r + 1] - a, decode[r], tok, out, q, word_offs, hashes, w)
        row_words[r + 1] = w
    return out[:q], word_offs[: w + 1], row_words, hashes[:w]


@njit(cache=True, nogil=True)
def near_sketch(
    text: tuple[np.ndarray, np.ndarray, np.ndarray],
    seed: np.uint64,
    alphabet: tuple[np.ndarray, np.ndarray],
    n: int,
    num_perm: int,
    probes: np.ndarray,
    bands: int,
    band_rows: int,
    loose_bands: int = 0,
    loose_rows: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row, from its text: (LSH band hashes rows × bands, shingle offsets per row,
    unique 32-bit shingle hashes, and a second set of band hashes rows × loose_bands over
    the same signature, for a looser threshold; none when loose_bands is 0).

    The row's words are hashed into scratch space, its word n-grams hashed (a row with fewer
    than n words but some has one shingle: all its words), its one-permutation MinHash
    signature densified, and each band of `band_rows` signature values hashed into one
    64-bit band hash; only the band hashes and the shingle sets leave the kernel.
    """
    data, offsets, decode = text
    table, classes = alphabet
    rows = len(offsets) - 1
    total = offsets[rows] - offsets[0]
    band_hash = np.zeros((rows, bands), dtype=np.uint64)
    loose_hash = np.zeros((rows, loose_bands), dtype=np.uint64)
    shingles = np.empty(total // 2 + rows + 1, dtype=np.uint32)  # ≤ words
    offs = np.zeros(rows + 1, dtype=np.int64)
    longest, tok = _tokenizer(offsets, seed, table, classes)
    out = np.empty(longest, dtype=np.uint8)
    word_offs, words = _word_space(longest // 2 + 1)
    sig = np.empty(num_perm, dtype=np.uint32)
    orig = np.empty(num_perm, dtype=np.uint32)
    table_u = np.empty(2 * _pow2(longest // 2 + 1), dtype=np.uint64)
    width = np.uint64(num_perm)
    k = 0
    for r in range(rows):
        a = offsets[r]
        _, length = _row_words(
            data, a, offsets[r + 1] - a, decode[r], tok, out, 0, word_offs, words, 0
        )
        count = max(length - n + 1, 1) if length > 0 else 0
        if count == 0:
            offs[r + 1] = k
            continue
        size = min(n, length)
        sig[:] = EMPTY
        for s in range(count):
            h = np.uint64(0)
            for j in range(size):
                h = h * _FNV_PRIME + words[s + j]
            h = _mix(h)
            low = np.uint32(h & _LOW)
            slot = ((h >> np.uint64(32)) * width) >> np.uint64(32)
            if low < sig[slot]:
                sig[slot] = low
            shingles[k + s] = low
        u = _unique(shingles, k, count, table_u)
        k += u
        offs[r + 1] = k
        # densify: an empty bin takes the value of the first non-empty bin along its probe
        # sequence, else of the next non-empty bin, circularly
        filled = 0
        for j in range(num_perm):
            orig[j] = sig[j]
            if sig[j] != EMPTY:
                filled += 1
        if filled < num_perm:
            for j in range(num_perm):
                if orig[j] != EMPTY:
                    continue
                done = False
                for t in range(probes.shape[1]):
                    v = orig[probes[j, t]]
                    if v != EMPTY:
                        sig[j] = v
                        done = True
                        break
                if not done:
                    for d in range(1, num_perm):
                        v = orig[(j + d) % num_perm]
                        if v != EMPTY:
                            sig[j] = v
                            break
        for b in range(bands):
            h = np.uint64(b)
            for c in range(b * band_rows, (b + 1) * band_rows):
                h = h * _FNV_PRIME + np.uint64(sig[c])
            band_hash[r, b] = _mix(h)
        for b in range(loose_bands):
            h = np.uint64(b)
            for c in range(b * loose_rows, (b + 1) * loose_rows):
                h = h * _FNV_PRIME + np.uint64(sig[c])
            loose_hash[r, b] = _mix(h)
    return band_hash, offs, shingles[:k], loose_hash


@njit(cache=True, nogil=True)
def _pow2(n: int) -> int:
    size = 1
    while size < n:
        size *= 2
    return size


@njit(cache=True, nogil=True)
def _unique(values: np.ndarray, start: int, count: int, table: np.ndarray) -> int:
    """Drop repeated values of values[start:start+count] in place (first occurrences kept,
    in order) with an open-addressing hash set; the number left."""
    size = _pow2(2 * count)
    mask = np.uint64(size - 1)
    table[:size] = 0
    u = 0
    for i in range(start, start + count):
        v = np.uint64(values[i]) + np.uint64(1)  # 0 marks an empty slot
        j = v & mask
        while True:
            t = table[j]
            if t == 0:
                table[j] = v
                values[start + u] = values[i]
                u += 1
                break
            if t == v:
                break
            j = (j + np.uint64(1)) & mask
    return u


@njit(cache=True, nogil=True)
def pair_jaccard(offs: np.ndarray, flat: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact Jaccard of rows a[i] and b[i] (each row's shingles unique): the smaller set
    goes into a hash set, the other's shingles are looked up in it."""
    out = np.zeros(len(a), dtype=np.float64)
    longest = 0
    for r in range(len(offs) - 1):
        longest = max(longest, offs[r + 1] - offs[r])
    table = np.empty(_pow2(2 * longest + 2), dtype=np.uint64)
    for p in range(len(a)):
        x, y = a[p], b[p]
        if offs[x + 1] - offs[x] > offs[y + 1] - offs[y]:
            x, y = y, x
        small = offs[x + 1] - offs[x]
        union = small + offs[y + 1] - offs[y]
        if union == 0:
            continue
        size = _pow2(2 * small + 2)
        mask = np.uint64(size - 1)
        table[:size] = 0
        for i in range(offs[x], offs[x + 1]):
            v = np.uint64(flat[i]) + np.uint64(1)
            j = v & mask
            while table[j] != 0:
                j = (j + np.uint64(1)) & mask
            table[j] = v
        inter = 0
        for i in range(offs[y], offs[y + 1]):
            v = np.uint64(flat[i]) + np.uint64(1)
            j = v & mask
            while True:
                t = table[j]
                if t == v:
                    inter += 1
                    break
                if t == 0:
                    break
                j = (j + np.uint64(1)) & mask
        out[p] = inter / (union - inter)
    return out
