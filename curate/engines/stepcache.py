"""Step outputs cached per block, so that a rebuild recomputes only what a change reaches.

An entry is what one segment of steps (row steps, then the keys of the global step that
closes it) made of one block: the block's part of the index (verdicts, index columns, meta
fields), the global step's keys, and the block with the columns the steps added, when they
added any. Its key hashes everything that result depends on:
- the block's state: the key of the read block (its file's sha256 and byte range, the
  reader's version), or of the entry whose block this segment reads;
- which of its rows are still alive (global steps before this segment decided that, over
  every block: a changed source can change it here too);
- the steps' fingerprints (params and versions) and the meta fields read;
- the reviewers' keep decisions that name rows of this block (decisions about other rows
  leave the entry valid, so a round of review does not recompute the whole build);
- curate's code (every module's bytes: an edited step never meets its old outputs).
So a rebuild after one source changed reads and runs only that source's blocks, and after
one step's params changed, only that step's segment and what follows it. A global step's
verdicts are cached as well, under every block's state and the alive rows (which fix what
it resolves over), and the write phase's objects under the plan of every row.

Parts are immutable under their key. A small JSON record, written last, names each part's
checksum: an entry without it (a kill -9 while writing) or whose parts no longer match it is
never read, only recomputed. The write phase's record (which shards make which split) is
sealed with its key likewise (`fsio.sealed_json`). Builds that redact or reject PII keep
entries only because the PII step runs in their first segment: every block an entry keeps
holds redacted text (rows rejected while reading, their evidence scrubbed too); they keep
no read blocks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate import __version__
from curate.fsio import atomic_path, checksum_file, sealed_json, unseal_json
from curate.steps import GlobalStep, RowStep, Verdicts

CACHE_VERSION = "2"  # bump when what an entry holds changes


@dataclass
class SegmentOut:
    """One block's result of a segment, from the cache or computed: its index part, the
    next global step's keys (None without one), the file holding the block with the
    columns the steps added (None: the block's file is unchanged), the block's new state
    (the entry key; None where nothing is cached) and how it was had."""

    index: pa.Table
    keys: pa.Table | None
    block: str | None
    state: str | None
    hit: bool = False
    read: bool = False  # the block was read from its source file
    spilled: str | None = None  # the file holding the keys not sent back (`passes.keep_keys`)


def segment_key(
    state: str,
    row_steps: list[RowStep],
    key_step: GlobalStep | None,
    alive: np.ndarray | None,
    meta_fields: dict[str, str],
    kept: list[list[str | None]],
) -> str:
    """The entry key of a segment over a block (`alive`: None for the first segment, whose
    rows are alive as read)."""
    blob: dict[str, Any] = {
        "code": code_digest(),
        "state": state,
        "steps": [s.fingerprint() for s in row_steps],
        "key_step": key_step.fingerprint() if key_step is not None else None,
        "meta_fields": meta_fields,
        "keeps": kept,
    }
    if alive is not None:
        blob["alive"] = [len(alive), hashlib.sha256(np.packbits(alive).tobytes()).hexdigest()]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 over curate's modules: part of every cache key, so that a changed step (an
    upgrade, or an edit without a version bump) recomputes instead of reusing old outputs."""
    import numpy
    import polars

    import curate

    # steps' keys come from these libraries too (exact dedup's are polars' row hashes, stable
    # only within one polars version): an upgrade recomputes instead of mixing old keys in
    libraries = f"polars {polars.__version__} pyarrow {pa.__version__} numpy {numpy.__version__}"
    digest = hashlib.sha256(f"{CACHE_VERSION}\x00{__version__}\x00{libraries}".encode())
    package = Path(curate.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\x00")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def resolve_key(
    step: GlobalStep, sources: list[str], states: list[str | None], alive: np.ndarray
) -> str | None:
    """The key of a global step's verdicts: the blocks' states (which fix every alive
    row's keys, id and source), which rows are alive, the step and the sources; None where
    a state is unknown. Keep decisions are applied after, so they are not part of it."""
    if not states or any(s is None for s in states):
        return None
    blob = {
        "code": code_digest(),
        "resolve": step.fingerprint(),
        "sources": sources,
        "states": states,
        "alive": [len(alive), hashlib.sha256(np.packbits(alive).tobytes()).hexdigest()],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def kept_in_block(ids: pa.Array | pa.ChunkedArray, keeps: dict[str, str | None] | None) -> list:
    """The keep decisions (base id, reason) that name rows of a block, sorted: what of the
    reviewers' decisions can change its result."""
    if not keeps:
        return []
    import polars as pl

    base = pl.Series(ids).str.split("#").list.first().unique()
    named = base.filter(base.is_in(list(keeps))).sort().to_list()
    return [[b, keeps[b]] for b in named]


class StepCache:
    """The entries of one store (`root`: its `cache/steps` folder); `scratch` is where
    temps are written (the build's scratch folder: a killed build leaves none here)."""

    def __init__(self, root: str, scratch: str):
        self.root = Path(root)
        self.scratch = Path(scratch)

    def path(self, key: str, part: str) -> Path:
        return self.root / key[:2] / f"{key}.{part}"

    def load(self, key: str) -> SegmentOut | None:
        """The segment entry under `key`, when it is whole; else None."""
        tables = self.load_tables(key)
        if tables is None or tables.get("index.arrow") is None:
            return None
        whole = tables.get("block.arrow") is not None
        block = str(self.path(key, "block.arrow")) if whole else None
        return SegmentOut(tables["index.arrow"], tables.get("keys.arrow"), block, key, hit=True)

    def block_path(self, key: str) -> str:
        """Where a segment computed under `key` writes the block with its columns."""
        return str(self.path(key, "block.arrow"))

    def save(self, out: SegmentOut) -> None:
        """Write `out`'s index and keys beside its block (already written at `block_path`,
        if any), then the record that makes the entry readable."""
        assert out.state is not None
        tables = {"index.arrow": out.index, "keys.arrow": out.keys}
        self.save_tables(out.state, tables, {"block.arrow": out.block})

    def load_tables(self, key: str) -> dict[str, Any] | None:
        """{part: table (memory-mapped; a block part: True) or None} of the entry under
        `key`, when its record exists and every part still matches it; else None."""
        from curate.engines.passes import read_ipc

        try:
            parts = json.loads(self.path(key, "json").read_text())["parts"]
            for part, checksum in parts.items():
                if checksum is not None and checksum_file(self.path(key, part)) != checksum:
                    return None
            return {
                part: None
                if checksum is None
                else (True if part == "block.arrow" else read_ipc(self.path(key, part)))
                for part, checksum in parts.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowInvalid):
            return None

    def save_tables(
        self, key: str, tables: dict[str, pa.Table | None], files: dict[str, str | None]
    ) -> None:
        """Write `tables` under `key` beside `files` (parts written already, at their
        `path(key, part)`), then the record of every part's checksum."""
        from curate.engines.passes import write_ipc

        parts: dict[str, str | None] = {}
        for part, table in tables.items():
            if table is not None:
                write_ipc(table, self.path(key, part), temp_dir=self.scratch)
            parts[part] = None if table is None else checksum_file(self.path(key, part))
        for part, file in files.items():
            parts[part] = None if file is None else checksum_file(file)
        record = json.dumps({"parts": parts}, sort_keys=True).encode()
        with atomic_path(self.path(key, "json"), durable=False, temp_dir=self.scratch) as tmp:
            tmp.write_bytes(record)

    def verdicts(self, key: str, n: int) -> Verdicts | None:
        """A global step's verdicts over `n` alive rows, cached under `key`; else None."""
        tables = self.load_tables(key)
        if tables is None or tables.get("verdicts.arrow") is None:
            return None
        found = tables["verdicts.arrow"]
        columns = tables.get("columns.arrow")
        if columns is not None and columns.num_rows != n:
            return None
        rows = found.column("row").to_numpy()
        return Verdicts(
            n,
            rows,
            found.column("reason").combine_chunks(),
            found.column("detail").combine_chunks(),
            columns,
        )

    def save_verdicts(self, key: str, verdicts: Verdicts) -> None:
        found = pa.table(
            {
                "row": pa.array(verdicts.rows, pa.int64()),
                "reason": verdicts.reason,
                "detail": verdicts.detail,
            }
        )
        self.save_tables(key, {"verdicts.arrow": found, "columns.arrow": verdicts.columns}, {})

    def outputs(self, key: str, exists: Callable[[str], bool]) -> dict[str, Any] | None:
        """The write phase's record under `key` (its splits and ledger entries), when every
        object it names is still in the store (`exists`); else None."""
        try:
            record = unseal_json(self.path(key, "outputs.json").read_bytes(), key)
            if record is None:  # damaged or edited (shards swapped between splits, say)
                return None
            named = [s["object"] for split in record["splits"].values() for s in split["shards"]]
            named += [p["object"] for p in record["ledger"]["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record if all(exists(sha) for sha in named) else None

    def save_outputs(self, key: str, record: dict[str, Any]) -> None:
        path = self.path(key, "outputs.json")
        with atomic_path(path, durable=False, temp_dir=self.scratch) as tmp:
            tmp.write_bytes(sealed_json(record, key))
