"""Template validation: render, end-of-turn, special tokens, length, and the trained-token mask.

Per chat row: one render of the whole conversation with the target's chat template and one
tokenization with offsets (batched, in the fast tokenizer). The assistant turns are located
in the full render (after the assistant header the probe learned, up to and including the
end-of-turn token); their tokens are the trained tokens. So the mask always describes the
tokens that are really there, even for templates that rewrite earlier turns, and never a
prefix render that differs from the full one.

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

_WHITESPACE = " \t\n\r"


class _Reject(Exception):
    def __init__(self, reason: str, detail: dict[str, Any]):
        self.reason, self.detail = reason, detail


class TemplateStep(RowStep):
    name = "template"
    stage = "template"
    version = "2"
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
                    text, spans = self.render_spans(target.render, conv)
                    if kinds[r] == "preference":  # the rejected answer must render cleanly too
                        self.render_spans(target.render, messages[r] + (other[r] or []))
            except _Reject as exc:
                rejected[r] = (exc.reason, exc.detail)
                continue
            rows.append(r)
            texts.append(text)
            char_spans.append(spans)

        eot_id = target.token_id(self.probe.end_of_turn)
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
                ids, token_spans, cut, straddling = self.tokens(enc, spans, kind, eot_id, bos_id)
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

    def render_spans(self, render, conv: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """The full render and the character span of every assistant turn in it."""
        try:
            full = render(conv)
        except Exception as exc:  # noqa: BLE001 - any template failure is the row's verdict
            raise _Reject("template_error", {"error": _message(exc)}) from None
        turns = [i for i, m in enumerate(conv) if m["role"] == "assistant"]
        starts = self._turn_starts(render, full, conv, turns)
        end_token = self.probe.end_of_turn
        spans = []
        for j, (i, start) in enumerate(zip(turns, starts, strict=True)):
            limit = starts[j + 1] if j + 1 < len(starts) else len(full)
            end = _turn_end(full, conv[i]["content"], start, limit, end_token)
            if end is None:
                raise _Reject(
                    "missing_eos",
                    {"turn": i, "end_of_turn": end_token, "error": "assistant turn not closed"},
                )
            spans.append((start, end))
        return full, spans

    def _turn_starts(
        self, render, full: str, conv: list[dict[str, str]], turns: list[int]
    ) -> list[int]:
        header = self.probe.header
        if header:
            starts, pos = [], full.find(header)
            while pos >= 0:
                starts.append(pos + len(header))
                pos = full.find(header, pos + len(header))
            if len(starts) == len(turns):
                return starts
        # no header, or as many headers as turns cannot be told apart: render each prompt
        starts, cursor = [], 0
        for i in turns:
            try:
                before = render(conv[:i], True)
            except Exception as exc:  # noqa: BLE001
                raise _Reject("template_error", {"turn": i, "error": _message(exc)}) from None
            if full.startswith(before) and len(before) >= cursor:
                starts.append(len(before))
            else:
                found = full.find(conv[i]["content"].strip(), cursor)
                if found < 0:
                    raise _Reject(
                        "template_error",
                        {"turn": i, "error": "the template drops this assistant turn"},
                    )
                starts.append(found)
            cursor = starts[-1]
        return starts

    def tokens(
        self, enc, spans: list[tuple[int, int]], kind: str, eot_id: int | None, bos_id: int | None
    ) -> tuple[list[int], list[tuple[int, int]], int, list[tuple[int, int, int]]]:
        """Token ids, trained token spans, tokens cut, and the tokens that start in a turn's
        header and end in its answer, as (start char, end char, answer's first char)."""
        ids = enc.ids
        token_spans = []
        straddling: list[tuple[int, int, int]] = []
        for turn, (a, b) in enumerate(spans):
            first = _token_at(enc, a, len(ids))
            if first < len(ids) and enc.token_to_chars(first)[0] < a:
                # a token that starts in the header and ends in the answer: the prompt's
                # tokens are not a token prefix of the row's here; it counts as prompt, so
                # the answer's first characters are not trained
                s, e = enc.token_to_chars(first)
                straddling.append((s, e, a))
                first += 1
            last = _token_at(enc, b - 1, len(ids)) + 1
            if kind != "text" and (last <= first or ids[last - 1] != eot_id):
                raise _Reject(
                    "missing_eos",
                    {
                        "turn": turn,
                        "end_of_turn": self.probe.end_of_turn,
                        "error": "the turn's last token is not the end-of-turn token",
                    },
                )
            if last > first:
                token_spans.append((first, last))
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


def _token_at(enc, char: int, n: int) -> int:
    """The token covering character `char` (or the next one when none covers it)."""
    token = enc.char_to_token(char)
    if token is not None:
        return token
    starts = np.array([s for s, _ in enc.offsets])
    return min(int(np.searchsorted(starts, char, side="left")), n - 1)


def _turn_end(full: str, content: str, start: int, limit: int, end_token: str) -> int | None:
    """Where the assistant turn starting at `start` ends, its end-of-turn token included."""
    for probe in (content, content.strip()):
        pos = full.find(probe, start, limit) if probe else -1
        if pos >= 0:
            after = pos + len(probe)
            while after < limit and full[after] in _WHITESPACE:
                after += 1
            return after + len(end_token) if full.startswith(end_token, after) else None
    # rewritten by the template (trimmed, reasoning moved): the first end-of-turn in the turn
    pos = full.find(end_token, start, limit)
    return pos + len(end_token) if pos >= 0 else None


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
