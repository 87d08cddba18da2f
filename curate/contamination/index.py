"""Eval contamination: an index of hashed word n-grams of eval items, and the row step.

Eval sets are read from jsonl / json / parquet / csv (optionally .gz); `fields` name the
columns that form an item. Items and rows are normalized alike (NFKC, case, punctuation and
whitespace, thousands separators: see `dedup.shingles`), so light edits do not hide a leak,
and a row's turns are joined before it is cut into n-grams, so an item split across turns
is still found. An item shorter than `ngram` words is indexed as one n-gram of all its words
(the whole item must then appear). A row is `contaminated` when it holds at least
`threshold` of one item's n-grams; the detail names the eval set, the item, the share
(`overlap`), the matched span of the row (normalized) and the start of the item.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curate.dedup.shingles import ngram_hashes, row_text, sorted_unique, words
from curate.errors import UserError
from curate.fsio import atomic_path, checksum_file
from curate.steps import ReportView, RowStep, Verdicts

MIN_WORDS = 4  # an item with fewer words matches too much by chance: not indexed
ID_FIELDS = ("id", "task_id", "question_id", "uid")
CHUNK_ROWS = 4096  # rows checked at once: larger batches fall out of the CPU caches (~15% slower)


def read_eval_table(path: Path) -> pa.Table:
    """The eval file as a table (jsonl, json list, parquet, csv; .gz allowed)."""
    name = path.name.lower()
    raw = path.read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
        name = name[:-3]
    try:
        if name.endswith((".jsonl", ".ndjson")):
            rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
            return _string_table([_flat(r) for r in rows])
        if name.endswith(".json"):
            data = json.loads(raw.decode("utf-8"))
            rows = data.get("data", data) if isinstance(data, dict) else data
            return _string_table([_flat(r) for r in rows])
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(io.BytesIO(raw))
        if name.endswith(".csv"):
            import pyarrow.csv as pcsv

            return pcsv.read_csv(io.BytesIO(raw))
    except (ValueError, pa.ArrowInvalid) as exc:
        raise UserError(f"eval set {path}: cannot be read: {exc}") from exc
    raise UserError(f"eval set {path}: use .jsonl, .json, .parquet or .csv (optionally .gz)")


def _string_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows of strings as a table with every key any row has (Arrow would take the first
    row's keys only, and silently drop a field the first item lacks)."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    return pa.Table.from_pylist(rows, schema=pa.schema([(n, pa.string()) for n in names]))


def _flat(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        return {"text": json.dumps(row)}
    return {k: v if isinstance(v, str) or v is None else json.dumps(v) for k, v in row.items()}


@dataclass
class EvalSet:
    name: str
    ids: list[str]
    texts: list[str]
    too_short: int


def _is_intact(folder: Path) -> bool:
    """The cached index folder holds exactly the files its `done` list hashed."""
    try:
        hashes = json.loads((folder / "done").read_text())
        return bool(hashes) and all(checksum_file(folder / n) == h for n, h in hashes.items())
    except (OSError, ValueError, AttributeError):
        return False


def load_eval(name: str, path: Path, fields: list[str]) -> EvalSet:
    table = read_eval_table(path)
    present = [f for f in fields if f in table.column_names]
    if not present:
        raise UserError(
            f"[[evals]] {name!r}: none of fields {fields} is a column of {path.name} "
            f"(it has {', '.join(table.column_names) or 'no columns'}): nothing would be checked"
        )
    id_field = next((f for f in ID_FIELDS if f in table.column_names), None)
    values = [table.column(f).cast(pa.string()).to_pylist() for f in present]
    texts = ["\n".join(v for v in parts if v) for parts in zip(*values, strict=True)]
    ids = (
        [str(x) for x in table.column(id_field).to_pylist()]
        if id_field
        else [str(i) for i in range(table.num_rows)]
    )
    return EvalSet(name, ids, texts, 0)


class ContaminationStep(RowStep):
    name = "contamination"
    stage = "contamination"
    version = "2"

    def __init__(
        self,
        evals: list[EvalSet],
        ngram: int = 13,
        threshold: float = 0.5,
        cache_dir: str | None = None,
    ):
        self.ngram, self.threshold = ngram, threshold
        self._index_dir: str | None = None
        self._frames: dict[int, pl.DataFrame] | None = None
        self.sets = [e.name for e in evals]
        hashes, items, sizes, totals = [], [], [], []
        self.item_set: list[int] = []
        self.item_id: list[str] = []
        self.item_text: list[str] = []
        self.eval_counts: dict[str, dict[str, int]] = {}
        for s, ev in enumerate(evals):
            word_hash, offsets, _ = words(pa.array(ev.texts, pa.string()))
            lengths = np.diff(offsets)
            short = 0
            for k, (item, length) in enumerate(zip(ev.ids, lengths.tolist(), strict=True)):
                if length < MIN_WORDS:
                    short += 1
                    continue
                n = min(ngram, length)
                h, _, _ = ngram_hashes(
                    word_hash[offsets[k] : offsets[k + 1]], np.array([0, length]), n
                )
                h = sorted_unique(h)
                index = len(self.item_id)
                self.item_set.append(s)
                self.item_id.append(item)
                self.item_text.append(ev.texts[k][:500])
                hashes.append(h)
                items.append(np.full(len(h), index, dtype=np.int32))
                sizes.append(np.full(len(h), n, dtype=np.int16))
                totals.append(len(h))
            self.eval_counts[ev.name] = {
                "items": len(ev.ids),
                "indexed": len(ev.ids) - short,
                "too_short": short,
            }
        self.hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
        self.items = np.concatenate(items) if items else np.zeros(0, np.int32)
        self.sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int16)
        self.totals = np.asarray(totals, dtype=np.int64)
        if cache_dir is not None and len(self.hashes):
            self._store_index(Path(cache_dir))

    # The index (n-gram hashes, their items, the items' ids and texts) can be large: with a
    # cache folder it is written there once and read memory-mapped by each worker, instead
    # of being pickled into every task.
    _ARRAYS = ("hashes", "items", "sizes", "totals", "item_set")
    _LARGE = (*_ARRAYS, "item_id", "item_text")

    def _store_index(self, cache: Path) -> None:
        folder = cache / _digest(self.hashes, self.items)[:32]
        if not _is_intact(folder):  # workers read it unchecked: it is checked here
            shutil.rmtree(folder, ignore_errors=True)
            try:
                with atomic_path(folder, is_dir=True, durable=False) as tmp:
                    for name in self._ARRAYS:
                        np.save(tmp / f"{name}.npy", np.asarray(getattr(self, name)))
                    table = pa.table({"id": self.item_id, "text": self.item_text})
                    with (
                        pa.OSFile(str(tmp / "items.arrow"), "wb") as sink,
                        pa.ipc.new_file(sink, table.schema) as writer,
                    ):
                        writer.write_table(table)
                    hashes = {f.name: checksum_file(f) for f in sorted(tmp.iterdir())}
                    (tmp / "done").write_text(json.dumps(hashes, sort_keys=True))
            except OSError:  # another build stored the same index first
                pass
        self._index_dir = str(folder)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_frames"] = None
        if self._index_dir is not None:
            for name in self._LARGE:
                state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._index_dir is not None and "hashes" not in state:
            folder = Path(self._index_dir)
            for name in self._ARRAYS:
                setattr(self, name, np.load(folder / f"{name}.npy", mmap_mode="r"))
            with pa.memory_map(str(folder / "items.arrow")) as source:
                table = pa.ipc.open_file(source).read_all()
            self.item_id = table.column("id").combine_chunks()
            self.item_text = table.column("text").combine_chunks()

    def _index(self) -> dict[int, pl.DataFrame]:
        """The index as one polars frame per n-gram size, built once per process."""
        if self._frames is None:
            sizes = np.asarray(self.sizes)
            self._frames = {}
            for size in sorted_unique(sizes).tolist():
                pick = sizes == size
                self._frames[int(size)] = pl.DataFrame(
                    {"h": np.asarray(self.hashes)[pick], "item": np.asarray(self.items)[pick]}
                )
        return self._frames

    def params(self) -> dict[str, Any]:
        return {
            "ngram": self.ngram,
            "threshold": self.threshold,
            "evals": self.eval_counts,
            "index_sha256": _digest(self.hashes, self.items),
        }

    def manifest_report(self, view: ReportView) -> dict[str, Any]:
        """Per eval set: items, how many leaked, and from which sources (rows)."""
        leaks = view.index.filter(pl.col("reason") == "contaminated").select(
            "source_rank",
            pl.col("detail").str.json_path_match("$.eval_set").alias("eval_set"),
            pl.col("detail").str.json_path_match("$.eval_id").alias("eval_id"),
        )
        out: dict[str, Any] = {}
        for name, counts in self.eval_counts.items():
            mine = leaks.filter(pl.col("eval_set") == name)
            by_source = {
                view.sources[rank]: int(k)
                for rank, k in mine.group_by("source_rank").len().sort("source_rank").iter_rows()
            }
            out[name] = {
                **counts,
                "leaked_items": mine["eval_id"].n_unique(),
                "rows": mine.height,
                "by_source": by_source,
            }
        return {"contamination": out}

    def __call__(self, batch: pa.Table) -> Verdicts:
        n = batch.num_rows
        if len(self.hashes) == 0:
            return Verdicts.keep_all(n)
        rows: list[np.ndarray] = []
        details: list[dict[str, Any]] = []
        for start in range(0, n, CHUNK_ROWS):
            found, evidence = self._leaks(batch.slice(start, CHUNK_ROWS))
            rows.append(found + start)
            details += evidence
        if not details:
            return Verdicts.keep_all(n)
        return Verdicts.reject(n, np.concatenate(rows), "contaminated", details)

    def _leaks(self, batch: pa.Table) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Rows of `batch` that leak an item, and the evidence of each."""
        none = np.zeros(0, dtype=np.int64)
        text = row_text(batch, ("system", "user", "assistant", "tool"))
        word_hash, offsets, flat_words = words(text)
        found = []
        for size, index in self._index().items():
            h, owner, start = ngram_hashes(word_hash, offsets, size, short=False)
            rows = pl.DataFrame(
                {"h": h, "row": owner, "start": start, "size": np.full(len(h), size)}
            )
            found.append(rows.join(index, on="h", how="inner"))
        hits = pl.concat(found)
        if hits.height == 0:
            return none, []
        per_pair = hits.group_by("row", "item").agg(
            pl.col("h").n_unique().alias("matched"),
            pl.col("start").min().alias("first"),
            (pl.col("start") + pl.col("size")).max().alias("last"),
        )
        totals = self.totals[per_pair["item"].to_numpy()]
        per_pair = per_pair.with_columns(
            pl.Series("overlap", per_pair["matched"].to_numpy() / totals)
        )
        leaks = (
            per_pair.filter(pl.col("overlap") >= self.threshold)
            .sort(["row", "overlap", "item"], descending=[False, True, False])
            .group_by("row", maintain_order=True)
            .first()
        )
        if leaks.height == 0:
            return none, []
        details = []
        for item, first, last, overlap in leaks.select(
            "item", "first", "last", "overlap"
        ).iter_rows():
            span = " ".join(flat_words.slice(first, min(last - first, 200)).to_pylist())
            details.append(
                {
                    "eval_set": self.sets[self.item_set[item]],
                    "eval_id": _text(self.item_id[item]),
                    "overlap": round(float(overlap), 4),
                    "match": span[:300],
                    "item": _text(self.item_text[item]),
                }
            )
        return leaks["row"].to_numpy().astype(np.int64), details


def _text(value: Any) -> str:
    """An item's id or text: a str, or an Arrow scalar once the index is memory-mapped."""
    return value if isinstance(value, str) else value.as_py()


def _digest(hashes: np.ndarray, items: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(hashes.tobytes() + items.tobytes()).hexdigest()
