"""The manifest: what a build read, did, kept and rejected, as canonical JSON.

Its id is the sha256 of its canonical bytes (see `store.canonical_json`); nothing volatile
(time, host, durations, absolute paths) goes in it, so the same inputs, config and code give
the same id on any machine and in any store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from curate import __version__
from curate.config import MixtureConfig
from curate.manifests.store import Store
from curate.rows import SPLIT_NAMES
from curate.validators.report import percentiles
from curate.validators.target import Target

if TYPE_CHECKING:
    import polars as pl

    from curate.steps import Step

MANIFEST_SCHEMA = "curate.manifest/1"


def stage_entries(steps: list[Step], index: pl.DataFrame) -> list[dict[str, Any]]:
    """Per step, in the order they ran: rows in and out and rejections by reason, read off
    the final index. A row carries the stage of the first step that rejected it, so the
    rows a step saw are the input less what the steps before it rejected."""
    import polars as pl

    counts: dict[str, dict[str, int]] = {}
    for stage, reason, n in (
        index.filter(pl.col("reason").is_not_null())
        .group_by("stage", "reason")
        .len()
        .sort("stage", "reason")
        .iter_rows()
    ):
        counts.setdefault(stage, {})[reason] = int(n)
    rows = index.height
    entries = []
    for step in steps:
        rejected = counts.get(step.stage, {})
        entries.append(
            {
                "name": step.name,
                "stage": step.stage,
                "fingerprint": step.fingerprint(),
                "params": step.params(),
                "rows_in": rows,
                "rows_out": rows - sum(rejected.values()),
                "rejected": rejected,
            }
        )
        rows -= sum(rejected.values())
    return entries


def assemble(
    config: MixtureConfig,
    state: pl.DataFrame,
    file_entries: list[list[dict[str, Any]]],
    stages: list[dict[str, Any]],
    splits: dict[str, Any],
    ledger: dict[str, Any],
    parent: str | None,
    target: Target | None,
    reports: dict[str, Any],
    lineage: list[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The manifest of a build; `reports` are the sections steps and stages own
    (`merge_reports` of their `manifest_report`s); `lineage`: per source, where its rows
    came from (a mined source's mining runs and labels), where known."""
    import polars as pl

    tokens = token_report(state, config) if target is not None else None
    sources = []
    for rank, src in enumerate(config.sources):
        rows = state.filter(pl.col("source_rank") == rank)
        rejected = rows.filter(pl.col("reason").is_not_null())
        by_reason = {
            r: int(n) for r, n in rejected.group_by("reason").len().sort("reason").iter_rows()
        }
        by_step = {
            st: int(n) for st, n in rejected.group_by("stage").len().sort("stage").iter_rows()
        }
        sources.append(
            {
                "name": src.name,
                "role": src.role,
                "license": src.license,
                "format": src.format,
                "weight": src.weight,
                "max_repeats": src.max_repeats,
                "files": file_entries[rank],
                "rows_in": rows.height,
                "rows_kept": int((rows["copies"] > 0).sum()),
                "rows_rejected": rejected.height,
                "rows_emitted": int(rows["copies"].sum()),
                "rejected": by_reason,
                "rejected_by_step": by_step,
                **({"tokens": tokens["sources"][src.name]} if tokens else {}),
                **({"lineage": lineage[rank]} if lineage and lineage[rank] else {}),
            }
        )
    totals = {
        r: int(n)
        for r, n in state.filter(pl.col("reason").is_not_null())
        .group_by("reason")
        .len()
        .sort("reason")
        .iter_rows()
    }
    return {
        "schema": MANIFEST_SCHEMA,
        "parent": parent,
        "config": config.canonical(),
        "sources": sources,
        "stages": stages,
        "tokenizer": (
            {**entry, **reports.get("tokenizer", {})}
            if (entry := tokenizer_entry(config, target))
            else None
        ),
        "validation": reports.get("validation", {}),
        "contamination": reports.get("contamination", {}),
        **({"overrides": reports["overrides"]} if "overrides" in reports else {}),
        "mixture": reports["mixture"],
        "splits": {
            k: {
                **v,
                **reports.get("splits", {}).get(k, {}),
                **(tokens["splits"].get(k, {"tokens": 0, "trained_tokens": 0}) if tokens else {}),
            }
            for k, v in splits.items()
        },
        "ledger": ledger,
        "report": None,
        "counts": {
            "rows_in": state.height,
            "rows_kept": int((state["copies"] > 0).sum()),
            "rows_rejected": int(state["reason"].is_not_null().sum()),
            "rows_out": sum(split["rows"] for split in splits.values()),
            "rejected": totals,
            **(
                {"tokens_out": tokens["tokens_out"], "trained_tokens_out": tokens["trained_out"]}
                if tokens
                else {}
            ),
        },
        "code": {
            "curate": __version__,
            "pyarrow": pa.__version__,
            "reader": stages[0]["fingerprint"][:16],
        },
    }


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Sections of several steps' reports merged key by key (two steps may each add keys
    to one source's entry); the same key given twice is a bug, not a merge."""
    merged: dict[str, Any] = {}
    for report in reports:
        _merge_into(merged, report, "")
    return merged


def _merge_into(into: dict[str, Any], more: dict[str, Any], path: str) -> None:
    for key, value in more.items():
        if key in into and isinstance(into[key], dict) and isinstance(value, dict):
            _merge_into(into[key], value, f"{path}{key}.")
        elif key in into:
            raise ValueError(f"two steps report manifest key {path}{key}")
        else:
            into[key] = value


def tokenizer_entry(config: MixtureConfig, target: Target | None) -> dict[str, Any] | None:
    if target is None or config.tokenizer is None or target.probe is None:
        return None
    return {
        **target.fingerprint,
        # a trainer elsewhere that masks padding by id never trains this end of turn
        "pad_is_end_of_turn": target.fingerprint.get("pad_token") == target.probe.end_of_turn,
        "max_length": config.tokenizer.max_length,
        "on_too_long": config.tokenizer.on_too_long,
        "trust_remote_code": config.tokenizer.trust_remote_code,
        "template": target.probe.report(),
    }


def token_report(state: pl.DataFrame, config: MixtureConfig) -> dict[str, Any]:
    """Tokens per source and split: totals with repeats, per-row percentiles, truncation."""
    import polars as pl

    if "n_tokens" not in state.columns:
        state = state.with_columns(
            pl.lit(None, pl.Int32).alias(c) for c in ("n_tokens", "n_trained", "tokens_cut")
        )
    kept = state.filter(pl.col("copies") > 0).with_columns(
        pl.col("n_tokens").fill_null(0).cast(pl.Int64),
        pl.col("n_trained").fill_null(0).cast(pl.Int64),
        pl.col("tokens_cut").fill_null(0).cast(pl.Int64),
    )
    sources: dict[str, Any] = {}
    for rank, src in enumerate(config.sources):
        mine = kept.filter(pl.col("source_rank") == rank)
        tokens = int((mine["n_tokens"] * mine["copies"]).sum())
        trained = int((mine["n_trained"] * mine["copies"]).sum())
        truncated = int((mine["tokens_cut"] > 0).sum())
        sources[src.name] = {
            "tokens": tokens,
            "trained_tokens": trained,
            "trained_share": round(trained / tokens, 6) if tokens else 0.0,
            "row_tokens": percentiles(mine["n_tokens"].to_numpy()),
            "truncated_rows": truncated,
            "truncation_rate": round(truncated / mine.height, 6) if mine.height else 0.0,
            "tokens_cut": int(mine["tokens_cut"].sum()),
        }
    split_tokens: dict[str, dict[str, int]] = {}
    if "split" in kept.columns:
        by_split = kept.group_by("split").agg(
            (pl.col("n_tokens") * pl.col("copies")).sum().alias("tokens"),
            (pl.col("n_trained") * pl.col("copies")).sum().alias("trained_tokens"),
        )
        for code, total, trained in by_split.iter_rows():
            split_tokens[SPLIT_NAMES[int(code)]] = {
                "tokens": int(total),
                "trained_tokens": int(trained),
            }
    return {
        "sources": sources,
        "splits": split_tokens,
        "tokens_out": sum(s["tokens"] for s in sources.values()),
        "trained_out": sum(s["trained_tokens"] for s in sources.values()),
    }


@dataclass(frozen=True)
class Manifest:
    """A manifest read back from a store, with paths to its objects."""

    id: str
    data: dict[str, Any]
    store: Store
    # objects checked against their names by this command: read again, not hashed again
    checked: set[str] = field(default_factory=set, compare=False, repr=False)

    def split_names(self) -> list[str]:
        return [name for name in SPLIT_NAMES if name in self.data["splits"]]

    def shard_paths(self, split: str) -> list[Path]:
        if split not in self.data["splits"]:
            raise KeyError(split)
        return [self._verified(s["object"]) for s in self.data["splits"][split]["shards"]]

    def ledger_paths(self) -> list[Path]:
        return [self._verified(p["object"]) for p in self.data["ledger"]["parts"]]

    def _verified(self, sha: str) -> Path:
        if sha not in self.checked:
            self.store.verified_object(sha)
            self.checked.add(sha)
        return self.store.object_path(sha)

    def objects(self) -> list[str]:
        return manifest_objects(self.data)

    def split_index_path(self) -> Path | None:
        """The build's split index (id, split, split_unit per kept row), verified; None for
        manifests from before it was written."""
        entry = self.data.get("split_index")
        return self._verified(entry["object"]) if entry else None

    @property
    def counts(self) -> dict[str, Any]:
        return self.data["counts"]


def risk_warnings(data: dict[str, Any]) -> list[str]:
    """What the mixture lacks to keep old behaviour: general/replay rows against forgetting,
    safety rows against weaker refusals."""
    risks = data["mixture"].get("risks", {})
    out = []
    if risks.get("forgetting_risk"):
        out.append(
            "forgetting_risk: no rows of role replay or general in the output; a fine-tune on "
            "task data alone erases general instruction following. Add a source with "
            'role = "replay" (old golden or general instruction data) and a floor, e.g. '
            "[mixture.roles] replay = { min_share = 0.10 }"
        )
    if risks.get("safety_risk"):
        out.append(
            "safety_risk: no rows of role safety in the output; refusals weaken after a "
            'fine-tune without them. Add a source with role = "safety" and a floor, e.g. '
            "[mixture.roles] safety = { min_share = 0.05 }"
        )
    return out


MISREAD = ("no_user_turn", "role_marker_in_answer")


def misread_sources(data: dict[str, Any]) -> list[tuple[str, int, int]]:
    """Sources read with `format = "auto"` whose rows are, for more than 1%, conversations
    read as one turn (MISREAD reasons): (name, such rows, rows in). An error, not a warning:
    the format was guessed, and guessed wrong."""
    out = []
    for src in data["sources"]:
        n = sum(src["rejected"].get(r, 0) for r in MISREAD)
        if src.get("format") == "auto" and n and n * 100 > src["rows_in"]:
            out.append((src["name"], n, src["rows_in"]))
    return out


def override_warnings(data: dict[str, Any]) -> list[str]:
    """Reviewers' decisions this build could not apply."""
    report = data.get("overrides")
    if not report:
        return []
    out = []
    stale = report["stale"]
    if stale["count"]:
        out.append(
            f"overrides: {stale['count']} decided ids are not in this build (their source "
            f"changed?): {', '.join(stale['ids'][:5])}"
        )
    landed = report.get("landed") or {}
    if landed.get("not_in_output"):
        why = ", ".join(f"{r} {n}" for r, n in landed["not_in_output"].items())
        out.append(
            f"overrides: {landed['kept']} rows kept by reviewers, {landed['in_output']} in the "
            f"output; the others were dropped again ({why}): "
            f"{', '.join(landed['ids_not_in_output'][:5])}"
        )
    for key, what in (
        ("refused", "keep decisions refused: those rows cannot be trained on as they are"),
        ("rejected_for_another_reason", "kept rows were rejected for a reason nobody reviewed"),
    ):
        rows = report["keep"][key]
        if rows:
            shown = ", ".join(f"{r['id']} ({r['reason']})" for r in rows[:5])
            out.append(f"overrides: {len(rows)} {what}: {shown}")
    return out


def manifest_objects(data: dict[str, Any]) -> list[str]:
    """Every store object a manifest names."""
    shas = [s["object"] for split in data["splits"].values() for s in split["shards"]]
    shas += [p["object"] for p in data["ledger"]["parts"]]
    for key in ("split_index", "report"):
        if data.get(key):
            shas.append(data[key]["object"])
    return shas


def warnings(data: dict[str, Any]) -> list[str]:
    """What a user should look at before training on a build (derived from the manifest)."""
    out: list[str] = []
    read_reasons = ("malformed", "invalid_schema", "empty_response")
    for src in data["sources"]:
        name, rows_in = src["name"], src["rows_in"]
        if rows_in == 0:
            out.append(f"source {name!r}: no rows (are its files empty?)")
            continue
        unreadable = sum(n for r, n in src["rejected"].items() if r in read_reasons)
        if unreadable * 2 >= rows_in:
            worst = max(
                ((r, n) for r, n in src["rejected"].items() if r in read_reasons),
                key=lambda rn: rn[1],
            )
            out.append(
                f"source {name!r}: {unreadable} of {rows_in} rows could not be used (mostly {worst[0]}); "
                f'check its `format`, or map its fields with `columns = {{ your_field = "prompt", ... }}`; '
                f"`curate review ID --source {name}` shows them"
            )
        prompts = data.get("validation", {}).get(name, {}).get("system_prompts", {})
        if prompts.get("variants", 0) > 1:
            out.append(
                f"source {name!r}: {prompts['variants']} different system prompts (or none) among "
                "its kept rows; a model served with one system prompt should be trained on it"
            )
        leaked = src["rejected"].get("contaminated", 0)
        if leaked:
            out.append(
                f"source {name!r}: {leaked} rows leak eval items (`contaminated`); "
                f"`curate review ID --reason contaminated --source {name}` shows them beside the items"
            )
        for step, n in sorted(src.get("rejected_by_step", {}).items()):
            # reading and the mixture have warnings of their own (above and below)
            if step not in ("read", "mixture") and n * 2 > rows_in:
                reasons = ", ".join(
                    f"{r} {c}"
                    for r, c in sorted(src["rejected"].items())
                    if r in step_reasons(data, step)
                )
                out.append(
                    f"source {name!r}: step {step} rejected {n} of {rows_in} rows ({reasons}); "
                    f"`curate review ID --source {name}` shows them with their evidence"
                )
        if src.get("role") == "mined" and src["rows_rejected"]:  # corrections that vanish
            why = ", ".join(f"{r} {c}" for r, c in sorted(src["rejected"].items()))
            out.append(
                f"source {name!r} (mined): {src['rows_rejected']} of {rows_in} corrections did not "
                f"reach the output ({why}); `curate review ID --source {name}` shows them"
            )
        left_out = src["rejected"].get("not_sampled", 0)
        if left_out * 2 >= rows_in:
            out.append(
                f"source {name!r}: {left_out} of {rows_in} rows left out to honour the weights (`not_sampled`)"
            )
        mix = data["mixture"]["sources"].get(name, {})
        unit = data["mixture"].get("unit", "rows")
        if mix.get("capped") and mix.get(f"available_{unit}"):
            asked = mix.get(f"asked_{unit}", mix[f"requested_{unit}"])
            out.append(
                f"source {name!r}: asked for {asked} {unit}, has "
                f"{mix[f'available_{unit}']} (max_repeats {mix['max_repeats']}): got "
                f"{mix[f'realized_{unit}']}"
            )
    out += risk_warnings(data) + override_warnings(data)
    tok = data.get("tokenizer") or {}
    if warning := pad_warning(tok):
        out.append(warning)
    if warning := split_unit_warning(data):
        out.append(warning)
    straddling = tok.get("turns_with_token_across_turn_start", 0)
    if straddling:
        turns = tok.get("assistant_turns") or straddling
        out.append(
            f"{straddling} of {turns} assistant turns ({straddling / turns:.0%}) start inside a "
            "token that begins in the template's assistant header (e.g. "
            f"{tok.get('token_across_turn_start_example')}): the tokenizer merges the header's "
            "last characters with the answer's first ones, so those first characters are not "
            "trained. Fix: strip leading whitespace from answers, or use a template whose "
            "assistant header ends with a special token"
        )
    return out


def step_reasons(data: dict[str, Any], stage: str) -> set[str]:
    """The reasons the step of `stage` rejected rows for, in this build."""
    return {r for entry in data["stages"] for r in entry["rejected"] if _stage_of(entry) == stage}


def _stage_of(entry: dict[str, Any]) -> str:
    return str(entry.get("stage") or entry["name"])  # manifests before stages were named


def pad_warning(tok: dict[str, Any]) -> str | None:
    """The tokenizer pads with its end-of-turn token: a trainer elsewhere that masks padding
    by token id never trains the end of turn (TRL issue 976, transformers 23530)."""
    eot = (tok.get("template") or {}).get("end_of_turn")
    if not eot or not tok.get("pad_is_end_of_turn", tok.get("pad_token") == eot):
        return None
    return (
        f"the tokenizer's pad token is its end-of-turn token {eot!r}: a collator that masks "
        "padding by token id (transformers' DataCollatorForLanguageModeling) then never "
        "trains the end of turn, and the model never learns to stop. curate train and the "
        "exports' `labels` are not affected; elsewhere, train on `labels` as they are or set "
        "a distinct pad token"
    )


def split_unit_warning(data: dict[str, Any]) -> str | None:
    """A split by cluster or group that could not honour its shares: one unit holding most
    rows (it stays in train), or an evaluation split under half its target."""
    train = data["splits"].get("train", {})
    largest, short = train.get("largest_unit_rows", 0), train.get("evaluation_short", [])
    rows = data["counts"]["rows_kept"]
    if not (largest * 2 > rows or short):
        return None
    split = data["config"].get("split", {})
    what = (
        f"one group of rows split together holds {largest} of {rows} rows and stays in train"
        if largest * 2 > rows
        else f"{' and '.join(short)} got less than half its target: the groups left (the "
        f"largest {largest} rows) are larger than it, and a group is never cut"
    )
    fix = (
        f' (by = "cluster" on {split.get("cluster_on")!r}: rows sharing a long preamble join '
        'one cluster; raise cluster_threshold, or set cluster_on = "row")'
        if split.get("by") == "cluster"
        else ""
    )
    return f"split: {what}{fix}"
