"""The Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate.config import MixtureConfig, load_config
from curate.errors import IntegrityError, UserError
from curate.manifests.manifest import Manifest
from curate.manifests.store import Store, default_store

if TYPE_CHECKING:
    import datasets

    from curate.manifests.export import Exported
    from curate.pipeline import BuildResult
    from curate.progress import Progress


def store_for(store: str | Path | None = None, config_path: str | Path | None = None) -> Store:
    return Store(store if store is not None else default_store(config_path))


def build(
    config: str | Path | MixtureConfig,
    *,
    store: str | Path | None = None,
    workers: int | None = None,
    engine: str = "local",
    address: str | None = None,
    strict: bool = False,
    parent: str | None = None,
    progress: Progress | None = None,
    prescanned: dict[tuple[str, str | None], Any] | None = None,
    report: bool = True,
    allow_empty: bool = False,
) -> BuildResult:
    """Build the mixture a config describes; returns the manifest id, manifest and run info.
    `report`: write the HTML report (a store object the manifest names).
    A build whose every row was rejected raises `pipeline.EmptyBuild` (a UserError naming
    the step that rejected most, with an example; its manifest is stored) unless
    `allow_empty`.
    `engine`: "local" (a process pool) or "ray", with `address` "local" (the default: Ray
    started here), "auto" or a cluster's address; both give the same manifest id."""
    from curate.pipeline import run_build

    cfg = config if isinstance(config, MixtureConfig) else load_config(config)
    where = store_for(store, cfg.base_dir / "mixture.toml")
    parent_id = where.resolve(parent) if parent else None
    return run_build(
        cfg,
        where,
        workers=workers,
        engine=engine,
        address=address,
        strict=strict,
        progress=progress,
        parent=parent_id,
        prescanned=prescanned,
        report=report,
        allow_empty=allow_empty,
    )


def open_manifest(ref: str, store: str | Path | None = None) -> Manifest:
    where = store_for(store)
    mid = where.resolve(ref)
    return Manifest(mid, where.read_manifest(mid), where)


def load(ref: str, split: str = "train", store: str | Path | None = None) -> datasets.Dataset:
    """A split of a build as a `datasets.Dataset`, memory-mapped from the store's cache,
    with the columns an export has (`manifests.export`): for a tokenized build, `labels`
    and `assistant_masks` beside `input_ids`, so a trainer given it as it is trains exactly
    the tokens the build validated.

    The cache file is made once from the split's verified shards and sealed; a cache file
    that no longer matches its seal is made again.
    """
    import datasets

    from curate.manifests.export import split_arrow

    manifest = open_manifest(ref, store)
    if split not in manifest.data["splits"]:
        raise UserError(
            f"manifest {manifest.id[:12]} has no split {split!r}; it has {', '.join(manifest.split_names())}"
        )
    return datasets.Dataset.from_file(str(split_arrow(manifest, split)), in_memory=False)


def verify(ref: str, store: str | Path | None = None) -> dict[str, Any]:
    """Re-hash the manifest and every object it names; check row conservation.

    Returns {"id", "objects", "problems": [...]} — no problems means the build is intact.
    """
    import pyarrow.parquet as pq

    where = store_for(store)
    mid = where.resolve(ref)
    problems: list[str] = []
    try:
        manifest = Manifest(mid, where.read_manifest(mid), where)
    except IntegrityError as exc:
        return {"id": mid, "objects": 0, "problems": [str(exc)]}
    data = manifest.data
    bad = set()
    for sha in manifest.objects():
        if problem := where.verify_object(sha):
            problems.append(problem)
            bad.add(sha)
    for src in data["sources"]:
        if src["rows_in"] != src["rows_kept"] + src["rows_rejected"]:
            problems.append(
                f"source {src['name']!r}: rows_in {src['rows_in']} != rows_kept {src['rows_kept']} + rows_rejected {src['rows_rejected']}"
            )
    counts = data["counts"]
    if counts["rows_in"] != counts["rows_kept"] + counts["rows_rejected"]:
        problems.append(f"counts: rows_in {counts['rows_in']} != rows_kept + rows_rejected")
    if counts["rows_rejected"] != data["ledger"]["rows"]:
        problems.append(
            f"ledger holds {data['ledger']['rows']} rows, counts say {counts['rows_rejected']} were rejected"
        )
    for part in data["ledger"]["parts"]:
        if (
            part["object"] not in bad
            and pq.ParquetFile(where.object_path(part["object"])).metadata.num_rows != part["rows"]
        ):
            problems.append(
                f"ledger part {part['object'][:12]}: row count differs from the manifest"
            )
    if sum(p["rows"] for p in data["ledger"]["parts"]) != data["ledger"]["rows"]:
        problems.append("ledger parts do not add up to ledger.rows")
    for split, entry in data["splits"].items():
        for shard in entry["shards"]:
            if shard["object"] not in bad:
                actual = pq.ParquetFile(where.object_path(shard["object"])).metadata.num_rows
                if actual != shard["rows"]:
                    problems.append(
                        f"{split} shard {shard['object'][:12]}: {actual} rows, manifest says {shard['rows']}"
                    )
    if sum(e["rows"] for e in data["splits"].values()) != counts["rows_out"]:
        problems.append("split row counts do not add up to counts.rows_out")
    if not bad:
        problems += _split_problems(manifest)
    return {"id": mid, "objects": len(manifest.objects()), "problems": problems}


def _split_problems(manifest: Manifest) -> list[str]:
    """No id in two splits; and, by the split index, no cluster or group in two splits and
    every split holding exactly the rows the index gives it."""
    import polars as pl

    ids = {
        name: pl.concat(
            [pl.read_parquet(p, columns=["id"]) for p in manifest.shard_paths(name)]
            or [pl.DataFrame(schema={"id": pl.String})]
        )["id"].unique()
        for name in manifest.split_names()
    }
    problems = []
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = ids[a].filter(ids[a].is_in(ids[b].implode()))
            if len(both):
                problems.append(
                    f"id {both[0]!r} is in splits {a} and {b} ({len(both)} ids in both)"
                )
    path = manifest.split_index_path()
    if path is None:
        return problems
    index = pl.read_parquet(path)
    for code, name in enumerate(names):
        listed = index.filter(pl.col("split") == code)["id"].unique()
        if set(listed.to_list()) != set(ids[name].to_list()):
            problems.append(f"split {name}: its rows differ from the split index")
    straddling = (
        index.drop_nulls("split_unit")
        .group_by("split_unit")
        .agg(pl.col("split").n_unique().alias("splits"))
        .filter(pl.col("splits") > 1)
        .sort("split_unit")
    )
    if straddling.height:
        first = straddling["split_unit"][0]
        problems.append(
            f"{straddling.height} clusters or groups are in more than one split (e.g. {first!r})"
        )
    return problems


def export(
    ref: str,
    fmt: str,
    out: str | Path,
    store: str | Path | None = None,
    overwrite: bool = False,
    columns: str = "all",
) -> Exported:
    """Every split with rows as `<out>/<split>.jsonl` / `.parquet`, or a DatasetDict folder
    (hf), in the form trainers read as it is (`manifests.export`); `columns="tokens"`:
    exactly input_ids, attention_mask, labels (Axolotl's pre-tokenized format).

    `out` must be new or empty unless `overwrite`; then only curate's files are replaced.
    """
    from curate.manifests.export import export as write_export

    return write_export(open_manifest(ref, store), fmt, Path(out), overwrite, columns)


def log(store: str | Path | None = None) -> list[dict[str, Any]]:
    """Every build in the store, newest first, with its tags and counts."""
    where = store_for(store)
    tags: dict[str, list[str]] = {}
    for name, mid in where.tags():
        tags.setdefault(mid, []).append(name)
    trained: dict[str, list[dict[str, Any]]] = {}
    for rid in where.record_ids("training"):
        try:
            record = where.read_record("training", rid)
        except UserError:
            continue  # a damaged record hides one run, not the history
        trained.setdefault(record["manifest"], []).append(record)
    entries = []
    for mid in where.manifest_ids():
        try:
            data = where.read_manifest(mid)
        except UserError:
            continue
        run = where.read_run(mid)
        entries.append(
            {
                "id": mid,
                "name": data["config"]["build"]["name"],
                "created": run.get("created"),
                "rows_in": data["counts"]["rows_in"],
                "rows_out": data["counts"]["rows_out"],
                "rows_rejected": data["counts"]["rows_rejected"],
                "parent": data.get("parent"),
                "tags": sorted(tags.get(mid, [])),
                "mined": _mined_sources(where, data),
                "trained": sorted(trained.get(mid, []), key=lambda r: (r["created"], r["run_id"])),
            }
        )
    return sorted(entries, key=lambda e: (e["created"] or "", e["id"]), reverse=True)


def _mined_sources(store: Store, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per source whose rows came from `curate mine`: its labels file, the mining runs and
    the log files they read (logs → mining run → labels → this build)."""
    out = []
    for src in manifest["sources"]:
        lineage = src.get("lineage")
        if not lineage or not lineage.get("mining_runs"):
            continue
        logs: list[str] = []
        for rid in lineage["mining_runs"]:
            traced = (lineage.get("runs") or {}).get(rid)  # `mine import` copies them
            try:
                record = traced or store.read_record("mining", rid)
                logs += [f["path"] for f in record["logs"]]
            except UserError:
                logs.append(f"(mining run {rid[:12]} not in this store)")
        out.append(
            {
                "source": src["name"],
                "labels": lineage.get("labels", {}).get("sha256"),
                "mining_runs": lineage["mining_runs"],
                "logs": logs,
            }
        )
    return out


def diff(a: str, b: str, store: str | Path | None = None, rows: int = 0) -> dict[str, Any]:
    """What changed from build `a` to build `b` (see `manifests.diff`)."""
    from curate.manifests.diff import diff_manifests

    return diff_manifests(open_manifest(a, store), open_manifest(b, store), rows)


def mine(
    logs: Sequence[str | Path],
    config: str | Path | None = None,
    store: str | Path | None = None,
    fresh: bool = False,
) -> Any:
    """Judge production logs by the failure rules (`mining.run.mine`); returns the run
    (`.id`, `.record`), stored under the store's `runs/mining/`. `fresh`: its candidates
    are not collapsed with earlier runs' (nothing counted as seen before)."""
    from curate.mining.run import mine as run_mining

    where = store_for(store, config)
    where.root.mkdir(parents=True, exist_ok=True)
    return run_mining([Path(p) for p in logs], Path(config) if config else None, where, fresh)


def forget_mining_run(run: str, store: str | Path | None = None) -> dict[str, Any]:
    """Take mining run `run`'s candidates out of the store's candidate index (the latest
    run only; `mining.candidates.forget`), so that the next run queues them again."""
    from curate.mining.candidates import forget
    from curate.mining.report import resolve_run

    where = store_for(store)
    return forget(where, resolve_run(where, run))


def import_labels(
    labeled: str | Path,
    name: str,
    out: str | Path = "mined",
    overwrite: bool = False,
    store: str | Path | None = None,
) -> dict[str, Any]:
    """Labeled queue items as the mined source `name` in `out/name/` (`mining.labels`);
    `store`: where the mining runs the items came from are recorded."""
    from curate.mining.labels import import_labels as run_import

    return run_import(Path(labeled), name, Path(out), store_for(store), overwrite)


def gc(
    store: str | Path | None = None, delete: bool = False, cache: bool = False
) -> dict[str, Any]:
    """The objects no manifest names, and with `cache` the caches a rebuild recomputes;
    removed only with `delete` (see `manifests.gc`)."""
    from curate.manifests.gc import collect

    return collect(store_for(store), delete, cache)


def tag(name: str, ref: str, store: str | Path | None = None) -> str:
    where = store_for(store)
    mid = where.resolve(ref)
    where.tag(name, mid)
    return mid
