"""mixture.toml: pydantic models, path resolution and whole-config validation.

`load_config` reads the TOML file, validates every section at once and raises a single
`ConfigError` listing each problem with its key, the value found and the file. Paths in the
config are relative to the config file.
"""

from __future__ import annotations

import glob
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curate.errors import ConfigError, Problem, UserError
from curate.fsio import read_regular_text

M = TypeVar("M", bound=BaseModel)

FORMATS = ("auto", "chat", "sharegpt", "alpaca", "prompt_completion", "text", "preference")
ROLES = ("task", "general", "replay", "safety", "hard_negative", "mined")
POSITIVE_ROLES = ("task", "general", "replay")  # rows the model already handles well
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")
COMPRESSIONS = (".gz", ".bz2", ".xz")


def data_suffix(path: Path) -> str | None:
    """`.jsonl` for `a.jsonl` and `a.jsonl.gz`; None for what curate cannot read."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes and suffixes[-1] in DATA_SUFFIXES else None


class _Model(BaseModel):
    # strict: TOML has real numbers, booleans and strings, so "0.7" is not a weight and only
    # `true` trusts remote code; no infinities or NaNs anywhere
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class BuildSection(_Model):
    name: str = "mixture"
    seed: int = Field(0, ge=0, lt=2**63)


class TokenizerSection(_Model):
    path: str
    chat_template: str | None = None
    max_length: int = Field(2048, gt=0, le=1 << 22)
    on_too_long: Literal["drop", "truncate_prompt"] = "drop"
    trust_remote_code: bool = False


class SourceSection(_Model):
    name: str = Field(min_length=1)
    path: str
    format: Literal[FORMATS] = "auto"  # type: ignore[valid-type]
    role: Literal[ROLES] = "task"  # type: ignore[valid-type]
    weight: float | None = None  # give every source a weight, or none (keep every row)
    license: str | None = None
    max_repeats: int = Field(1, ge=1, le=1000)
    # renames applied before the format reads a row: {column in the file = field of the format},
    # e.g. GSM8K's {question = "prompt", answer = "completion"}
    columns: dict[str, str] = Field(default_factory=dict)
    # a JSON schema file: every answer of this source must be JSON that validates against it
    json_schema: str | None = None
    # with unit = "tokens": at most this many tokens (in the mixture's count) from the source
    max_tokens: int | None = Field(None, gt=0)


class RoleLimits(_Model):
    """Shares of the whole output (in the mixture's unit) that one role's sources hold."""

    min_share: float | None = Field(None, ge=0, le=1)
    max_share: float | None = Field(None, ge=0, le=1)
    # `mined` only: rows of task, general and replay sources (what the model already does
    # well) are at least this share of the output, so retraining is never on failures alone
    min_positive_share: float | None = Field(None, ge=0, le=1)


class MixtureSection(_Model):
    unit: Literal["rows", "tokens"] = "rows"
    total: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, gt=0)
    # tokens a budget in tokens counts: the trained ones (answers) or all of them
    count: Literal["trained", "all"] = "trained"
    # exit 2 rather than move shares away from the weights to meet a role's limits
    strict_shares: bool = False
    roles: dict[Literal[ROLES], RoleLimits] = Field(default_factory=dict)  # type: ignore[valid-type]


class NearDedup(_Model):
    threshold: float = Field(0.8, gt=0, le=1)
    num_perm: int = Field(128, ge=16, le=1024)  # 128 is plenty; the cost grows with it
    ngram: int = Field(5, gt=0, le=64)


class SemanticDedup(_Model):
    threshold: float = Field(0.95, gt=0, le=1)
    model: str | None = None


class DedupSection(_Model):
    exact: bool = True
    near: NearDedup | None = None
    semantic: SemanticDedup | None = None


class EvalSection(_Model):
    name: str
    path: str
    fields: list[str] = Field(min_length=1)


class ContaminationSection(_Model):
    ngram: int = Field(13, gt=0, le=64)
    threshold: float = Field(0.5, gt=0, le=1)


class SplitSection(_Model):
    validation: float = Field(0.0, ge=0, lt=1)
    test: float = Field(0.0, ge=0, lt=1)  # never trained on: the release gate's held-out set
    # row | cluster (similar rows never straddle splits) | a meta field (rows sharing its
    # value stay together; with `time_cutoff`, rows at or after it go to validation/test)
    by: str = "row"
    cluster_threshold: float = Field(0.5, gt=0, le=1)  # Jaccard that joins rows for by = cluster
    # what that Jaccard joins: whole rows or prompts (user and tool turns: variants of one
    # problem with other answers), "prompt" (the default); or whole rows only, "row"
    cluster_on: Literal["prompt", "row"] = "prompt"
    # by = "cluster" with [dedup] semantic: rows at this cosine join one cluster too
    cluster_cosine: float = Field(0.85, gt=0, le=1)
    # ISO 8601 date or time (a TOML date is fine), or a number (epoch seconds)
    time_cutoff: str | datetime | date | int | float | None = None
    holdout_sources: list[str] = Field(default_factory=list)  # only in validation/test

    @property
    def field(self) -> str | None:
        """The meta field of `by` (`meta.FIELD` or `FIELD`), None for row and cluster."""
        if self.by in ("row", "cluster"):
            return None
        return self.by.removeprefix("meta.")


class ValidateSection(_Model):
    languages: list[str] | None = None  # fastText lid.176 codes, e.g. ["en", "de"]
    language_min_score: float = Field(0.5, ge=0, le=1)  # reject only when at least this sure
    pii: Literal["off", "redact", "reject"] = "off"
    label_leakage: bool = False  # reject rows whose answer is verbatim in their prompt
    leakage_min_chars: int = Field(20, gt=0)
    degeneration: bool = False  # reject answers stuck in a loop of repeated word n-grams
    degeneration_ngram: int = Field(3, gt=0)
    degeneration_max_repeated: float = Field(0.5, gt=0, le=1)


class OverrideSection(_Model):
    path: str


class MixtureConfig(_Model):
    build: BuildSection = Field(default_factory=BuildSection)
    tokenizer: TokenizerSection | None = None
    sources: list[SourceSection] = Field(min_length=1)
    mixture: MixtureSection = Field(default_factory=MixtureSection)
    dedup: DedupSection = Field(default_factory=DedupSection)
    evals: list[EvalSection] = []
    contamination: ContaminationSection = Field(default_factory=ContaminationSection)
    split: SplitSection = Field(default_factory=SplitSection)
    validate_: ValidateSection = Field(default_factory=ValidateSection, alias="validate")
    overrides: list[OverrideSection] = []

    # Where the config lives; paths are relative to it. Not part of the config's content.
    base_dir: Path = Field(Path("."), exclude=True)

    def canonical(self) -> dict[str, Any]:
        """The config as it enters the manifest: every default made explicit, no paths of this machine."""
        return self.model_dump(mode="json", by_alias=True, exclude={"base_dir"})

    def source_files(self, source: SourceSection) -> list[Path]:
        """The files a source names, sorted, relative paths resolved against the config."""
        return expand_path(self.base_dir, source.path)


def expand_path(base_dir: Path, pattern: str) -> list[Path]:
    """A file, a save_to_disk folder, or a glob, resolved against `base_dir`, sorted.

    Each real file once: a `**` glob through a folder symlink (or a loop of them) finds the
    same file under many names; the first name, in sorted order, is kept.
    """
    full = Path(pattern) if Path(pattern).is_absolute() else base_dir / pattern
    if not glob.has_magic(str(full)):
        return [full] if full.exists() else []
    found = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if _is_data(Path(p)))
    seen: set[Path] = set()
    unique = []
    for path in found:
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def _is_data(path: Path) -> bool:
    return path.is_dir() and is_hf_dataset_dir(path) or data_suffix(path) is not None


def is_hf_dataset_dir(path: Path) -> bool:
    """A folder written by `save_to_disk` (a Dataset, or a DatasetDict with its splits)."""
    return any(
        (path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def load_config(path: str | Path) -> MixtureConfig:
    """Read and validate mixture.toml; raise one ConfigError naming every problem."""
    path = Path(path)
    raw = read_toml(path, "give the path of a mixture.toml")
    return parse_config(raw, base_dir=path.resolve().parent, file=str(path))


def parse_config(raw: dict[str, Any], base_dir: Path, file: str | None = None) -> MixtureConfig:
    """Validate types with pydantic and meaning with our own checks; report both at once."""
    problems: list[Problem] = []
    config = None
    try:
        config = MixtureConfig.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        problems += pydantic_problems(exc, raw, file, MixtureConfig)
    from curate.config_rules import check_semantics

    problems += check_semantics(raw, base_dir, file)
    if problems or config is None:
        raise ConfigError(problems, file)
    return config


def read_toml(path: Path, hint: str = "give the path of a TOML file") -> dict[str, Any]:
    """A TOML file's table, or a ConfigError naming the file."""
    shown = str(path)
    if not path.is_file():
        what = "file not found" if not path.exists() else f"not a file ({hint})"
        raise ConfigError([Problem("config", what, file=shown)])
    try:
        return tomllib.loads(read_regular_text(path, "config"))
    except UserError as exc:
        raise ConfigError([Problem("config", str(exc), file=shown)]) from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError([Problem("config", f"not valid TOML: {exc}", file=shown)]) from exc


def read_model(path: Path, model: type[M], hint: str) -> M:
    """A TOML file validated as `model`, or a ConfigError naming every key pydantic refused
    (as the user wrote it) and the file."""
    raw = read_toml(path, hint)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(pydantic_problems(exc, raw, str(path), model), str(path)) from exc


def pydantic_problems(
    exc: ValidationError, raw: dict[str, Any], file: str | None, model: type | None = None
) -> list[Problem]:
    """pydantic's errors as Problems that name the key as the user wrote it; an unknown key
    is answered with the valid keys in its place and the closest one (`model`: the file's)."""
    problems = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = unknown_key(model, err["loc"])
        elif err["type"] == "missing":
            msg = "required key is missing"
        value = None if err["type"] == "missing" else err.get("input")
        key = _key_of(err["loc"], raw)
        problems.append(Problem(key, msg, value if not isinstance(value, dict) else None, file))
    return problems


def unknown_key(model: type | None, loc: tuple[Any, ...]) -> str:
    """`unknown key; did you mean 'truncated_min_words'? valid here: a, b, c`."""
    import difflib

    valid = _fields_at(model, loc[:-1]) if model is not None else []
    if not valid:
        return "unknown key"
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} valid here: {', '.join(sorted(valid))}"


def _fields_at(model: Any, path: tuple[Any, ...]) -> list[str]:
    """The keys a TOML table at `path` (field names, list indexes) of `model` may hold."""
    import types
    import typing

    node = model
    for step in path:
        if isinstance(step, int):
            continue
        fields = getattr(node, "model_fields", {})
        field = next((f for n, f in fields.items() if (f.alias or n) == step), None)
        if field is None:
            return []
        node = _model_in(field.annotation, typing, types)
        if node is None:
            return []
    fields = getattr(node, "model_fields", {})
    return [f.alias or n for n, f in fields.items() if n != "base_dir"]


def _model_in(annotation: Any, typing: Any, types: Any) -> Any:
    """The pydantic model inside `X | None`, `list[X]`, `dict[str, X]` (or None)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg, typing, types)
        if found is not None:
            return found
    return None


def _key_of(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """`('sources', 1, 'weight')` → `sources[1] ('tickets').weight`."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            name = (
                node[item].get("name")
                if isinstance(node, list) and item < len(node) and isinstance(node[item], dict)
                else None
            )
            parts[-1] += f"[{item}]" + (f" ({name!r})" if name else "")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "config"
