"""The target tokenizer and chat template: loading, fingerprints and the template probe.

`load_target` loads the tokenizer named by `[tokenizer]` (a local folder, a `.gguf` file, or a
hub id when online), applies the optional chat-template override and fingerprints both. The
probe renders small conversations with sentinel contents to learn, from the template itself
and never from a per-model table:
- the assistant header the generation prompt opens (`<|im_start|>assistant\\n`, ...);
- the end-of-turn marker that closes an assistant turn (`<|im_end|>`, `<|eot_id|>`, ...);
- whether the prompt render (`add_generation_prompt=True`) is a prefix of the full render,
  and whether the template rewrites earlier turns (e.g. drops their reasoning) — both
  properties completion masks built from prefixes silently depend on.
A template that never closes an assistant turn is refused before any row is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.fsio import atomic_path, sha256_file

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)

# Sentinel contents: plain words no template touches, each tokenized on its own.
PROBE_SYSTEM = "probe system alpha"
PROBE_USER = ("probe user bravo", "probe user charlie")
PROBE_ANSWER = ("probe answer delta", "probe answer echo")
PROBE_REASONING = "probe reasoning foxtrot"


class TemplateProblem(UserError):
    """A chat template that cannot be trained on safely, found before the build."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TemplateProbe:
    header: str  # text that opens an assistant turn in the full render ("" if none found)
    end_of_turn: str  # the special token that closes an assistant turn
    closes_final_turn: bool  # False: the last assistant turn is left open (rows get missing_eos)
    prefix_property: bool  # prompt render (generation prompt) is a prefix of the full render
    rewrites_turns: bool  # an assistant turn renders differently once later turns follow
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "assistant_header": self.header,
            "end_of_turn": self.end_of_turn,
            "closes_final_turn": self.closes_final_turn,
            "prefix_property": self.prefix_property,
            "rewrites_earlier_turns": self.rewrites_turns,
            "notes": self.notes,
        }


@dataclass
class Target:
    """A loaded tokenizer with its effective chat template, fingerprints and probe."""

    tokenizer: Any
    template: str
    load_dir: str  # a folder AutoTokenizer loads quickly (a plain copy for a .gguf source)
    trust_remote_code: bool
    fingerprint: dict[str, Any]
    special_tokens: tuple[str, ...]  # strings a row may not contain (injection)
    probe: TemplateProbe | None = None
    _render: Any = field(default=None, repr=False, compare=False)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        # bound once per target: this runs for every row
        if self._render is None:
            self._render = renderer(self.template, self.template_kwargs())
        return self._render(messages, add_generation_prompt)

    def template_kwargs(self) -> tuple[tuple[str, str], ...]:
        tok = self.tokenizer
        return tuple(
            sorted((k, v) for k, v in tok.special_tokens_map.items() if isinstance(v, str))
        )

    def token_id(self, text: str) -> int | None:
        ids = self.tokenizer.convert_tokens_to_ids([text])
        return ids[0] if ids and ids[0] != self.tokenizer.unk_token_id else None


@lru_cache(maxsize=8)
def renderer(template: str, kwargs: tuple[tuple[str, str], ...]):
    """`render(messages, add_generation_prompt)` with the template compiled once.

    The compiled template and keyword arguments are those `apply_chat_template` uses (the
    sandboxed environment of transformers, with `raise_exception`, `strftime_now` and the
    tokenizer's special tokens); calling it directly skips the per-call conversions of the
    messages, which are plain JSON already. `tests/test_template.py` checks both agree.
    """
    from transformers.utils.chat_template_utils import _compile_jinja_template

    compiled = _compile_jinja_template(template)
    extra = dict(kwargs)

    def render(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        return compiled.render(
            messages=messages,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **extra,
        )

    return render


def _silence_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    try:
        from transformers.utils import logging

        logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is checked by the caller
        pass


def load_target(
    path: str,
    base_dir: Path,
    chat_template: str | None,
    trust_remote_code: bool,
    cache_dir: Path | None,
) -> Target:
    """Load and fingerprint the tokenizer and template; errors name the key and the fix."""
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UserError(
            "[tokenizer] needs transformers and jinja2: pip install 'curate[tokenize]'"
        ) from exc
    _silence_transformers()
    from transformers import AutoTokenizer

    local = Path(path) if Path(path).is_absolute() else base_dir / path
    files: dict[str, str] = {}
    try:
        if local.is_file() and local.suffix == ".gguf":
            files[local.name] = sha256_file(local)
            tok = AutoTokenizer.from_pretrained(
                str(local.parent), gguf_file=local.name, trust_remote_code=trust_remote_code
            )
        elif local.is_dir():
            files = {
                name: sha256_file(local / name)
                for name in TOKENIZER_FILES
                if (local / name).is_file()
            }
            tok = AutoTokenizer.from_pretrained(str(local), trust_remote_code=trust_remote_code)
        elif local.exists():
            raise UserError(
                f"tokenizer.path: {path!r} is neither a tokenizer folder nor a .gguf file"
            )
        else:  # a hub id: works when the hub can be reached or the id is in the local cache
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except UserError:
        raise
    except Exception as exc:
        where = local if local.exists() else path
        raise UserError(
            f"tokenizer.path: cannot load a tokenizer from {where}: {exc}. Give a local "
            "folder holding tokenizer.json / tokenizer_config.json, a .gguf file, or a hub id "
            "while online."
        ) from exc
    if not getattr(tok, "is_fast", False):
        raise UserError(
            f"tokenizer.path: {path!r} loads a slow (Python) tokenizer; curate needs a fast "
            "tokenizer (tokenizer.json) for offsets. Convert it with "
            "`AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(dir)`."
        )
    if chat_template is not None:
        template_path = Path(chat_template)
        if not template_path.is_absolute():
            template_path = base_dir / template_path
        try:
            template = template_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"tokenizer.chat_template: cannot read {template_path}: {exc.strerror}"
            ) from exc
        tok.chat_template = template
    template = tok.chat_template
    if isinstance(template, dict):  # several named templates: the default one is used
        template = template.get("default") or next(iter(template.values()))
    if not template:
        raise UserError(
            f"tokenizer: {path!r} has no chat template; set tokenizer.chat_template to a "
            ".jinja file"
        )
    content = _content_sha256(tok)
    load_dir = str(local) if local.is_dir() else None
    if load_dir is None:  # a .gguf or hub tokenizer: keep a plain copy workers load quickly
        if cache_dir is None:
            raise UserError("tokenizer: a .gguf or hub tokenizer needs a store to cache it in")
        copy = cache_dir / content
        if not (copy / "tokenizer.json").exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            try:
                with atomic_path(copy, is_dir=True) as tmp:
                    tok.save_pretrained(str(tmp))
            except OSError:  # another build cached it first
                pass
        load_dir = str(copy)
    specials = sorted(
        {
            t.content
            for t in tok.added_tokens_decoder.values()
            if t.special and t.content and not t.content.isspace()
        }
        | {t for t in tok.all_special_tokens if t and not t.isspace()},
        key=lambda s: (-len(s), s),
    )
    fingerprint = {
        "path": path,
        "files": files,
        "sha256": content,
        "chat_template_sha256": sha256_text(template),
        "chat_template_source": "override" if chat_template is not None else "tokenizer",
        "eos_token": tok.eos_token,
        "bos_token": tok.bos_token,
        "pad_token": tok.pad_token,
        "vocab_size": len(tok),
    }
    target = Target(tok, template, load_dir, trust_remote_code, fingerprint, tuple(specials))
    target.probe = probe_template(target)
    _LOADED[(load_dir, template)] = target
    return target


_LOADED: dict[tuple[str, str], Target] = {}


def target_in_worker(load_dir: str, template: str, trust_remote_code: bool) -> Target:
    """The target in this process: the one loaded here (or inherited by fork), else reloaded."""
    key = (load_dir, template)
    if key not in _LOADED:
        tok = load_tokenizer_dir(load_dir, trust_remote_code)
        tok.chat_template = template
        _LOADED[key] = Target(tok, template, load_dir, trust_remote_code, {}, ())
    return _LOADED[key]


def load_tokenizer_dir(folder: str, trust_remote_code: bool = False) -> Any:
    _silence_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


def _content_sha256(tok: Any) -> str:
    """What the tokenizer does, independent of the files it came from (folder or .gguf)."""
    backend = json.loads(tok.backend_tokenizer.to_str())
    blob = {
        "backend": backend,
        "special_tokens": {k: v for k, v in sorted(tok.special_tokens_map.items())},
    }
    return sha256_text(json.dumps(blob, sort_keys=True, ensure_ascii=False))


# ---------------------------------------------------------------------------------------
# the probe


def probe_template(target: Target) -> TemplateProbe:
    """Learn the assistant header and end-of-turn marker from the template; refuse bad ones."""
    render = target.render
    specials = target.special_tokens
    user = [{"role": "user", "content": PROBE_USER[0]}]
    one = [*user, {"role": "assistant", "content": PROBE_ANSWER[0]}]
    two = [
        *one,
        {"role": "user", "content": PROBE_USER[1]},
        {"role": "assistant", "content": PROBE_ANSWER[1]},
    ]
    try:
        full_one, full_two = render(one), render(two)
        prompt = render(user, True)
        prompt_plain = render(user, False)
    except Exception as exc:
        raise TemplateProblem(
            f"tokenizer: the chat template cannot render a plain user/assistant conversation: {exc}"
        ) from exc
    notes: list[str] = []
    # the generation prompt as the template writes it, and the header an assistant turn
    # really has in a full render: the part they share is where trained tokens start
    generation = prompt[len(prompt_plain) :] if prompt.startswith(prompt_plain) else ""
    start = full_one.find(PROBE_ANSWER[0])
    rendered_header = full_one[len(prompt_plain) : start] if start >= 0 else ""
    header = _common_prefix(generation, rendered_header)
    if not generation:
        notes.append("add_generation_prompt adds nothing: turns are located by rendering prefixes")

    closing_mid = _closing_token(full_two, PROBE_ANSWER[0], PROBE_USER[1], specials)
    closing_last = _closing_token(full_two, PROBE_ANSWER[1], None, specials)
    closing_one = _closing_token(full_one, PROBE_ANSWER[0], None, specials)
    end_of_turn = closing_last or closing_one or closing_mid
    if end_of_turn is None and (closer := _closing_text(full_two, PROBE_ANSWER[0], PROBE_USER[1])):
        raise TemplateProblem(
            f"tokenizer: the chat template closes assistant turns with {closer!r}, which this "
            "tokenizer does not hold as a special token (it would be split into ordinary "
            "tokens, and a model trained on it never learns one token to stop at): the "
            "template and the tokenizer do not match. Use the template written for this "
            f"tokenizer (its EOS is {target.tokenizer.eos_token!r}), or the tokenizer the "
            "template was written for."
        )
    if end_of_turn is None:
        raise TemplateProblem(
            "tokenizer: the chat template never closes an assistant turn with a special token "
            "(no end-of-turn/EOS token follows the answer), so a model trained on it never "
            "learns to stop. Use a template that ends each assistant turn with the end-of-turn "
            f"token (the tokenizer's EOS is {target.tokenizer.eos_token!r})."
        )
    closes_final = closing_last == end_of_turn and closing_one == end_of_turn
    if not closes_final:
        notes.append(
            f"the last assistant turn is not closed with {end_of_turn!r}: rows ending with an "
            "assistant turn are rejected as missing_eos"
        )

    prefix_ok = True
    rewrites = False
    reasoning = [
        *user,
        {
            "role": "assistant",
            "content": f"<think>\n{PROBE_REASONING}\n</think>\n\n{PROBE_ANSWER[0]}",
        },
        {"role": "user", "content": PROBE_USER[1]},
        {"role": "assistant", "content": PROBE_ANSWER[1]},
    ]
    for conv in (one, two, reasoning):
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
    return TemplateProbe(header, end_of_turn, closes_final, prefix_ok, rewrites, notes)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _closing_text(rendered: str, answer: str, next_content: str) -> str | None:
    """What the template writes between an answer and the next turn's header, when it looks
    like a marker (`<|eot|>`, `</s>`, `[/INST]`...) rather than plain whitespace."""
    start = rendered.find(answer)
    stop = rendered.find(next_content, start + 1) if start >= 0 else -1
    if stop < 0:
        return None
    between = rendered[start + len(answer) : stop]
    marker = re.search(r"<[^<>\s]{1,40}>|\[/?[A-Z_]{2,20}\]", between)
    return marker.group(0) if marker else None


def _closing_token(
    rendered: str, answer: str, next_content: str | None, specials: tuple[str, ...]
) -> str | None:
    """The first special token after `answer` (and before the next turn's content)."""
    start = rendered.find(answer)
    if start < 0:
        return None
    start += len(answer)
    stop = rendered.find(next_content, start) if next_content else len(rendered)
    if stop < 0:
        stop = len(rendered)
    best: tuple[int, str] | None = None
    for token in specials:
        pos = rendered.find(token, start, stop)
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, token)
    return best[1] if best else None
