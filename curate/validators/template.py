"""Template validation: render, end-of-turn, special tokens, length, and the trained-token mask.

Per chat row: one render of the whole conversation with the target's chat template and one
tokenization with offsets (batched, in the fast tokenizer). What is trained is read off that
full render, so the mask always describes the tokens that are really there, even for
templates that rewrite earlier turns:
- a template with `{% generation %}` blocks: every token that overlaps a block, exactly as
  transformers' `apply_chat_template(return_assistant_tokens_mask=True)` marks them (so the
  newline a block holds after `<|im_end|>` is trained, and a token straddling the block's
  start is too);
- any other template: each assistant turn from the answer's first token (after the header
  the probe learned, or the prompt render where the header is ambiguous) through the
  end-of-turn token, its trailing newline not trained. A token that starts in the header
  and ends in the answer is not trained (the prompt's tokens stay a token prefix of the
  row's), and counted in the manifest (`turns_with_token_across_turn_start`).
A text row trains every token but its first (which nothing predicts).

Rejections: `special_token_injection` (a message holds a special-token string), `template_error`
(the template raises, or the row has no trained token), `missing_eos` (an assistant turn does
not end with the end-of-turn token), `too_long` (over `max_length`, or, with
`on_too_long = "truncate_prompt"`, too long even once every prompt token before the first
answer is cut). Kept rows get `input_ids`, `mask_spans` (token ranges [start, end) that are
trained), `n_tokens`, `n_trained` and `tokens_cut`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.rows import TOKEN_FIELDS, list_offsets
from curate.steps import ReportView, RowStep, Verdicts
from curate.validators.target import TemplateProbe, target_in_worker


class _Reject(Exception):
    def __init__(self, reason: str, detail: dict[str, Any]):
        self.reason, self.detail = reason, detail


class TemplateStep(RowStep):
    name = "template"
    stage = "template"
    version = "3"
    index_columns: ClassVar[tuple[str, ...]] = (
        "n_tokens",
        "n_trained",
        "tokens_cut",
        "straddles",
        "turns",
        "straddle_example",
    )
    # statistics for the manifest's report on turns whose first token starts in the header
    index_only: ClassVar[tuple[str, ...]] = ("straddles", "turns", "straddle_example")

    def __init__(
        self,
        load_dir: str,
        template: str,
        trust_remote_code: bool,
        probe: TemplateProbe,
        special_tokens: tuple[str, ...],
        fingerprint: dict[str, Any],
        max_length: int,
        on_too_long: str,
    ):
        self.load_dir = load_dir
        self.template = template
        self.trust_remote_code = trust_remote_code
        self.probe = probe
        self.special_tokens = special_tokens
        self.tokenizer_sha256 = fingerprint["sha256"]
        self.template_sha256 = fingerprint["chat_template_sha256"]
        self.max_length = max_length
        self.on_too_long = on_too_long

    def params(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer_sha256,
            "chat_template": self.template_sha256,
            "end_of_turn": self.probe.end_of_turn,
            "mask_rule": self.probe.report()["mask_rule"],
            "max_length": self.max_length,
            "on_too_long": self.on_too_long,
        }

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        """Kept rows' assistant turns whose first token starts in the prompt: how many, of
        how many turns, and the first one (in canonical order) as an example."""
        kept = view.kept
        if "straddles" not in kept.columns:
            return {"tokenizer": {"turns_with_token_across_turn_start": 0}}
        examples: list[str] = (
            kept["straddle_example"].drop_nulls().to_list()
            if "straddle_example" in kept.columns
            else []
        )
        turns = int(kept["turns"].fill_null(0).sum()) if "turns" in kept.columns else 0
        return {
            "tokenizer": {
                "turns_with_token_across_turn_start": int(kept["straddles"].fill_null(0).sum()),
                "assistant_turns": turns,
                "token_across_turn_start_example": examples[0] if len(examples) else None,
            }
        }

    def __call__(self, batch: pa.Table) -> Verdicts:
        target = target_in_worker(self.load_dir, self.template, self.trust_remote_code)
        tok = target.tokenizer
        n = batch.num_rows
        rejected: dict[int, tuple[str, dict[str, Any]]] = dict(
            injections(batch, self.special_tokens)
        )
        kinds = batch.column("kind").to_pylist()
        messages = batch.column("messages").to_pylist()
        chosen = batch.column("chosen").to_pylist()
        other = batch.column("rejected").to_pylist()
        texts_col = batch.column("text").to_pylist()

        rows: list[int] = []
        texts: list[str] = []
        char_spans: list[list[tuple[int, int]]] = []
        for r in range(n):
            if r in rejected:
                continue
            try:
                if kinds[r] == "text":
                    text = texts_col[r] + (tok.eos_token or "")
                    spans = [(0, len(text))]
                else:
                    conv = messages[r] + (chosen[r] or [])
                    text, spans = self.render_spans(target, conv)
                    if kinds[r] == "preference":  # the rejected answer must render cleanly too
                        self.render_spans(target, messages[r] + (other[r] or []))
            except _Reject as exc:
                rejected[r] = (exc.reason, exc.detail)
                continue
            rows.append(r)
            texts.append(text)
            char_spans.append(spans)

        closers = frozenset(i for c in self.probe.closers if (i := target.token_id(c)) is not None)
        bos_id = tok.bos_token_id
        encodings = (
            tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
        )
        ids_out: list[list[int] | None] = [None] * n
        spans_out: list[list[dict[str, int]] | None] = [None] * n
        counts = np.zeros((n, 5), dtype=np.int32)
        examples: list[str | None] = [None] * n
        valid = np.zeros(n, dtype=bool)
        for r, enc, text, spans, kind in zip(
            rows, encodings, texts, char_spans, (kinds[r] for r in rows), strict=True
        ):
            try:
                ids, token_spans, cut, straddling = self.tokens(
                    enc, text, spans, kind, closers, bos_id
                )
            except _Reject as exc:
                rejected[r] = (exc.reason, exc.detail)
                continue
            ids_out[r] = ids
            spans_out[r] = [{"start": a, "end": b} for a, b in token_spans]
            trained = sum(b - a for a, b in token_spans)
            counts[r] = (len(ids), trained, cut, len(straddling), len(token_spans))
            if straddling:  # the first such token, as header part + answer part
                s, e, a = straddling[0]
                examples[r] = f"{text[s:a]!r} + {text[a:e]!r}"
            valid[r] = True

        columns = pa.table(
            {
                "input_ids": pa.array(ids_out, TOKEN_FIELDS[0].type),
                "mask_spans": pa.array(spans_out, TOKEN_FIELDS[1].type),
                "n_tokens": pa.array(counts[:, 0], pa.int32(), mask=~valid),
                "n_trained": pa.array(counts[:, 1], pa.int32(), mask=~valid),
                "tokens_cut": pa.array(counts[:, 2], pa.int32(), mask=~valid),
                "straddles": pa.array(counts[:, 3], pa.int32(), mask=~valid),
                "turns": pa.array(counts[:, 4], pa.int32(), mask=~valid),
                "straddle_example": pa.array(examples, pa.string()),
            }
        )
        if not rejected:
            return Verdicts.keep_all(n).with_columns(columns)
        order = sorted(rejected)
        reasons = pa.array([rejected[r][0] for r in order], pa.string())
        details = pa.array(
            [json.dumps(rejected[r][1], ensure_ascii=False, sort_keys=True) for r in order],
            pa.string(),
        )
        return Verdicts(n, np.asarray(order, dtype=np.int64), reasons, details, columns)

    # -- one row --------------------------------------------------------------------------

    def render_spans(self, target, conv: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """The full render and the character spans that are trained: the template's
        `{% generation %}` blocks where it has them, else every assistant turn from its
        header to its end-of-turn token."""
        try:
            if self.probe.generation_markers:
                return target.render_marked(conv)
            full = target.render(conv)
        except Exception as exc:  # noqa: BLE001 - any template failure is the row's verdict
            raise _Reject("template_error", {"error": _message(exc)}) from None
        turns = [i for i, m in enumerate(conv) if m["role"] == "assistant"]
        starts = self._turn_starts(target.render, full, conv, turns)
        spans = []
        for j, (i, start) in enumerate(zip(turns, starts, strict=True)):
            if i < len(conv) - 1 and not self.probe.closes_earlier_turns:
                raise _Reject(
                    "missing_eos",
                    {
                        "turn": i,
                        "end_of_turn": self.probe.end_of_turn,
                        "error": "the template does not close an assistant turn another turn follows",
                    },
                )
            limit = starts[j + 1] if j + 1 < len(starts) else len(full)
            end = _turn_end(full, start, limit, self.probe.closers)
            if end is None:
                raise _Reject(
                    "missing_eos",
                    {
                        "turn": i,
                        "end_of_turn": self.probe.end_of_turn,
                        "error": "assistant turn not closed",
                    },
                )
            spans.append((start, end))
        return full, spans

    def _turn_starts(
        self, render, full: str, conv: list[dict[str, str]], turns: list[int]
    ) -> list[int]:
        """Where each assistant turn's answer starts: after each occurrence of the header
        when there is one per turn, else at the end of the prompt render up to the turn
        (which must be a prefix of the full render). Never by searching for the answer."""
        header = self.probe.header
        if header:
            starts, pos = [], full.find(header)
            while pos >= 0:
                starts.append(pos + len(header))
                pos = full.find(header, pos + len(header))
            if len(starts) == len(turns):
                return starts
        starts, cursor = [], 0
        for i in turns:
            try:
                before = render(conv[:i], True)
            except Exception as exc:  # noqa: BLE001
                raise _Reject("template_error", {"turn": i, "error": _message(exc)}) from None
            if not full.startswith(before) or len(before) < cursor:
                raise _Reject(
                    "template_error",
                    {
                        "turn": i,
                        "error": "cannot locate this assistant turn: the assistant header "
                        f"{header!r} is not once per turn and the prompt render is not a "
                        "prefix of the full render",
                    },
                )
            starts.append(len(before))
            cursor = starts[-1]
        return starts

    def tokens(
        self,
        enc,
        text: str,
        spans: list[tuple[int, int]],
        kind: str,
        closers: frozenset[int],
        bos_id: int | None,
    ) -> tuple[list[int], list[tuple[int, int]], int, list[tuple[int, int, int]]]:
        """Token ids, trained token spans, tokens cut, and the tokens that start in a turn's
        header and end in its answer, as (start char, end char, answer's first char)."""
        ids = enc.ids
        straddling: list[tuple[int, int, int]] = []
        if kind == "text":  # all of it but the first token, which nothing predicts
            token_spans = [(1, len(ids))] if len(ids) > 1 else []
        elif self.probe.generation_markers:
            token_spans = overlap_spans(enc.offsets, spans)
        else:
            token_spans, straddling = derived_spans(enc, spans)
        if kind != "text":
            for turn, span in enumerate(token_spans):
                if not is_closed(ids, enc.offsets, text, span, closers):
                    raise _Reject(
                        "missing_eos",
                        {
                            "turn": turn,
                            "end_of_turn": self.probe.end_of_turn,
                            "error": "the turn's last token is not the end-of-turn token",
                        },
                    )
        if not token_spans:
            raise _Reject("template_error", {"error": "no trained tokens in the rendered row"})
        cut = 0
        if len(ids) > self.max_length:
            cut = len(ids) - self.max_length
            keep = 1 if bos_id is not None and ids and ids[0] == bos_id else 0
            prompt = token_spans[0][0] - keep
            if self.on_too_long != "truncate_prompt" or cut > prompt:
                detail: dict[str, Any] = {"tokens": len(ids), "max_length": self.max_length}
                if self.on_too_long == "truncate_prompt":
                    detail["prompt_tokens"] = prompt
                    detail["error"] = (
                        "cutting the whole prompt is not enough; answers are never cut"
                    )
                raise _Reject("too_long", detail)
            ids = ids[:keep] + ids[keep + cut :]
            token_spans = [(a - cut, b - cut) for a, b in token_spans]
        return ids, token_spans, cut, straddling


def derived_spans(
    enc, spans: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Trained token spans of a template without generation markers: each turn's tokens
    from its answer's first character through its end-of-turn token. A token that starts in
    the header and ends in the answer is not trained (the prompt's tokens must stay a token
    prefix of the row's); it is returned as (start char, end char, answer's first char)."""
    n = len(enc.ids)
    token_spans, straddling = [], []
    for a, b in spans:
        first = _token_at(enc, a, n)
        if first < n and enc.token_to_chars(first)[0] < a:
            s, e = enc.token_to_chars(first)
            straddling.append((s, e, a))
            first += 1
        last = _token_at(enc, b - 1, n) + 1
        if last > first:
            token_spans.append((first, last))
    return token_spans, straddling


def overlap_spans(
    offsets: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Trained token spans of a template with `{% generation %}` blocks: every token that
    overlaps a block, as transformers' `return_assistant_tokens_mask` marks them (a token
    whose end passes the block's start, before the block's end), in runs."""
    if not spans or not offsets:
        return []
    tok = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    blocks = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    at = np.searchsorted(blocks[:, 1], tok[:, 0], side="right")  # first block ending after it
    inside = at < len(blocks)
    inside[inside] = tok[inside, 1] > blocks[at[inside], 0]
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)
    )


def is_closed(
    ids: list[int], offsets, text: str, span: tuple[int, int], closers: frozenset[int]
) -> bool:
    """Does the trained span end with an end-of-turn token (whitespace after it allowed, as
    when a generation block holds the newline after `<|im_end|>`)."""
    a, k = span
    k -= 1
    while k > a and ids[k] not in closers and not text[offsets[k][0] : offsets[k][1]].strip():
        k -= 1
    return ids[k] in closers


def _token_at(enc, char: int, n: int) -> int:
    """The token covering character `char` (or the next one when none covers it)."""
    token = enc.char_to_token(char)
    if token is not None:
        return token
    starts = np.array([s for s, _ in enc.offsets])
    return min(int(np.searchsorted(starts, char, side="left")), n - 1)


def _turn_end(full: str, start: int, limit: int, closers: tuple[str, ...]) -> int | None:
    """Where the assistant turn starting at `start` ends: after the first end-of-turn token
    in it (an answer cannot hold one: that is a special-token injection, rejected before)."""
    found = [p + len(c) for c in closers if (p := full.find(c, start, limit)) >= 0]
    return min(found) if found else None


def _message(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _re2_literal(text: str) -> str:
    return "".join("\\" + c if c.isascii() and not c.isalnum() else c for c in text)


def injections(batch: pa.Table, special_tokens: tuple[str, ...]) -> dict[int, tuple[str, dict]]:
    """Rows whose content holds a special-token string, with the token and where it is."""
    if not special_tokens:
        return {}
    pattern = "|".join(_re2_literal(t) for t in special_tokens)
    found: dict[int, tuple[str, dict]] = {}
    for name in ("messages", "chosen", "rejected"):
        col = batch.column(name).combine_chunks()
        if col.null_count == len(col):
            continue
        items = col.flatten()
        contents = pc.fill_null(items.field("content"), "")
        hit = pc.match_substring_regex(contents, pattern).to_numpy(zero_copy_only=False)
        if not hit.any():
            continue
        offsets = list_offsets(col)
        owner = np.searchsorted(offsets, np.nonzero(hit)[0], side="right") - 1
        for item, row in zip(np.nonzero(hit)[0], owner, strict=True):
            if int(row) in found:
                continue
            text = contents[int(item)].as_py()
            token = next(t for t in special_tokens if t in text)
            turn = int(item - offsets[row])
            found[int(row)] = (
                "special_token_injection",
                {"field": f"{name}[{turn}].content", "token": token},
            )
    text = batch.column("text").combine_chunks()
    if text.null_count < len(text):
        hit = pc.fill_null(pc.match_substring_regex(text, pattern), False).to_numpy(
            zero_copy_only=False
        )
        for row in np.nonzero(hit)[0]:
            value = text[int(row)].as_py()
            token = next(t for t in special_tokens if t in value)
            found.setdefault(
                int(row), ("special_token_injection", {"field": "text", "token": token})
            )
    return found
