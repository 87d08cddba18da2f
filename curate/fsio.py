"""Files curate writes and hashes: one atomic writer, one file hash, temp sweeping.

Every file a user or a later run relies on is written through `atomic_path`: a temp in the
same filesystem, fsynced, renamed into place, its folder fsynced. A crash leaves either the
old file or the new one, never half of one, and the temp it leaves behind is recognisable:
temps are named `.curate-tmp-…` and their writer holds an advisory lock (flock) on them
while it lives, so `sweep_stale` can tell a dead writer's temp (lock free) from a live one's
and remove only the former — whatever process, machine restart or kill -9 ended it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from curate.errors import UserError

TEMP_MARK = ".curate-tmp-"
# A temp younger than this is left alone even when its lock is free: its writer may be
# between creating it and locking it.
SWEEP_MIN_AGE_SECONDS = 2.0


def sha256_file(path: str | Path, digest: Any = None) -> str:
    """sha256 of a file's bytes (or feed them into `digest` and return its hex)."""
    digest = digest if digest is not None else hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while size := fh.readinto(buf):
            digest.update(view[:size])
    return str(digest.hexdigest())


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder's entry list (a rename is durable only after that)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(
    path: str | Path,
    *,
    is_dir: bool = False,
    durable: bool = True,
    temp_dir: Path | None = None,
    replace: bool = False,
) -> Iterator[Path]:
    """Yield a locked temp path; when the block succeeds, it becomes `path` atomically.

    The caller writes the temp (a file, or a folder with `is_dir`) by any means. `temp_dir`
    puts the temp elsewhere on the same filesystem (a build's scratch folder, swept as a
    whole). `durable=False` skips the fsyncs, for files a build makes durable in bulk later.
    A folder that exists at `path` is replaced with `replace` (the old one is removed only
    once the new one is in place); without it, that is a FileExistsError (an OSError: a
    cache folder another process made first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    where = temp_dir if temp_dir is not None else path.parent
    where.mkdir(parents=True, exist_ok=True)
    tmp = where / f"{TEMP_MARK}{path.name[:80]}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    if is_dir:
        tmp.mkdir()
    else:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    fd = _lock(tmp)
    try:
        yield tmp
        if durable:
            for f in [*tmp.rglob("*"), tmp] if is_dir else [tmp]:
                fsync_path(f)
        if is_dir and path.exists():
            if not replace:
                raise FileExistsError(f"{path} exists")
            replace_dir(tmp, path)
        else:
            os.replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


@contextmanager
def temp_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A locked scratch folder under `parent` (a folder only curate writes in), removed on
    exit; what dead runs left there is swept first, earlier versions' unlocked folders too."""
    sweep_stale(parent, whole_folder=True)
    parent.mkdir(parents=True, exist_ok=True)
    folder = parent / f"{TEMP_MARK}{prefix}{os.getpid()}.{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    fd = _lock(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)
        sweep_stale(parent, whole_folder=True)  # what was too young to judge is old enough now


def sweep_stale(folder: Path, whole_folder: bool = False) -> list[Path]:
    """Remove the temps in `folder` whose writer is gone; returns what was removed.

    Only curate's marked temps, unless `whole_folder` (a folder curate alone writes in, such
    as the store's tmp/): then any entry nobody holds a lock on.
    """
    removed: list[Path] = []
    try:
        entries = [e for e in folder.iterdir() if whole_folder or e.name.startswith(TEMP_MARK)]
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            if now - entry.lstat().st_mtime < SWEEP_MIN_AGE_SECONDS or entry.is_symlink():
                continue
            fd = os.open(entry, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its writer is alive
        try:
            _remove(entry)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


def _seal_path(path: Path) -> Path:
    return path.with_name(path.name + ".seal")


def checksum_file(path: str | Path) -> str:
    """xxh3-128 of a file, for seals: a seal only detects damage and edits (whoever can
    rewrite a cache entry can rewrite its seal too, so a cryptographic hash would buy
    nothing), at ~10x sha256's speed; every block a build caches is sealed and checked."""
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(1 << 22)
        view = memoryview(buf)
        while size := fh.readinto(buf):
            digest.update(view[:size])
    return "xxh3_128:" + digest.hexdigest()


def seal(path: str | Path) -> str:
    """Record a cache file's checksum beside it (`NAME.seal`), so that later use can check it."""
    path = Path(path)
    value = checksum_file(path)
    write_bytes(_seal_path(path), value.encode(), durable=False)
    return value


def is_sealed(path: str | Path) -> bool:
    """True when `path` and its seal exist and its bytes still match the sealed checksum.

    A cache entry that fails this (edited, truncated, half-written before a crash, never
    sealed) must be discarded and recomputed, never used.
    """
    path = Path(path)
    try:
        expected = _seal_path(path).read_text().strip()
        return bool(expected) and checksum_file(path) == expected
    except OSError:
        return False


def discard(path: str | Path) -> None:
    """Remove a cache entry and its seal."""
    path = Path(path)
    _remove(path)
    _seal_path(path).unlink(missing_ok=True)


def claim_output_dir(out: Path, owned: list[str], overwrite: bool, flag: str = "--out") -> None:
    """Make `out` ready for curate to write `owned` entries into, or refuse (exit 2).

    A folder that already holds anything is the user's: it is refused unless `overwrite`,
    and even then only the entries named in `owned` are ever replaced — nothing else in it
    is touched. Temps left there by a killed run of curate are removed.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out}: exists and is not a folder")
    sweep_stale(out)
    present = sorted(e.name for e in out.iterdir()) if out.is_dir() else []
    if present and not overwrite:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise UserError(
            f"{flag} {out} is not empty (it holds {shown}); curate does not write into a folder "
            f"in use: choose a new or empty one, or pass --overwrite to replace curate's own "
            f"files there ({', '.join(owned)}) and leave everything else as it is"
        )
    out.mkdir(parents=True, exist_ok=True)


def replace_dir(tmp: Path, target: Path) -> None:
    """Put a finished folder `tmp` at `target`, whose old folder (if any) goes only after."""
    old = None
    if target.exists():
        old = target.with_name(f"{TEMP_MARK}old-{target.name}.{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_path(target.parent)
    if old is not None:
        _remove(old)


def sealed_json(record: Any, key: str) -> bytes:
    """`record` as JSON with a seal over its bytes and the key it is filed under: a record
    edited or moved to another key (two entries' contents swapped) is not read back."""
    import xxhash

    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    seal = xxhash.xxh3_128(f"{key}\x00{body}".encode()).hexdigest()
    return json.dumps({"record": record, "seal": f"xxh3_128:{seal}"}, sort_keys=True).encode()


def unseal_json(data: bytes, key: str) -> Any | None:
    """The record `sealed_json` wrote under `key`, or None when it is damaged, edited or
    filed under another key."""
    import xxhash

    try:
        entry = json.loads(data)
        body = json.dumps(entry["record"], sort_keys=True, separators=(",", ":"))
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    seal = xxhash.xxh3_128(f"{key}\x00{body}".encode()).hexdigest()
    return entry["record"] if entry.get("seal") == f"xxh3_128:{seal}" else None


def read_regular(path: str | Path, what: str = "file") -> bytes:
    """The bytes of a regular file a user named; a folder, FIFO, socket or device is refused
    (a FIFO would block the read forever), and so is a file that goes missing."""
    import stat

    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: {what} is a folder, not a file") from None
    except OSError as exc:
        raise UserError(f"{path}: {what} cannot be read ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a folder"
                if stat.S_ISDIR(mode)
                else "a FIFO"
                if stat.S_ISFIFO(mode)
                else "not a regular file"
            )
            raise UserError(f"{path}: {what} is {kind}; give a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise UserError(f"{path}: {what} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)


def read_regular_text(path: str | Path, what: str = "file") -> str:
    """`read_regular` decoded as UTF-8, or a UserError naming the file and byte."""
    data = read_regular(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
