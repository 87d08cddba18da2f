"""Failure rules over production logs: each a reason, each configurable (`[rules]` of mine.toml).

A log row fails by every rule that fires on it (`reasons`); its `reason` is the most severe
of them. Rows no rule fires on and that carry a positive signal (thumbs up, a high automated
score, an answer valid in the format asked for) are the positive pool: what the model already
does well, which a mixture's `min_positive_share` draws from so that retraining on failures
does not break it. Latency outliers are reported, not failures.

The text rules run vectorized (polars string kernels: one pass over all answers); the ones
that must parse or score each answer (JSON validity, schemas, repetition loops, language)
look only at the rows they concern.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

# How bad each failure is for users: the queue's priority starts from it.
SEVERITY = {
    "missed_refusal": 5,
    "empty": 4,
    "invalid_json": 4,
    "schema_violation": 4,
    "unexpected_refusal": 3,
    "thumbs_down": 3,
    "truncated": 3,
    "degenerate": 3,
    "low_score": 2,
    "language_mismatch": 2,
}
RULES = tuple(SEVERITY)

# Openings and phrases of refusals (lowercase, curly quotes folded); pluggable in mine.toml.
REFUSALS = (
    "i can't help with",
    "i cannot help with",
    "i can't help you with",
    "i can't assist",
    "i cannot assist",
    "i can't provide",
    "i cannot provide",
    "i won't help",
    "i won't be able to",
    "i'm not able to help",
    "i am not able to help",
    "i'm unable to",
    "i am unable to",
    "i must decline",
    "i can't comply",
    "i cannot comply",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "sorry, i can't",
    "as an ai language model, i cannot",
)
# An answer that ends in one of these did not stop mid-sentence.
SENTENCE_ENDS = ".!?)\"'`]}»…:;*"
# a last line that is an answer format's end: `#### 42` (GSM8K), `Answer: B`, a list item
ANSWER_LINE = r"^\s*(?:#{2,}\s*\S|(?:final )?answer\s*[:=]|[-*•]\s|\d+[.)]\s)"


@dataclass
class RuleSettings:
    """What the rules compare against (mine.toml's `[rules]`)."""

    low_score: float = 0.5  # automated_score below this fails
    high_score: float = 0.8  # at or above this (with no failure) is a positive
    truncated_min_words: int = 20  # shorter answers are not judged cut mid-sentence
    degenerate_ngram: int = 4
    degenerate_max_repeated: float = 0.5
    degenerate_min_words: int = 30
    refusals: tuple[str, ...] = REFUSALS
    harmful: tuple[str, ...] = ()  # harmful requests (AdvBench-like), normalized
    safe: tuple[str, ...] = ()  # prompts that must be answered (XSTest-like)
    harmful_match: float = 0.7  # share of a listed request's word 3-grams the prompt holds
    languages: bool = True
    min_language_chars: int = 40
    schemas: dict[str, Any] = field(default_factory=dict)  # expected_format name → schema
    disabled: tuple[str, ...] = ()
    latency_mads: float = 5.0  # latency above median + this many MADs is an outlier


def judge(logs: pa.Table, settings: RuleSettings) -> pl.DataFrame:
    """Per log row: `reasons` (every rule that fired), `reason` (the most severe),
    `detail` (JSON: what each rule saw), `positive` and `folded` (the first answer folded). (Latency outliers need every row's
    latency: `latency_limit` over them.)"""
    frame = pl.from_arrow(logs)
    assert isinstance(frame, pl.DataFrame)
    n = frame.height
    answer = frame["responses"].list.first().fill_null("")
    prompt = (
        frame["messages"]
        .list.eval(
            pl.element().struct.field("content").filter(pl.element().struct.field("role") == "user")
        )
        .list.last()
        .fill_null("")
    )
    folded = fold(answer)
    fired: dict[str, np.ndarray] = {}
    details: dict[str, dict[int, Any]] = {}
    on = [r for r in RULES if r not in settings.disabled]

    fired["thumbs_down"] = (frame["feedback"] == "thumbs_down").fill_null(False).to_numpy()
    fired["low_score"] = (frame["score"] < settings.low_score).fill_null(False).to_numpy()
    fired["empty"] = (answer.str.strip_chars().str.len_chars() == 0).to_numpy()
    fired["truncated"] = _truncated(frame, answer, settings)
    refused = refusing(folded, settings.refusals)
    harmful = _listed(prompt, settings.harmful, settings.harmful_match)
    fired["missed_refusal"] = harmful & ~refused & ~fired["empty"]
    # a refusal is wrong only where a list says so: of a listed safe prompt, or of any
    # prompt not among the listed harmful ones; with no list, refusals are counted
    # (`refused`), not queued (a correct refusal is no failure)
    wrong = np.zeros(n, bool)
    if settings.safe:
        wrong |= _listed(prompt, settings.safe, settings.harmful_match)
    if settings.harmful:
        wrong |= ~harmful
    fired["unexpected_refusal"] = refused & wrong
    valid_format = np.zeros(n, dtype=bool)
    fired["invalid_json"], fired["schema_violation"], valid_format, details["format"] = _formats(
        frame, answer, settings
    )
    fired["degenerate"], details["degenerate"] = _degenerate(answer, folded, settings)
    if settings.languages and "language_mismatch" in on:
        fired["language_mismatch"], details["language"] = _languages(prompt, answer, settings)
    else:
        fired["language_mismatch"] = np.zeros(n, dtype=bool)

    hits = pl.DataFrame({r: fired[r] for r in on}, schema={r: pl.Boolean for r in on})
    by_severity = sorted(on, key=lambda r: -SEVERITY[r])
    verdict = hits.select(
        pl.concat_list([pl.when(pl.col(r)).then(pl.lit(r)) for r in on])
        .list.drop_nulls()
        .alias("reasons"),
        pl.coalesce([pl.when(pl.col(r)).then(pl.lit(r)) for r in by_severity]).alias("reason"),
    )
    failed = verdict["reason"].is_not_null().to_numpy()
    detail: list[str | None] = [None] * n
    for i, rs in zip(
        np.nonzero(failed)[0], verdict["reasons"].filter(failed).to_list(), strict=True
    ):
        detail[i] = _detail(int(i), rs, details, frame)
    good_signal = (
        (frame["feedback"] == "thumbs_up").fill_null(False).to_numpy()
        | (frame["score"] >= settings.high_score).fill_null(False).to_numpy()
        | valid_format
    )
    return frame.with_columns(
        verdict["reasons"],
        verdict["reason"],
        pl.Series("detail", detail, dtype=pl.String),
        pl.Series("positive", good_signal & ~failed),
        pl.Series("refused", refused),
        folded.alias("folded"),  # the first answer as self-consistency compares answers
        # whether the first answer parsed as JSON (null: no JSON expected), for the same
        pl.Series("parsed", ~fired["invalid_json"]).set(
            pl.Series(~_json_task(frame, settings)), None
        ),
    )


def refused(answers: pl.Series, phrases: tuple[str, ...] = REFUSALS) -> np.ndarray:
    """Per answer, whether it refuses: one of `phrases` in its folded text. The rule the
    mining rules and the release gate's safety suite share."""
    return refusing(fold(answers.fill_null("")), phrases)


def refusing(folded: pl.Series, phrases: tuple[str, ...]) -> np.ndarray:
    """`refused` on answers already folded (`fold`)."""
    return folded.str.contains_any(list(phrases)).fill_null(False).to_numpy()


def fold(text: Any) -> Any:
    """Lowercase with curly apostrophes and quotes made straight, spaces folded (a Series
    or an expression)."""
    return (
        text.str.to_lowercase()
        .str.replace_all("[\u2018\u2019\u02bc]", "'")
        .str.replace_all("[\u201c\u201d]", '"')
        # every whitespace run one space: only runs that are not already one space match
        # (`\s+` would rewrite every space, 5× slower on answers)
        .str.replace_all(r"\s{2,}|[^\S ]", " ")
    )


def _truncated(frame: pl.DataFrame, answer: pl.Series, settings: RuleSettings) -> np.ndarray:
    """Stopped by the length limit. Where the log says why the answer stopped (the OpenAI
    shape's `finish_reason`), that is the whole verdict; only where it does not, a long
    answer whose end closes no sentence and no known answer format (`#### 42`, a number, a
    code fence, a list item's last line) counts as cut."""
    reason = frame["finish_reason"]
    by_limit = (reason == "length").fill_null(False).to_numpy()
    unknown = reason.is_null().to_numpy()
    stripped = answer.str.strip_chars()
    last = stripped.str.slice(-1, 1)
    last_line = stripped.str.extract(r"([^\n]*)$", 1).fill_null("")
    closed = (
        last.is_in(list(SENTENCE_ENDS))
        | last.str.contains(r"[0-9]")
        | stripped.str.ends_with("```")
        | last_line.str.contains(ANSWER_LINE)
    ).to_numpy()
    open_end = unknown & ~closed
    cut = np.zeros(len(answer), dtype=bool)
    if open_end.any():  # words counted only where the end is open: most answers end a sentence
        words = answer.filter(pl.Series(open_end)).str.count_matches(r"\S+")
        cut[open_end] = (words >= settings.truncated_min_words).to_numpy()
    return by_limit | cut


def _listed(prompt: pl.Series, items: tuple[str, ...], match: float) -> np.ndarray:
    """Prompts that hold at least `match` of a listed prompt's word 3-grams (containment,
    so that a request wrapped in other words still matches): one join of the 3-grams of the
    prompts that hold any listed 3-gram as text (a substring search over all prompts at
    once) with the list's."""
    out = np.zeros(len(prompt), dtype=bool)
    if not items:
        return out
    listed = pl.DataFrame({"text": list(items)}).with_row_index("item")
    listed = (
        listed.with_columns(_trigrams(pl.col("text")).alias("gram"))
        .explode("gram")
        .filter(pl.col("gram") != "")
    )
    need = listed.group_by("item").agg(pl.col("gram").n_unique().alias("need"))
    # a prompt can hold a listed 3-gram only where its words, one space apart, hold it
    spaced = (
        prompt.str.to_lowercase()
        .str.replace_all("[\u2018\u2019]", "'")
        .str.replace_all(r"[^\w']{2,}|[^\w' ]", " ")  # as [^\w']+ → " ", single spaces untouched
    )
    maybe = spaced.str.contains_any(listed["gram"].unique().to_list()).to_numpy()
    if not maybe.any():
        return out
    asked = (
        pl.DataFrame({"text": prompt, "row": np.arange(len(prompt))})
        .filter(pl.Series(maybe))
        .with_columns(_trigrams(pl.col("text")).alias("gram"))
        .explode("gram")
        .filter(pl.col("gram") != "")
        .unique(["row", "gram"])
    )
    found = (
        asked.join(listed.select("item", "gram").unique(), on="gram")
        .group_by("row", "item")
        .len()
        .join(need, on="item")
        .filter(pl.col("len") >= match * pl.col("need"))
    )
    out[found["row"].unique().to_numpy()] = True
    return out


def _trigrams(text: pl.Expr) -> pl.Expr:
    """Word 3-grams of lowercased alphanumeric words (a text of fewer words: itself)."""
    words = (
        text.str.to_lowercase().str.replace_all("[\u2018\u2019]", "'").str.extract_all(r"[\w']+")
    )
    grams = words.list.eval(
        pl.concat_str(
            [pl.element(), pl.element().shift(-1), pl.element().shift(-2)], separator=" "
        ).drop_nulls()
    )
    return (
        pl.when(words.list.len() >= 3).then(grams).otherwise(pl.concat_list([words.list.join(" ")]))
    )


def _json_task(frame: pl.DataFrame, settings: RuleSettings) -> np.ndarray:
    """Rows that expect JSON: `json`, or the name of a schema in `settings.schemas`."""
    wanted = ["json", *settings.schemas]
    return frame["expected_format"].is_in(wanted).fill_null(False).to_numpy()


def _formats(
    frame: pl.DataFrame, answer: pl.Series, settings: RuleSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, Any]]:
    """(invalid_json, schema_violation, valid) per row, and what was wrong, for the rows
    that expect JSON (`json`, or the name of a schema in `settings.schemas`)."""
    n = frame.height
    invalid, violation, valid = (np.zeros(n, dtype=bool) for _ in range(3))
    found: dict[int, Any] = {}
    expected = frame["expected_format"].to_list()
    texts = answer.to_list()
    for i in np.nonzero(frame["expected_format"].is_not_null().to_numpy())[0].tolist():
        want = expected[i]
        if want != "json" and want not in settings.schemas:
            continue
        try:
            value = json.loads(texts[i])
        except json.JSONDecodeError as exc:
            invalid[i] = True
            found[i] = {"json_error": f"{exc.msg} at column {exc.colno}"}
            continue
        if want != "json":
            from jsonschema.validators import validator_for

            schema = settings.schemas[want]
            error = next(iter(validator_for(schema)(schema).iter_errors(value)), None)
            if error is not None:
                violation[i] = True
                found[i] = {"schema": want, "error": error.message[:200]}
                continue
        valid[i] = True
    return invalid, violation, valid, found


def _degenerate(
    answer: pl.Series, folded: pl.Series, settings: RuleSettings
) -> tuple[np.ndarray, dict[int, Any]]:
    """Repetition loops, by the same measure as builds' `degenerate` check (the share of
    an answer's word n-grams that repeat an earlier one), measured for every answer at once
    by a compiled kernel; the answers it flags are measured again by the step (which also
    names the loop's most repeated n-gram)."""
    from curate.mining.kernels import repeated_shares
    from curate.validators.quality import DegenerationStep

    k = settings.degenerate_ngram
    # lowercased, whitespace runs made single spaces (quotes folded too: that can only merge
    # words, so flag more, and the step measures every flagged answer again)
    text = folded.to_arrow().cast(pa.large_string())
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    _, offsets, data = text.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(1, np.uint8)
    shares, counts = repeated_shares(raw, offsets, k)
    fired = (counts >= settings.degenerate_min_words) & (shares >= settings.degenerate_max_repeated)
    step = DegenerationStep(k, settings.degenerate_max_repeated, settings.degenerate_min_words)
    found: dict[int, Any] = {}
    rows = np.nonzero(fired)[0]
    for i, said in zip(rows.tolist(), answer.gather(rows).to_list(), strict=True):
        loop = step.loop_in(said)
        if loop is None:  # a hash collision, or whitespace the regex and Python see apart
            fired[i] = False
        else:
            found[i] = loop
    return fired, found


def _languages(
    prompt: pl.Series, answer: pl.Series, settings: RuleSettings
) -> tuple[np.ndarray, dict[int, Any]]:
    """Answer language differs from the prompt's, where both are long enough to tell."""
    from curate.validators.quality import lid_model

    model = lid_model()
    out = np.zeros(len(prompt), dtype=bool)
    found: dict[int, Any] = {}
    long = (prompt.str.len_chars() >= settings.min_language_chars) & (
        answer.str.len_chars() >= settings.min_language_chars
    )
    rows = np.nonzero(long.to_numpy())[0]
    if len(rows) == 0:
        return out, found
    asked = [" ".join(t.split())[:2000] for t in prompt.gather(rows).to_list()]
    said = [" ".join(t.split())[:2000] for t in answer.gather(rows).to_list()]
    for i, a, b in zip(rows, asked, said, strict=True):
        (la,), _ = model.predict(a, k=1)
        (lb,), _ = model.predict(b, k=1)
        la, lb = la.removeprefix("__label__"), lb.removeprefix("__label__")
        if la != lb:
            out[i] = True
            found[int(i)] = {"prompt": la, "answer": lb}
    return out, found


def latency_limit(values: np.ndarray, mads: float) -> float:
    """Latencies above median + `mads` median absolute deviations are outliers (robust: a
    few very slow calls do not move the limit, as they would a mean and deviation)."""
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return median + mads * max(mad, 1e-9)


def _detail(
    i: int, reasons: list[str], details: dict[str, dict[int, Any]], frame: pl.DataFrame
) -> str | None:
    if not reasons:
        return None
    out: dict[str, Any] = {}
    for rule in reasons:
        if rule in ("invalid_json", "schema_violation") and i in details["format"]:
            out[rule] = details["format"][i]
        elif rule == "degenerate":
            out[rule] = details["degenerate"].get(i)
        elif rule == "language_mismatch":
            out[rule] = details["language"].get(i)
        elif rule == "low_score":
            out[rule] = {"score": frame["score"][i]}
        elif rule == "truncated":
            out[rule] = {"finish_reason": frame["finish_reason"][i]}
        else:
            out[rule] = {}
    return json.dumps(out, sort_keys=True, ensure_ascii=False)
