"""Sources: a source's files → blocks, the units a build reads in parallel.

Files are scanned in parallel (`scan_file`, one pass that hashes a file and finds its block
boundaries), then cut into blocks (`plan_blocks`).

A source's files are cut into blocks (byte ranges of a JSONL file at line boundaries, row
groups of a Parquet file, records of a `save_to_disk` folder, a whole CSV or JSON file);
compressed files are first decompressed once into the store's cache. Each file is hashed
(its sha256 goes in the manifest and keys the block cache). `readers.py` reads a block.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.config import COMPRESSIONS, data_suffix
from curate.errors import InputError
from curate.fsio import atomic_path, discard, is_sealed, seal, sha256_file

JSONL_BLOCK_BYTES = 8 << 20
ROWS_PER_BLOCK = 65_536
ORDER_FILE_SHIFT = 40  # order = file index << 40 | record number within the file


@dataclass(frozen=True)
class BlockTask:
    """One unit of parallel reading: a slice of one file of one source."""

    source: str
    fmt: str
    path: str  # absolute path on this machine
    shown: str  # path as the manifest names it (relative to the config)
    kind: str  # jsonl | json | csv | parquet | arrow
    file_index: int
    start: int  # byte offset (jsonl) or first record (others)
    stop: int
    first_line: int  # 1-based line (jsonl) or record number of the block's first row
    file_sha256: str
    strict: bool = False
    columns: tuple[tuple[str, str], ...] = ()  # renames: (column in the file, field curate reads)

    def fingerprint(self) -> str:
        parts = [
            self.source,
            self.fmt,
            self.kind,
            self.file_sha256,
            str(self.file_index),
            str(self.start),
            str(self.stop),
        ]
        parts += [f"{a}->{b}" for a, b in self.columns]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def file_kind(path: Path) -> str:
    if path.is_dir():
        return "arrow"
    suffix = data_suffix(path)
    return {
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".json": "json",
        ".csv": "csv",
        ".parquet": "parquet",
    }[suffix or ""]


def _decompressed(path: Path, sha: str, scratch: Path) -> Path:
    """A compressed file's plain copy in the store's cache (made once, atomically), so that
    it can be cut into blocks and read in parallel like any other file."""
    openers: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    opener = openers[path.suffix.lower()]
    target = scratch / f"{sha}{data_suffix(path)}"
    if not is_sealed(target):
        discard(target)
        try:
            with (
                atomic_path(target, durable=False) as tmp,
                opener(path, "rb") as src,
                open(tmp, "wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise InputError(f"{path}: cannot decompress ({exc})") from exc
        seal(target)
    return target


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a save_to_disk folder's files (names and bytes, sorted)."""
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode() + b"\x00")
        sha256_file(f, digest)
    return digest.hexdigest()


FileScan = tuple[str, str, str, int, list[tuple[int, int, int]]]


def scratch_dir(store_root: Path) -> str:
    """Where a store keeps plain copies of compressed sources."""
    return str(Path(store_root) / "cache" / "decompressed")


def scan_file(path: str, scratch: str | None = None) -> FileScan:
    """One pass over a file: (path to read, kind, sha256, bytes, blocks).

    Blocks are (start, stop, first line or record). The sha256 and size are the file's as
    the user has it; a compressed file is read from a plain copy made in `scratch`.
    """
    file = Path(path)
    kind = file_kind(file)
    if file.is_file() and file.suffix.lower() in COMPRESSIONS:
        sha, size = file_sha256(file), file.stat().st_size
        plain = _decompressed(
            file, sha, Path(scratch) if scratch else file.parent / ".curate-decompressed"
        )
        ranges = scan_file(str(plain), scratch)[4]
        return str(plain), kind, sha, size, ranges
    if kind == "jsonl":
        sha, ranges = _scan_jsonl(file)
        return path, kind, sha, file.stat().st_size, ranges
    sha = file_sha256(file)
    if file.is_dir():
        size = sum(p.stat().st_size for p in file.rglob("*") if p.is_file())
    else:
        size = file.stat().st_size
    if kind == "parquet":
        try:
            ranges = [(a, b, a + 1) for a, b in _parquet_ranges(file)]
        except (OSError, ValueError) as exc:  # pyarrow's errors are ValueErrors too
            raise InputError(
                f"{path}: not a readable Parquet file ({exc}); is it cut short, or empty?"
            ) from exc
    elif kind == "arrow":
        ranges = [(a, b, a + 1) for a, b in _record_ranges(_arrow_rows(file))]
    else:
        ranges = [(0, size, 1)]
    return path, kind, sha, size, ranges


class Prescan:
    """Scans files on background threads while the caller does other work.

    The CLI starts it as soon as the config is read, so that hashing the sources (hashlib
    releases the GIL) overlaps with importing pyarrow and polars; two threads, so that both
    cores hash once the imports are done. `results()` joins the threads: call it before any
    worker process is forked. A file whose scan fails is left out and scanned again by the
    build, which then reports the problem.
    """

    THREADS = 2

    def __init__(self, jobs: list[tuple[str, str | None]]):
        self._found: dict[tuple[str, str | None], FileScan] = {}
        self._jobs = list(jobs)
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"curate-prescan-{k}")
            for k in range(min(self.THREADS, len(self._jobs)))
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    return
                job = self._jobs.pop(0)
            try:
                found = scan_file(*job)
            except Exception:  # noqa: BLE001 - the build scans it again and reports it
                continue
            with self._lock:
                self._found[job] = found

    def results(self) -> dict[tuple[str, str | None], FileScan]:
        for thread in self._threads:
            thread.join()
        return self._found


def plan_blocks(
    source: str,
    fmt: str,
    shown: list[str],
    scans: list[FileScan],
    strict: bool = False,
    columns: dict[str, str] | None = None,
) -> tuple[list[BlockTask], list[dict[str, Any]]]:
    """Blocks for a source's scanned files, and the files' manifest entries.

    `shown` names each file as the manifest does (relative to the config).
    """
    renames = tuple(sorted((columns or {}).items()))
    tasks: list[BlockTask] = []
    entries: list[dict[str, Any]] = []
    for index, (name, (path, kind, sha, size, ranges)) in enumerate(zip(shown, scans, strict=True)):
        entries.append({"path": name, "sha256": sha, "bytes": size})
        tasks += [
            BlockTask(source, fmt, path, name, kind, index, a, b, first, sha, strict, renames)
            for a, b, first in ranges
        ]
    return tasks, entries


def _scan_jsonl(path: Path) -> tuple[str, list[tuple[int, int, int]]]:
    """sha256 of the file and byte ranges of about JSONL_BLOCK_BYTES that end at a newline.

    Read into one reused buffer: a fresh 1 MiB object per read would be fresh memory each
    time, and its page faults would cost more than hashing it.
    """
    digest = hashlib.sha256()
    ranges: list[tuple[int, int, int]] = []
    start, line, pos = 0, 1, 0
    lines_in_block = 0
    import numpy as np

    buf = bytearray(1 << 20)
    view = memoryview(buf)
    bytes_ = np.frombuffer(buf, dtype=np.uint8)
    with open(path, "rb", buffering=0) as fh:
        while size := fh.readinto(buf):
            chunk = view[:size] if size < len(buf) else buf
            digest.update(chunk)
            pos += size
            if pos - start >= JSONL_BLOCK_BYTES:
                cut = buf.rfind(b"\n", 0, size)
                if cut >= 0:
                    stop = pos - size + cut + 1
                    lines_in_block += _newlines(bytes_, 0, cut + 1)
                    ranges.append((start, stop, line))
                    line += lines_in_block
                    lines_in_block = _newlines(bytes_, cut + 1, size)
                    start = stop
                    continue
            lines_in_block += _newlines(bytes_, 0, size)
    if pos > start:
        ranges.append((start, pos, line))
    return digest.hexdigest(), ranges


def _newlines(data: Any, start: int, stop: int) -> int:
    """Newlines in data[start:stop] (numpy: about twice as fast as `bytes.count`)."""
    import numpy as np

    return int(np.count_nonzero(data[start:stop] == 10))


def _record_ranges(total: int) -> list[tuple[int, int]]:
    return [(a, min(a + ROWS_PER_BLOCK, total)) for a in range(0, total, ROWS_PER_BLOCK)] or [
        (0, 0)
    ]


def _parquet_ranges(path: Path) -> list[tuple[int, int]]:
    """Row ranges on row-group boundaries (small groups merged up to ROWS_PER_BLOCK), so that
    no block reads a row group another block reads too."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    ranges: list[tuple[int, int]] = []
    start = stop = 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if stop > start and stop - start + n > ROWS_PER_BLOCK:
            ranges.append((start, stop))
            start = stop
        stop += n
    if stop > start or not ranges:
        ranges.append((start, stop))
    return ranges


def arrow_files(path: Path) -> list[Path]:
    """The Arrow IPC files of a save_to_disk folder (every split of a DatasetDict)."""
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        return [f for s in splits for f in arrow_files(path / s)]
    state = path / "state.json"
    if state.exists():
        return [path / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    return sorted(path.glob("*.arrow"))


def _arrow_rows(path: Path) -> int:
    return sum(read_ipc_file(f).num_rows for f in arrow_files(path))


def read_ipc_file(path: Path) -> Any:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all()
