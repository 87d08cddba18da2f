"""The target tokenizer and chat template: loading, fingerprints, renderers.

`load_target` loads the tokenizer named by `[tokenizer]` (a local folder, a `.gguf` file, or a
hub id when online), applies the optional chat-template override, fingerprints both, and
probes the template (`validators.probe`: header, end of turn, or the template refused before
any row is read). The renderers call the template as `apply_chat_template` does, compiled
once; `render_marked` also returns the `{% generation %}` blocks' character spans.
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
from curate.validators.probe import TemplateProbe, TemplateProblem, probe_template

__all__ = ["Target", "TemplateProbe", "TemplateProblem", "load_target", "target_in_worker"]

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


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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

    def render_marked(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """The full render and the character span of every `{% generation %}` block in it,
        as transformers computes them for `return_assistant_tokens_mask`."""
        return marked_renderer(self.template, self.template_kwargs())(messages)

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


GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(template: str) -> bool:
    """Does the template mark what is trained with `{% generation %}` blocks (the test
    transformers and TRL use)."""
    return GENERATION_TAG.search(template) is not None


@lru_cache(maxsize=8)
def marked_renderer(template: str, kwargs: tuple[tuple[str, str], ...]):
    """`render(messages) -> (text, spans)`: the render and its `{% generation %}` blocks'
    character spans, tracked by the extension transformers registers on every compiled
    template (the spans `apply_chat_template(return_assistant_tokens_mask=True)` masks)."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    compiled = _compile_jinja_template(template)
    extra = dict(kwargs)

    def render(messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        blocks: list[str] = []
        spans: list[tuple[int, int]] = []
        with compiled.environment.activate_tracker(blocks, spans):
            for block in compiled.generate(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=False,
                **extra,
            ):
                blocks.append(block)
        return "".join(blocks), [(int(a), int(b)) for a, b in spans]

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
