"""Where a distributed engine leaves a global step's keys: with the workers, in files.

On the Ray engine a global step that can resolve in parts (`GlobalStep.spread_keys`) does
not bring its keys back to the driver: each block's task writes them to a file beside the
block (`spill`), and the step's `resolve_spread` runs tasks that read them there
(`KeyParts`). A step with a `partition_by` column gets its rows grouped by that column's
hash into parts, one record batch each: the task for part p reads batch p of every file
and nothing else, so rows with equal keys meet in one task (a shuffle by key, through the
shared filesystem the store is on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.fsio import atomic_path


@dataclass(frozen=True)
class KeyParts:
    """A global step's keys where the workers left them: per block, the file of its key
    columns (every row of the block; None where nothing was written) and its alive rows
    (positions in that file, in canonical order). Row i of the step is the i-th alive row
    counting block by block."""

    files: list[str | None]
    rows: list[np.ndarray]
    parts: int = 1  # record batches per file: rows grouped by `GlobalStep.partition_by`

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(r) for r in self.rows])]).astype(np.int64)

    @property
    def n(self) -> int:
        return int(self.starts[-1])

    def _column(self, block: int, name: str) -> pa.Array:
        from curate.engines.passes import read_ipc

        path = self.files[block]
        assert path is not None, f"block {block} has alive rows but no key file"
        column = read_ipc(path).column(name)  # memory-mapped: only what is taken is read
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()

    def band(self, name: str, b: int) -> np.ndarray:
        """Band `b` of the hashes in column `name` for every alive row."""
        parts = [np.empty(0, dtype=np.uint64)]
        for block, rows in enumerate(self.rows):
            if len(rows):
                bands = self._column(block, name)
                width = bands.type.list_size
                # the child's buffer, not `flatten()`, which drops the dead rows' (null)
                # slots: their values are never taken
                child = bands.values
                hashes = np.frombuffer(child.buffers()[1], dtype=np.uint64)
                at = child.offset + bands.offset * width
                flat = hashes[at : at + len(bands) * width]
                parts.append(flat.reshape(-1, width)[rows, b])
        return np.concatenate(parts)

    def usable(self, shingles: str = "shingles") -> np.ndarray:
        """Per alive row: whether it has any shingle (rows without one pair with nothing)."""
        parts = [np.empty(0, dtype=bool)]
        for block, rows in enumerate(self.rows):
            if len(rows):
                offsets = np.asarray(self._column(block, shingles).offsets)
                parts.append(np.diff(offsets)[rows] > 0)
        return np.concatenate(parts)

    def jaccard(self, pairs: np.ndarray, shingles: str = "shingles") -> np.ndarray:
        """Exact Jaccard of each pair of rows (`minhash.jaccard`), from only their shingles."""
        from curate.dedup.kernels import pair_jaccard

        if len(pairs) == 0:
            return np.zeros(0)
        needed = np.unique(pairs.ravel())
        starts = self.starts
        block_of = np.searchsorted(starts, needed, side="right") - 1
        taken = []
        for block in np.unique(block_of):
            local = self.rows[block][needed[block_of == block] - starts[block]]
            taken.append(self._column(int(block), shingles).take(pa.array(local)))
        sets = pa.concat_arrays(taken)
        offs = np.asarray(sets.offsets.to_numpy(), dtype=np.int64)
        flat = sets.values.to_numpy()
        a, z = (np.searchsorted(needed, pairs[:, k]).astype(np.int64) for k in (0, 1))
        return pair_jaccard(offs, flat, a, z)

    def part(self, p: int, names: list[str]) -> tuple[np.ndarray, pa.Table]:
        """Part `p` of every file (rows whose partition column hashes to p): the rows' step
        numbers (ascending) and their columns `names`."""
        found: list[tuple[np.ndarray, pa.Table]] = []
        starts = self.starts
        for block, path in enumerate(self.files):
            if path is None or not len(self.rows[block]):
                continue
            with pa.memory_map(path) as source:
                batch = pa.ipc.open_file(source).get_batch(p)
            local = batch.column("row").to_numpy()
            step_rows = starts[block] + np.searchsorted(self.rows[block], local)
            found.append((step_rows, pa.Table.from_batches([batch]).select(names)))
        if not found:
            return np.empty(0, dtype=np.int64), pa.table({})
        rows = np.concatenate([r for r, _ in found])
        table = pa.concat_tables([t for _, t in found])
        order = np.argsort(rows, kind="stable")
        return rows[order], table.take(pa.array(order))


def spill(table: pa.Table, spread: list[str], path: Path, key: str | None, parts: int) -> None:
    """Write a block's `spread` key columns to `path`: every row as one batch, or, with a
    partition `key`, the alive rows (key not null) as `parts` batches by the key's value
    modulo `parts`, each with its rows' positions in the block (`row`)."""
    from curate.engines.passes import write_ipc

    columns = table.select(spread).combine_chunks()
    if key is None:
        write_ipc(columns, path)
        return
    alive = np.nonzero(pc.is_valid(columns.column(key)).to_numpy(zero_copy_only=False))[0]
    values = columns.column(key).combine_chunks().take(pa.array(alive)).to_numpy()
    part = (values % np.uint64(parts)).astype(np.int64)
    order = np.argsort(part, kind="stable")  # block order within a part
    rows = alive[order]
    taken = columns.take(pa.array(rows)).append_column("row", pa.array(rows, pa.int64()))
    bounds = np.searchsorted(part[order], np.arange(parts + 1))
    batches = [
        taken.slice(a, z - a).combine_chunks().to_batches(max_chunksize=None)
        for a, z in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    schema = taken.schema
    with (
        atomic_path(path, durable=False) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_file(sink, schema) as writer,
    ):
        for pieces in batches:  # one batch per part, empty ones too: part p is batch p
            writer.write_batch(pieces[0] if pieces else pa.RecordBatch.from_pylist([], schema))
