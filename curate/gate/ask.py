"""What the gate asks a model, and the model's answers: one pass per model over every
prompt the suites need (each prompt generated once, however many suites use it) and every
multiple-choice item, then the model is let go before the next one is loaded.

A subject is a trained run (its base + adapter, its own tokenizer and chat template), or a
base model alone. The suites score `Answers`, never a model, so their arithmetic is tested
on planted answers.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.gate.generate import Generation
from curate.manifests.store import Store
from curate.train.seal import read_run


@dataclass
class Plan:
    prompts: list[str] = field(default_factory=list)  # to generate, each once
    choices: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # MC items

    def ask(self, prompts: list[str]) -> None:
        seen = set(self.prompts)
        self.prompts += [p for p in dict.fromkeys(prompts) if p not in seen]

    def choose(self, prompt: str, options: list[str]) -> None:
        key = (prompt, tuple(options))
        if key not in self.choices:
            self.choices.append(key)


@dataclass
class Answers:
    name: str
    generations: dict[str, Generation]
    choices: dict[tuple[str, tuple[str, ...]], int]  # the option with the highest log-prob

    def texts(self, prompts: list[str]) -> list[str]:
        return [self.generations[p].text for p in prompts]


@dataclass(frozen=True)
class Subject:
    """A model to ask: `base` alone, or `base` + the adapter of `run` (a run folder)."""

    name: str
    base: Path
    tokenizer: Path
    run: Path | None = None
    quantized: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": str(self.base),
            "run": None if self.run is None else str(self.run),
            "adapter": None if self.run is None else str(self.run / "adapter"),
        }


def run_folder(ref: str, store: Store) -> Path | None:
    """A run folder from a path, a run id in the store's runs/, or a run id (or unique
    prefix) recorded in the store's training history; None when `ref` names no run."""
    given = Path(ref)
    if (given / "summary.json").is_file():
        return given
    if (store.root / "runs" / ref / "summary.json").is_file():
        return store.root / "runs" / ref
    if len(ref) >= 8:
        found = {
            r["folder"]
            for rid in store.record_ids("training")
            if (r := store.read_record("training", rid))["run_id"].startswith(ref)
        }
        if len(found) > 1:
            raise UserError(f"run id prefix {ref!r} names {len(found)} runs: give more digits")
        if found:
            return Path(found.pop())
    return None


def run_subject(folder: Path, name: str = "candidate") -> Subject:
    summary = read_run(folder)  # its adapter as trained, or exit 2 naming the changed file
    return Subject(
        name, Path(summary["base_folder"]), folder / "tokenizer", folder, bool(summary["quantized"])
    )


def model_subject(ref: str, store: Store, name: str = "candidate") -> Subject:
    """A base model alone (folder, .gguf or hub id), with its own tokenizer."""
    from curate.train.model import resolve_base

    folder = resolve_base(ref, store.root / "cache")
    return Subject(name, folder, folder)


def answer(
    subject: Subject, plan: Plan, max_new_tokens: int, batch_size: int, seed: int
) -> Answers:
    """Load the subject, answer the plan, let the model go."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the gate reports; stdout is for --json

    from curate.gate.generate import generate, option_logprobs
    from curate.train.model import load_model

    tokenizer = AutoTokenizer.from_pretrained(str(subject.tokenizer))
    model = load_model(subject.base, subject.quantized)
    if subject.run is not None:
        from peft import PeftModel

        from curate.train.model import quiet_loading

        with quiet_loading():
            model = PeftModel.from_pretrained(model, str(subject.run / "adapter"))
    model.eval()
    try:
        made = generate(model, tokenizer, plan.prompts, max_new_tokens, batch_size, seed)
        picks = {}
        for prompt, options in plan.choices:
            logp = option_logprobs(model, tokenizer, prompt, list(options))
            picks[(prompt, options)] = max(range(len(options)), key=logp.__getitem__)
    finally:
        del model
        gc.collect()
    return Answers(subject.name, dict(zip(plan.prompts, made, strict=True)), picks)
