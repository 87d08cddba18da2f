"""A build's splits in the forms other tools read as they are: JSONL, Parquet, a DatasetDict.

What any trainer trains from an export must be what the build validated. So a tokenized
build's rows carry, beside `input_ids`, the trained tokens in the forms trainers read
(`curate.tokens`): `labels` (-100 outside the trained spans; TRL's `SFTTrainer` takes it as
it is and skips its own tokenization, as do Axolotl and `transformers.Trainer`) and
`assistant_masks` (what older TRL collators read). Only the columns of the build's kinds are
written — a chat build has no all-null `chosen` / `rejected` columns, which made TRL's
dataset sniffing depend on the hash seed — and a split without rows is left out (saved
empty, `datasets.load_from_disk` cannot read it back), which the export says.

`columns = "tokens"` writes exactly `input_ids`, `attention_mask`, `labels`: Axolotl's
pre-tokenized format (a dataset entry with no `type:`), and what `transformers.Trainer`
with `DataCollatorForSeq2Seq` pads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from curate.errors import UserError
from curate.fsio import atomic_path, claim_output_dir, discard, is_sealed, seal

if TYPE_CHECKING:
    from curate.manifests.manifest import Manifest

EXPORT_FORMATS = ("jsonl", "parquet", "hf")
COLUMN_SETS = ("all", "tokens")
# a change to what an exported or loaded row holds names new cache files
TABLE_VERSION = "2"

PAYLOAD = {
    "chat": ("messages",),
    "preference": ("messages", "chosen", "rejected"),
    "text": ("text",),
}
TOKEN_COLUMNS = ("input_ids", "labels", "assistant_masks", "n_tokens", "n_trained", "tokens_cut")
AXOLOTL_COLUMNS = ("input_ids", "attention_mask", "labels")


@dataclass
class Exported:
    """What an export wrote: the files or folder, rows per split written, the splits left
    out because they hold no rows, and the columns of every row."""

    paths: list[Path]
    rows: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)


def is_tokenized(manifest: Manifest) -> bool:
    return bool(manifest.data.get("tokenizer"))


def build_kinds(manifest: Manifest) -> list[str]:
    """The row kinds (chat, preference, text) among the build's output rows."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    kinds: set[str] = set()
    for split in manifest.split_names():
        for shard in manifest.shard_paths(split):
            col = pq.read_table(shard, columns=["kind"]).column("kind")
            kinds.update(k for k in pc.unique(col).to_pylist() if k)
    return sorted(kinds)


def output_columns(manifest: Manifest, columns: str = "all") -> list[str]:
    """The columns an exported or loaded row has, for this build and column set."""
    if columns not in COLUMN_SETS:
        raise UserError(f"unknown column set {columns!r}; use one of {', '.join(COLUMN_SETS)}")
    tokenized = is_tokenized(manifest)
    if columns == "tokens":
        if not tokenized:
            raise UserError(
                "--columns tokens needs token ids: this build has no [tokenizer]; add one to "
                "the config and build again"
            )
        return list(AXOLOTL_COLUMNS)
    payload = [c for kind in build_kinds(manifest) for c in PAYLOAD.get(kind, ())]
    names = ["id", "source", "kind", *dict.fromkeys(payload), "meta", "origin"]
    return names + (list(TOKEN_COLUMNS) if tokenized else [])


def trainer_table(table: pa.Table, names: list[str]) -> pa.Table:
    """`table` (rows as stored) as exported: the mask columns made, only `names` kept."""
    from curate.tokens import mask_columns

    made: dict[str, pa.Array] = {}
    if "labels" in names or "assistant_masks" in names:
        made["labels"], made["assistant_masks"] = mask_columns(
            table.column("input_ids"), table.column("mask_spans")
        )
    if "attention_mask" in names:  # every token is real: rows are not padded
        import numpy as np

        ids = table.column("input_ids").combine_chunks()
        offsets = np.asarray(ids.offsets.to_numpy(), dtype=np.int64)
        ones = pa.array(np.ones(offsets[-1] - offsets[0], dtype=np.int8))
        made["attention_mask"] = pa.ListArray.from_arrays(
            pa.array(offsets - offsets[0], pa.int32()), ones
        )
    return pa.table({name: made[name] if name in made else table.column(name) for name in names})


def split_batches(manifest: Manifest, split: str, names: list[str]) -> Iterator[pa.Table]:
    """The split's rows as exported, one table per stored row group (memory stays bounded)."""
    import pyarrow.parquet as pq

    stored = [n for n in names if n not in ("labels", "assistant_masks", "attention_mask")]
    if any(n in names for n in ("labels", "assistant_masks")):
        stored.append("mask_spans")
    if "attention_mask" in names and "input_ids" not in stored:
        stored.append("input_ids")
    for shard in manifest.shard_paths(split):
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=8192, columns=stored):
            yield trainer_table(pa.Table.from_batches([batch]), names)


def export_schema(manifest: Manifest, names: list[str]) -> pa.Schema:
    """The schema of exported rows (all splits share it, an empty one included)."""
    import pyarrow.parquet as pq

    from curate.rows import ROW_SCHEMA, TOKEN_FIELDS

    for split in manifest.split_names():
        shards = manifest.shard_paths(split)
        if shards:
            stored = pq.read_schema(shards[0])
            break
    else:
        stored = pa.schema(list(ROW_SCHEMA) + TOKEN_FIELDS)
    made = {
        "labels": pa.list_(pa.int64()),
        "assistant_masks": pa.list_(pa.int8()),
        "attention_mask": pa.list_(pa.int8()),
    }
    return pa.schema([pa.field(n, made[n]) if n in made else stored.field(n) for n in names])


def split_arrow(
    manifest: Manifest, split: str, columns: str = "all", names: list[str] | None = None
) -> Path:
    """The split's exported rows as one Arrow stream file in the store's cache, made once
    and sealed (a file that no longer matches its seal is made again); `names`: the
    columns of `columns` where the caller has them already (`output_columns`)."""
    path = manifest.store.cache_path(
        "datasets", manifest.id, f"-{split}-{columns}-v{TABLE_VERSION}.arrow"
    )
    if is_sealed(path):  # made from verified shards before: nothing to read or hash again
        return path
    discard(path)
    names = names or output_columns(manifest, columns)
    schema = export_schema(manifest, names)
    with (
        atomic_path(path, durable=False) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_stream(sink, schema) as writer,
    ):
        wrote = False
        for table in split_batches(manifest, split, names):
            writer.write_table(table.cast(schema))
            wrote = True
        if not wrote:  # an empty split is still a Dataset (with no rows)
            writer.write_table(schema.empty_table())
    seal(path)
    return path


def export(
    manifest: Manifest, fmt: str, out: Path, overwrite: bool = False, columns: str = "all"
) -> Exported:
    """Every split with rows as `<out>/<split>.jsonl` / `.parquet`, or a DatasetDict folder
    `<out>/dataset` with a dataset card (hf). `out` must be new or empty unless `overwrite`;
    then only curate's own files there are replaced (a split's file from an earlier export
    that this build has no rows for is removed, so no stale split stays beside the new)."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    names = output_columns(manifest, columns)
    splits = manifest.split_names()
    rows = {s: int(manifest.data["splits"][s]["rows"]) for s in splits}
    kept = [s for s in splits if rows[s] > 0]
    skipped = [s for s in splits if rows[s] == 0]
    if not kept:
        raise UserError(
            f"manifest {manifest.id[:12]} has no rows in any split: nothing to export "
            f"(`curate show {manifest.id[:12]}` shows where they went)"
        )
    owned = ["dataset"] if fmt == "hf" else [f"{split}.{fmt}" for split in splits]
    claim_output_dir(out, owned, overwrite)
    result = Exported([], {s: rows[s] for s in kept}, skipped, names)
    if fmt == "hf":
        result.paths.append(_write_hf(manifest, out / "dataset", kept, skipped, columns, names))
        return result
    schema = export_schema(manifest, names)
    for split in kept:
        target = out / f"{split}.{fmt}"
        with atomic_path(target) as tmp:
            if fmt == "parquet":
                _write_parquet(tmp, schema, split_batches(manifest, split, names))
            else:
                _write_jsonl(tmp, split_batches(manifest, split, names))
        result.paths.append(target)
    for split in skipped:  # curate's own file from an earlier export of other rows
        stale = out / f"{split}.{fmt}"
        if stale.is_file():
            stale.unlink()
    return result


def _write_parquet(tmp: Path, schema: pa.Schema, tables: Iterator[pa.Table]) -> None:
    import pyarrow.parquet as pq

    from curate.engines.passes import PARQUET_OPTIONS

    with pq.ParquetWriter(str(tmp), schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table.cast(schema), row_group_size=PARQUET_OPTIONS["row_group_size"])


def _write_jsonl(tmp: Path, tables: Iterator[pa.Table]) -> None:
    import polars as pl

    with open(tmp, "wb") as fh:
        for table in tables:
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            frame.write_ndjson(fh)


def _write_hf(
    manifest: Manifest,
    target: Path,
    kept: list[str],
    skipped: list[str],
    columns: str,
    names: list[str],
) -> Path:
    import datasets

    from curate.manifests.card import dataset_card
    from curate.manifests.manifest import warnings

    parts = {
        s: datasets.Dataset.from_file(str(split_arrow(manifest, s, columns, names))) for s in kept
    }
    shown = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # curate prints what it wrote; no bar per split
    try:
        with atomic_path(target, is_dir=True, replace=True) as tmp:
            datasets.DatasetDict(parts).save_to_disk(str(tmp))
            card = dataset_card(
                manifest.id, manifest.data, warnings(manifest.data), export_notes(manifest, skipped)
            )
            (Path(tmp) / "README.md").write_text(card, encoding="utf-8")
    finally:
        if shown:
            datasets.enable_progress_bars()
    return target


def export_notes(manifest: Manifest, skipped: list[str]) -> dict[str, Any]:
    """What a card says about training on the export: the mask columns and the pad token."""
    tok = manifest.data.get("tokenizer") or {}
    return {
        "tokenized": bool(tok),
        "skipped": skipped,
        "end_of_turn": (tok.get("template") or {}).get("end_of_turn"),
        "pad_token": tok.get("pad_token"),
        "generation_markers": bool((tok.get("template") or {}).get("generation_markers")),
    }
