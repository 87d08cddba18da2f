"""mixture.toml: pydantic models, path resolution and whole-config validation.

`load_config` reads the TOML file, validates every section at once and raises a single
`ConfigError` listing each problem with its key, the value found and the file. Paths in the
config are relative to the config file.
"""

from __future__ import annotations

import glob
import math
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curate.errors import ConfigError, Problem

FORMATS = ("auto", "chat", "sharegpt", "alpaca", "prompt_completion", "text", "preference")
ROLES = ("task", "general", "replay", "safety", "hard_negative", "mined")
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


# Sections that are part of the mixture.toml contract but whose steps this version does not
# run yet. Accepting them silently would let a user believe their data was checked.
_NOT_YET = {
    "overrides": "reviewer overrides",
}


def load_config(path: str | Path) -> MixtureConfig:
    """Read and validate mixture.toml; raise one ConfigError naming every problem."""
    path = Path(path)
    shown = str(path)
    if not path.exists():
        raise ConfigError([Problem("config", "file not found", file=shown)])
    if not path.is_file():
        raise ConfigError(
            [Problem("config", "not a file (give the path of a mixture.toml)", file=shown)]
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("config", f"not valid TOML: {exc}", file=shown)]) from exc
    return parse_config(raw, base_dir=path.resolve().parent, file=shown)


def parse_config(raw: dict[str, Any], base_dir: Path, file: str | None = None) -> MixtureConfig:
    """Validate types with pydantic and meaning with our own checks; report both at once."""
    problems: list[Problem] = []
    config = None
    try:
        config = MixtureConfig.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        for err in exc.errors():
            key = _key_of(err["loc"], raw)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            value = None if err["type"] == "missing" else err.get("input")
            problems.append(Problem(key, msg, value if not isinstance(value, dict) else None, file))
    problems += _check_semantics(raw, base_dir, file)
    if problems or config is None:
        raise ConfigError(problems, file)
    return config


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


def _check_semantics(raw: dict[str, Any], base_dir: Path, file: str | None) -> list[Problem]:
    """Checks types cannot express; they read the raw TOML, so they run even when a type is wrong."""
    problems: list[Problem] = []
    sources = raw.get("sources")
    sources = [s for s in sources if isinstance(s, dict)] if isinstance(sources, list) else []
    seen: dict[str, int] = {}
    weights: list[float] = []
    for i, src in enumerate(sources):
        name = src.get("name")
        key = f"sources[{i}]" + (f" ({name!r})" if name else "")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    Problem(
                        f"{key}.name",
                        f"duplicate source name (also sources[{seen[name]}])",
                        name,
                        file,
                    )
                )
            seen.setdefault(name, i)
        weight = src.get("weight")
        if isinstance(weight, int | float) and not isinstance(weight, bool):
            if not math.isfinite(weight) or weight < 0:
                problems.append(
                    Problem(f"{key}.weight", "must be a finite number >= 0", weight, file)
                )
            else:
                weights.append(float(weight))
        path = src.get("path")
        found = expand_path(base_dir, path) if isinstance(path, str) else []
        if isinstance(path, str) and not found:
            problems.append(
                Problem(f"{key}.path", f"no data file matches (looked in {base_dir})", path, file)
            )
        for f in found:
            if f.exists() and not f.is_dir() and not f.is_file():
                problems.append(
                    Problem(
                        f"{key}.path",
                        f"{f} is not a regular file (a device, pipe or socket, or a link to "
                        "one): curate reads only files and save_to_disk folders",
                        path,
                        file,
                    )
                )
                continue
            if not (f.is_dir() and is_hf_dataset_dir(f)) and (f.is_dir() or data_suffix(f) is None):
                problems.append(
                    Problem(
                        f"{key}.path",
                        f"cannot read {f.name}: use .jsonl, .json, .parquet or .csv (optionally .gz, .bz2, .xz) or a save_to_disk folder",
                        path,
                        file,
                    )
                )
    given = [i for i, src in enumerate(sources) if "weight" in src]
    if given and len(given) < len(sources):
        missing = ", ".join(f"sources[{i}]" for i in range(len(sources)) if i not in given)
        problems.append(
            Problem(
                "sources.weight",
                f"give every source a weight, or none (none: every row is kept); missing on {missing}",
                None,
                file,
            )
        )
    elif sources and len(weights) == len(sources) and sum(weights) <= 0:
        problems.append(
            Problem(
                "sources.weight",
                "weights sum to 0: at least one source needs a weight > 0",
                sum(weights),
                file,
            )
        )
    evals = raw.get("evals")
    for i, ev in enumerate(evals if isinstance(evals, list) else []):
        path = ev.get("path") if isinstance(ev, dict) else None
        if isinstance(path, str):
            full = Path(path) if Path(path).is_absolute() else base_dir / path
            if not full.is_file():
                problems.append(
                    Problem(
                        f"evals[{i}].path", f"file not found (looked in {base_dir})", path, file
                    )
                )
    template = _section(raw, "tokenizer").get("chat_template")
    if isinstance(template, str):
        full = Path(template) if Path(template).is_absolute() else base_dir / template
        if not full.is_file():
            problems.append(
                Problem(
                    "tokenizer.chat_template",
                    f"file not found (looked in {base_dir})",
                    template,
                    file,
                )
            )
    problems += _check_split(_section(raw, "split"), sources, file)
    problems += _check_roles(raw, sources, file)
    if _section(raw, "mixture").get("unit") == "tokens" and not raw.get("tokenizer"):
        problems.append(
            Problem(
                "mixture.unit",
                "'tokens' weighs sources by token counts, which need a [tokenizer] section",
                "tokens",
                file,
            )
        )
    for i, src in enumerate(sources):
        schema = src.get("json_schema")
        if isinstance(schema, str):
            key = f"sources[{i}]" + (f" ({src['name']!r})" if src.get("name") else "")
            full = Path(schema) if Path(schema).is_absolute() else base_dir / schema
            try:
                from curate.validators.quality import load_schema

                load_schema(full)
            except (OSError, ValueError) as exc:
                why = "file not found" if isinstance(exc, OSError) else str(exc)
                problems.append(Problem(f"{key}.json_schema", why, schema, file))
    for key, what in _NOT_YET.items():
        section, _, sub = key.partition(".")
        present = raw.get(section) if not sub else _section(raw, section).get(sub)
        if present:
            problems.append(
                Problem(
                    key,
                    f"{what} is not available in this version of curate; remove the key",
                    None,
                    file,
                )
            )
    return problems


def _check_split(
    split: dict[str, Any], sources: list[dict[str, Any]], file: str | None
) -> list[Problem]:
    problems = []
    shares = [split.get(k, 0) for k in ("validation", "test")]
    in_range = all(isinstance(v, int | float) and 0 <= v < 1 for v in shares)
    if in_range and sum(shares) >= 1:
        problems.append(
            Problem(
                "split",
                "validation + test must leave rows to train on (sum < 1)",
                sum(shares),
                file,
            )
        )
    by = split.get("by", "row")
    if split.get("time_cutoff") is not None and by in ("row", "cluster"):
        problems.append(
            Problem(
                "split.time_cutoff",
                'a split by time needs `by = "meta.FIELD"`, the field holding each row\'s time',
                split.get("time_cutoff"),
                file,
            )
        )
    holdout = split.get("holdout_sources") or []
    names = {s.get("name") for s in sources}
    for name in holdout if isinstance(holdout, list) else []:
        if name not in names:
            problems.append(Problem("split.holdout_sources", "no source has this name", name, file))
    held_out = holdout or split.get("time_cutoff") is not None
    if held_out and all(isinstance(v, int | float) for v in shares) and sum(shares) == 0:
        problems.append(
            Problem(
                "split",
                "held-out rows (holdout_sources, time_cutoff) go to validation or test: "
                "give `validation` or `test` a share > 0",
                None,
                file,
            )
        )
    return problems


POSITIVE_ROLES = ("task", "general", "replay")


def _check_roles(
    raw: dict[str, Any], sources: list[dict[str, Any]], file: str | None
) -> list[Problem]:
    mixture = _section(raw, "mixture")
    roles = mixture.get("roles")
    problems = []
    for i, src in enumerate(sources):
        if src.get("max_tokens") is not None and mixture.get("unit", "rows") != "tokens":
            problems.append(
                Problem(
                    f"sources[{i}].max_tokens",
                    'caps tokens of a mixture in tokens: set [mixture] unit = "tokens"',
                    src.get("max_tokens"),
                    file,
                )
            )
    if not isinstance(roles, dict):
        return problems
    present = {s.get("role", "task") for s in sources}
    floors = 0.0
    for role, limits in roles.items():
        if not isinstance(limits, dict):
            continue
        key = f"mixture.roles.{role}"
        lo, hi = limits.get("min_share"), limits.get("max_share")
        if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
            problems.append(Problem(key, f"min_share {lo} is above max_share {hi}", None, file))
        if isinstance(lo, int | float):
            floors += lo
            if lo > 0 and role not in present:
                problems.append(
                    Problem(
                        f"{key}.min_share",
                        f"no source has role {role!r}, so no row can meet this floor; "
                        f'add one (role = "{role}") or remove the floor',
                        lo,
                        file,
                    )
                )
        positive = limits.get("min_positive_share")
        if positive is not None and role != "mined":
            problems.append(
                Problem(
                    f"{key}.min_positive_share",
                    "applies to role 'mined' only (the share of rows the model already handles well)",
                    positive,
                    file,
                )
            )
        elif (
            isinstance(positive, int | float) and positive > 0 and not present & set(POSITIVE_ROLES)
        ):
            problems.append(
                Problem(
                    f"{key}.min_positive_share",
                    "no source has role task, general or replay to supply positive rows",
                    positive,
                    file,
                )
            )
    if floors > 1 + 1e-9:
        problems.append(
            Problem(
                "mixture.roles",
                "the roles' min_share add up to more than 1",
                round(floors, 6),
                file,
            )
        )
    return problems


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    node = raw.get(name)
    return node if isinstance(node, dict) else {}
