"""The template probe: what a chat template writes around an answer, learned from the
template itself (never from a per-model table), or the template refused.

It renders small conversations with sentinel contents and learns:
- the **end-of-turn** token: the special token the template writes right after an answer
  (only whitespace between). The one after the conversation's last answer is the one a model
  learns to stop at; a template that leaves that turn open is refused, as is one that never
  closes a turn. An earlier turn may be closed by another token where that token also
  closes user turns (a turn separator, e.g. gpt-oss's `<|end|>` before `<|return|>`);
  otherwise earlier answers are not closed, and rows holding one are rejected (`missing_eos`).
- the **assistant header**: the text the generation prompt opens (`<|im_start|>assistant\\n`,
  ...) that every assistant turn of a full render starts with, cut back to a token boundary
  of the render. It must occur once per assistant turn. Without one (the generation prompt
  adds nothing), turns are located by rendering each prompt, which must then be a prefix of
  the full render; where neither works the template is refused: answers are never located
  by searching for their text.
- whether prompt renders are prefixes of the full render, and whether the template rewrites
  earlier turns (e.g. drops their reasoning) — properties masks built from prefixes depend on;
- whether `{% generation %}` blocks define the trained tokens; they must then hold the
  end-of-turn token, or the model never learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from curate.errors import UserError

if TYPE_CHECKING:
    from curate.validators.target import Target

# Sentinel contents: plain words no template touches, each tokenized on its own.
PROBE_USER = ("probe user bravo", "probe user charlie")
PROBE_ANSWER = ("probe answer delta", "probe answer echo")
PROBE_REASONING = "probe reasoning foxtrot"
_WHITESPACE = " \t\n\r"


class TemplateProblem(UserError):
    """A chat template that cannot be trained on safely, found before the build."""


@dataclass(frozen=True)
class TemplateProbe:
    header: str  # text that opens an assistant turn in the full render ("" if none found)
    end_of_turn: str  # the special token the template writes after the last assistant turn
    closers: tuple[str, ...]  # tokens that close an assistant turn (end_of_turn first)
    closes_earlier_turns: bool  # False: an answer another turn follows is left open
    prefix_property: bool  # prompt render (generation prompt) is a prefix of the full render
    rewrites_turns: bool  # an assistant turn renders differently once later turns follow
    generation_markers: bool = False  # `{% generation %}` blocks define the trained tokens
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "assistant_header": self.header,
            "end_of_turn": self.end_of_turn,
            "turn_closers": list(self.closers),
            "closes_earlier_turns": self.closes_earlier_turns,
            "prefix_property": self.prefix_property,
            "rewrites_earlier_turns": self.rewrites_turns,
            "generation_markers": self.generation_markers,
            "mask_rule": (
                "generation_blocks" if self.generation_markers else "header_to_end_of_turn"
            ),
            "notes": self.notes,
        }


def conversations() -> dict[str, list[dict[str, str]]]:
    user = [{"role": "user", "content": PROBE_USER[0]}]
    one = [*user, {"role": "assistant", "content": PROBE_ANSWER[0]}]
    two = [
        *one,
        {"role": "user", "content": PROBE_USER[1]},
        {"role": "assistant", "content": PROBE_ANSWER[1]},
    ]
    reasoning = [
        *user,
        {
            "role": "assistant",
            "content": f"<think>\n{PROBE_REASONING}\n</think>\n\n{PROBE_ANSWER[0]}",
        },
        *two[2:],
    ]
    return {"user": user, "one": one, "two": two, "reasoning": reasoning}


def probe_template(target: Target) -> TemplateProbe:
    """Learn the assistant header and end-of-turn token from the template; refuse bad ones."""
    from curate.validators.target import has_generation_markers

    render = target.render
    convs = conversations()
    try:
        full_one, full_two = render(convs["one"]), render(convs["two"])
        prompt = render(convs["user"], True)
        prompt_plain = render(convs["user"], False)
    except Exception as exc:
        raise TemplateProblem(
            f"tokenizer: the chat template cannot render a plain user/assistant conversation: {exc}"
        ) from exc
    notes: list[str] = []
    closers, closes_earlier = turn_closers(target, full_one, full_two, notes)
    header = assistant_header(target, prompt, prompt_plain, full_one, full_two, notes)
    prefix_ok, rewrites = prefix_properties(render, convs, notes)
    if not header and not prefix_ok:
        raise TemplateProblem(
            "tokenizer: curate cannot locate the assistant turns this chat template writes: "
            "it has no assistant header ending on a token boundary (one per assistant turn) "
            "and its prompt renders (add_generation_prompt=True) are not prefixes of the "
            "full render, so the trained tokens could only be guessed. A two-turn render: "
            f"{_shown(full_two)}"
        )
    markers = has_generation_markers(target.template)
    if markers:
        check_generation_blocks(target, convs["two"], closers)
    return TemplateProbe(
        header, closers[0], closers, closes_earlier, prefix_ok, rewrites, markers, notes
    )


def turn_closers(
    target: Target, full_one: str, full_two: str, notes: list[str]
) -> tuple[tuple[str, ...], bool]:
    """(the tokens that close assistant turns, last turn's first; whether answers another
    turn follows are closed too), or the template refused."""
    specials = target.special_tokens
    last = closer_after(full_two, PROBE_ANSWER[1], specials)
    only = closer_after(full_one, PROBE_ANSWER[0], specials)
    earlier = closer_after(full_two, PROBE_ANSWER[0], specials)
    eos = target.tokenizer.eos_token
    if last is None and only is None:
        if earlier is not None:
            raise TemplateProblem(
                "tokenizer: the chat template leaves the last assistant turn open: it writes "
                f"{earlier!r} after an answer another turn follows, but nothing after the "
                "conversation's last answer (a one-turn render ends "
                f"{_shown(full_one[-80:])}), so every row would train a model that never "
                "stops. Use a template that closes every assistant turn with the "
                f"end-of-turn token (the tokenizer's EOS is {eos!r})."
            )
        marker = closing_text(full_two, PROBE_ANSWER[0], PROBE_USER[1])
        if marker:
            raise TemplateProblem(
                f"tokenizer: the chat template closes assistant turns with {marker!r}, which "
                "this tokenizer does not hold as a special token (it would be split into "
                "ordinary tokens, and a model trained on it never learns one token to stop "
                "at): the template and the tokenizer do not match. Use the template written "
                f"for this tokenizer (its EOS is {eos!r}), or the tokenizer the template was "
                "written for."
            )
        raise TemplateProblem(
            "tokenizer: the chat template never closes an assistant turn with a special token "
            "(no end-of-turn/EOS token follows the answer), so a model trained on it never "
            "learns to stop. Use a template that ends each assistant turn with the end-of-turn "
            f"token (the tokenizer's EOS is {eos!r}). A one-turn render: {_shown(full_one)}"
        )
    end = last or only
    assert end is not None
    if only is not None and last is not None and only != last:
        notes.append(
            f"a one-turn conversation ends with {only!r}, a two-turn one with {last!r}: "
            f"{last!r} is taken as the end of turn"
        )
    if earlier == end:
        return (end,), True
    if earlier is not None and closer_after(full_two, PROBE_USER[1], specials) == earlier:
        notes.append(
            f"answers another turn follows are closed with {earlier!r} (which also closes "
            f"user turns), the last answer with {end!r}: both are trained as the end of turn"
        )
        return (end, earlier), True
    notes.append(
        f"an answer another turn follows is not closed with {end!r}: rows with such turns "
        "are rejected as missing_eos"
    )
    return (end,), False


def assistant_header(
    target: Target, prompt: str, prompt_plain: str, full_one: str, full_two: str, notes: list[str]
) -> str:
    """The text every assistant turn opens with: what the generation prompt adds and the
    full render writes before an answer, cut back to a token boundary of the render; "" when
    there is none, or it does not occur once per assistant turn."""
    generation = prompt[len(prompt_plain) :] if prompt.startswith(prompt_plain) else ""
    start = full_one.find(PROBE_ANSWER[0])
    rendered = full_one[len(prompt_plain) : start] if full_one.startswith(prompt_plain) else ""
    common = _common_prefix(generation, rendered)
    enc = target.tokenizer.backend_tokenizer.encode(full_one, add_special_tokens=False)
    starts = {s for s, _ in enc.offsets} | {len(full_one)}
    cut = next((k for k in range(len(common), 0, -1) if len(prompt_plain) + k in starts), 0)
    header = common[:cut]
    if cut < len(common):
        notes.append(
            f"the generation prompt {common!r} ends inside a token of the render: the header "
            f"is taken as {header!r}"
        )
    if not generation:
        notes.append("add_generation_prompt adds nothing: turns are located by rendering prefixes")
    if header and full_two.count(header) != 2:
        notes.append(
            f"the assistant header {header!r} occurs {full_two.count(header)} times in a "
            "render with 2 assistant turns: turns are located by rendering prefixes"
        )
        header = ""
    return header


def prefix_properties(render, convs: dict[str, list[dict[str, str]]], notes: list[str]):
    """(every prompt render is a prefix of the full render; the template rewrites earlier
    turns once later ones follow), over the probe's conversations."""
    prefix_ok, rewrites = True, False
    for name in ("one", "two", "reasoning"):
        conv = convs[name]
        try:
            full = render(conv)
        except Exception:  # noqa: BLE001 - a template may refuse the probe's reasoning turn
            continue
        for i, msg in enumerate(conv):
            if msg["role"] != "assistant":
                continue
            try:
                before = render(conv[:i], True)
                upto = render(conv[: i + 1], False)
            except Exception:  # noqa: BLE001
                continue
            if not full.startswith(before) and prefix_ok:
                prefix_ok = False
                notes.append(
                    f"the prompt render up to assistant turn {i} (add_generation_prompt=True) is "
                    "not a prefix of the full render: masks are computed from the spans in the "
                    "full render"
                )
            if i < len(conv) - 1 and not full.startswith(upto) and not rewrites:
                rewrites = True
                notes.append(
                    f"assistant turn {i} renders differently once later turns follow (the "
                    "template rewrites earlier turns, e.g. drops their reasoning): trained "
                    "tokens are those of the full render"
                )
    return prefix_ok, rewrites


def check_generation_blocks(
    target: Target, conv: list[dict[str, str]], closers: tuple[str, ...]
) -> None:
    """A template's `{% generation %}` blocks must each hold an answer and its end of turn."""
    text, spans = target.render_marked(conv)
    blocks = [text[a:b] for a, b in spans]
    if len(blocks) != 2:
        raise TemplateProblem(
            "tokenizer: the chat template has {% generation %} markers but renders "
            f"{len(blocks)} generation blocks for 2 assistant turns; each assistant answer, "
            f"with its end-of-turn token, belongs in one. A two-turn render: {_shown(text)}"
        )
    for block, answer in zip(blocks, PROBE_ANSWER, strict=True):
        if answer not in block or not any(c in block for c in closers):
            raise TemplateProblem(
                "tokenizer: the chat template's {% generation %} block does not hold the "
                f"answer and its end-of-turn token {closers[0]!r} (it holds {_shown(block)}): "
                "a model trained on it never learns to stop. Move the end-of-turn token "
                "inside {% generation %} ... {% endgeneration %}."
            )


def closer_after(rendered: str, content: str, specials: tuple[str, ...]) -> str | None:
    """The special token right after `content` in `rendered` (only whitespace between)."""
    pos = rendered.find(content)
    if pos < 0:
        return None
    after = pos + len(content)
    while after < len(rendered) and rendered[after] in _WHITESPACE:
        after += 1
    return next((t for t in specials if rendered.startswith(t, after)), None)


def closing_text(rendered: str, answer: str, next_content: str) -> str | None:
    """What the template writes between an answer and the next turn's header, when it looks
    like a marker (`<|eot|>`, `</s>`, `[/INST]`...) rather than plain whitespace."""
    import re

    start = rendered.find(answer)
    stop = rendered.find(next_content, start + 1) if start >= 0 else -1
    if stop < 0:
        return None
    between = rendered[start + len(answer) : stop]
    marker = re.search(r"<[^<>\s]{1,40}>|\[/?[A-Z_]{2,20}\]", between)
    return marker.group(0) if marker else None


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _shown(text: str, limit: int = 300) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
