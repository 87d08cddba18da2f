"""How the gate scores an answer against its reference: exact match after normalization,
optionally of what a regex captures in both (GSM8K's `#### N`); refusals by the phrase rule
mining uses (`mining.rules.refused`)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import polars as pl

from curate.mining.rules import REFUSALS
from curate.mining.rules import refused as refused_by_phrases

NUMBER_COMMAS = re.compile(r"(?<=\d),(?=\d{3}\b)")
EDGE_PUNCT = ".,;:!?\"'`()[]{}$ "


def normalize(text: str | None) -> str:
    """NFKC, lowercase, spaces folded, thousands separators and the punctuation around
    the answer dropped: "$1,000." and "1000" are the same answer."""
    if text is None:
        return ""
    folded = " ".join(unicodedata.normalize("NFKC", text).lower().split())
    return NUMBER_COMMAS.sub("", folded).strip(EDGE_PUNCT)


def extract(pattern: re.Pattern[str] | None, text: str | None) -> str | None:
    """What the pattern's first group captures at its last match (a model's final answer
    comes last); the whole text without a pattern; None where it does not match."""
    if text is None:
        return None
    if pattern is None:
        return text
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - the last match is kept
        pass
    return found.group(1) if found else None


def exact_match(
    outputs: Sequence[str | None], references: Sequence[str], pattern: str | None = None
) -> np.ndarray:
    """Per item, whether the output's answer equals the reference's after `normalize`; an
    output the pattern does not match scores 0, a reference it does not match is the
    caller's problem (the gate checks references when it loads a set)."""
    compiled = re.compile(pattern) if pattern else None
    out = np.zeros(len(outputs), dtype=bool)
    for i, (output, reference) in enumerate(zip(outputs, references, strict=True)):
        got, want = extract(compiled, output), extract(compiled, reference)
        out[i] = got is not None and want is not None and normalize(got) == normalize(want)
    return out


def refused(answers: Sequence[str | None], phrases: tuple[str, ...] = REFUSALS) -> np.ndarray:
    """Per answer, whether it refuses (the phrase rule; the judge may replace it)."""
    return refused_by_phrases(pl.Series(answers, dtype=pl.String), phrases)
