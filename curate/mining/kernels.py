"""Compiled kernel for the repetition measure over every answer of a block at once.

`repeated_shares` reads the answers' UTF-8 bytes in place (Arrow offsets and data; the
text lowercased and its whitespace runs made single spaces first, so that words split on
b" " are the words Python's `str.split` gives), hashes each word (FNV-1a, 64 bits) and each
run of `k` words, and counts the distinct runs by sorting their hashes. A hash collision can
only make an answer look more repetitive, never less, and every answer it flags is measured
again exactly in Python (`DegenerationStep.loop_in`): no loop is missed, none is invented.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
MIX = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True)
def repeated_shares(data: np.ndarray, offsets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per answer: the share of its `k`-word runs that repeat an earlier one, and its word
    count."""
    n = len(offsets) - 1
    shares = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    for r in range(n):
        a, b = offsets[r], offsets[r + 1]
        words = np.empty(b - a + 1, dtype=np.uint64)
        m = 0
        h = FNV_OFFSET
        inside = False
        for i in range(a, b):
            c = data[i]
            if c == 32:
                if inside:
                    words[m] = h
                    m += 1
                    inside = False
                    h = FNV_OFFSET
            else:
                h = (h ^ np.uint64(c)) * FNV_PRIME
                inside = True
        if inside:
            words[m] = h
            m += 1
        counts[r] = m
        total = m - k + 1
        if total <= 0:
            continue
        runs = np.empty(total, dtype=np.uint64)
        for i in range(total):
            g = np.uint64(0)
            for j in range(k):
                g = (g ^ words[i + j]) * MIX + np.uint64(j + 1)
            runs[i] = g
        runs.sort()
        distinct = 1
        for i in range(1, total):
            if runs[i] != runs[i - 1]:
                distinct += 1
        shares[r] = 1.0 - distinct / total
    return shares, counts
