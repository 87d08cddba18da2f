"""The content-addressed store: immutable objects, manifests, tags and a step cache.

Layout (contract):
    objects/ab/abcdef…          blobs named by their sha256 (shards, ledger, report)
    manifests/<id>.json         canonical manifest; its sha256 is <id>
    manifests/<id>.run.json     volatile sidecar: time, host, durations
    names/<sha256 of name>      the id of the latest build of each `[build] name`
    runs/<kind>/<id>.json       records of other runs (mining), named by their sha256
    refs/<name>                 tags: a file holding a manifest id
    cache/                      step outputs keyed by fingerprint
Every write goes to a temp file in the same folder, is fsynced and renamed into place, so a
crash never leaves a half-written object under its final name.

A store named by a URI (`s3://bucket/prefix?endpoint_override=…`) keeps objects, manifests,
run records, names and tags in the bucket (curate/manifests/files.py: a PUT is atomic there)
and the rest — cache/, tmp/, locks/, logs/ and a verified copy of every object read or
written here — in a local folder (`mirror_root`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from curate.errors import IntegrityError, UnknownIdError, UserError
from curate.fsio import atomic_path, fsync_path, sha256_file, temp_folder, write_bytes
from curate.manifests.files import (
    LocalFiles,
    RemoteFiles,
    is_uri,
    local_path,
    mirror_root,
    remote_files,
)

HEX64 = re.compile(r"^[0-9a-f]{64}$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_store(config_path: str | Path | None = None) -> str | Path:
    """`--store`, else $CURATE_STORE (a folder or a URI), else `.curate/` beside the config
    (or here)."""
    env = os.environ.get("CURATE_STORE")
    if env:
        return env  # as given: Store reads a URI, a file:// URI or a path from it
    base = Path(config_path).resolve().parent if config_path else Path.cwd()
    return base / ".curate"


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, trailing newline: the bytes a manifest id hashes."""
    return (
        json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        + "\n"
    ).encode()


def _object_name(sha: str) -> str:
    if not isinstance(sha, str) or not HEX64.match(sha):
        raise IntegrityError(
            f"{str(sha)[:80]!r} is not an object name (a sha256 in hex): the manifest "
            "naming it is corrupt or was edited; `curate verify` checks a build"
        )
    return f"objects/{sha[:2]}/{sha}"


class _Mismatch(Exception):
    """A downloaded object whose bytes hash to something else (the digest is the message)."""


class Store:
    def __init__(self, root: str | Path):
        # `location` reopens this store in another process (a worker): a folder or a URI
        self.location = str(root)
        self.files: LocalFiles | RemoteFiles
        if is_uri(self.location):
            self.files = remote_files(self.location)
            self.root = mirror_root(self.location)
        else:
            self.root = local_path(root)
            self.files = LocalFiles(self.root)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Store, (self.location,))

    def check(self) -> None:
        """Refuse a remote store that cannot take a build, before the build does any work."""
        if isinstance(self.files, RemoteFiles):
            self.files.check()

    @property
    def remote(self) -> bool:
        return isinstance(self.files, RemoteFiles)

    @property
    def name(self) -> str:
        """How run records and messages name the store: its URI, or its absolute folder."""
        return self.location if self.remote else str(self.root.resolve())

    # -- objects ---------------------------------------------------------------------

    def object_path(self, sha: str) -> Path:
        """Where object `sha` lives here (for a remote store: its local verified copy); a
        name that is not a sha256 digest is refused, so no stored name (a tampered
        manifest's shard, say) can point outside the store."""
        return self.root / _object_name(sha)

    def has_object(self, sha: str) -> bool:
        return self.files.size(_object_name(sha)) is not None

    def verified_object(self, sha: str) -> Path:
        """The path of object `sha` once its bytes are checked against its name.

        Every command that serves stored rows reads objects through this: a flipped bit is
        an error naming the object, never a changed row. The check reads the file once,
        which leaves it in the page cache for the reader that follows.
        """
        if problem := self.verify_object(sha):
            raise IntegrityError(f"{problem}; refusing to read it (`curate verify` checks a build)")
        return self.object_path(sha)

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha)
        if self.remote:
            if self.files.size(_object_name(sha)) != len(data):
                self.files.write(_object_name(sha), data)
        elif not path.exists():
            write_bytes(path, data)
            path.chmod(0o444)
        else:
            _touch(path)
        return sha

    def put_file(self, src: Path, durable: bool = True) -> str:
        """Move a finished temp file into the store under its hash (same filesystem).

        `durable=False` skips the fsyncs: for objects a build writes in bulk and then makes
        durable together with `sync_objects` before any manifest names them. An object left
        half-written by a crash has the wrong size and is replaced here.
        """
        sha = sha256_file(src)
        path = self.object_path(sha)
        if isinstance(self.files, RemoteFiles):
            if self.files.size(_object_name(sha)) != src.stat().st_size:
                self.files.upload(_object_name(sha), src)  # durable once the PUT returns
            try:  # kept as this machine's verified copy, if it is on the same filesystem
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, path)
                path.chmod(0o444)
            except OSError:
                src.unlink(missing_ok=True)  # read back from the bucket when needed
            return sha
        if path.exists() and path.stat().st_size == src.stat().st_size:
            src.unlink()
            _touch(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if durable:
                with open(src, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(src, path)
            path.chmod(0o444)
            if durable:
                fsync_path(path.parent)
        return sha

    def sync_objects(self, shas: list[str]) -> None:
        """fsync objects and their folders, in parallel (the filesystem batches them into
        few journal commits): a manifest is written only after this."""
        from concurrent.futures import ThreadPoolExecutor

        if self.remote:
            return  # every upload was durable when it returned; local copies are a cache

        def sync(path: Path) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        files = [self.object_path(s) for s in shas]
        folders = sorted({f.parent for f in files})
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(sync, files))
            list(pool.map(sync, folders))

    def verify_object(self, sha: str) -> str | None:
        """None when the object is present and its bytes hash to its name, else the problem."""
        if not isinstance(sha, str) or not HEX64.match(sha):
            return f"object name {str(sha)[:80]!r} is not a sha256 digest"
        if self.remote:
            return self._fetch(sha)
        path = self.object_path(sha)
        if not path.exists():
            return f"object {sha} is missing"
        actual = sha256_file(path)
        return None if actual == sha else f"object {sha} is corrupt: its bytes hash to {actual}"

    def _fetch(self, sha: str) -> str | None:
        """A remote object's local copy, made (or kept) once its bytes hash to its name."""
        size = self.files.size(_object_name(sha))
        if size is None:
            return f"object {sha} is missing from {self.location}"
        path = self.object_path(sha)
        if path.is_file() and path.stat().st_size == size and sha256_file(path) == sha:
            return None
        assert isinstance(self.files, RemoteFiles)
        try:
            with atomic_path(path, durable=False) as tmp:
                self.files.download(_object_name(sha), tmp)
                if (actual := sha256_file(tmp)) != sha:
                    raise _Mismatch(actual)  # the temp goes; nothing takes the object's name
        except _Mismatch as exc:
            return f"object {sha} in {self.location} is corrupt: its bytes hash to {exc}"
        path.chmod(0o444)
        return None

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Held (shared) while a command writes objects a manifest or run record will name,
        until that manifest or record is written: `gc` takes it exclusively, so it never
        removes the objects of a command still running. Each writer also leaves its start
        time under locks/live/ while it runs (`oldest_live_writer`): gc keeps every object
        younger than that, should a lock ever fail to hold."""
        with self.lock("objects"), self._live_writer():
            yield

    @contextmanager
    def _live_writer(self) -> Iterator[None]:
        folder = self.root / "locks" / "live"
        folder.mkdir(parents=True, exist_ok=True)
        start = time.time_ns()
        name = f"{start:020d}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = folder / f".{name}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # locked before it has a name gc reads
            os.replace(tmp, folder / name)
            yield
        finally:
            (folder / name).unlink(missing_ok=True)
            os.close(fd)

    def oldest_live_writer(self) -> int | None:
        """The start (ns since the epoch) of the oldest command writing objects now, or
        None; entries of writers that died (their lock released) are swept."""
        folder = self.root / "locks" / "live"
        for path in sorted(folder.glob("[0-9]*")) if folder.is_dir() else []:
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # finished meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return int(path.name.split("-")[0])
            else:
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return None

    @contextmanager
    def lock(self, name: str, exclusive: bool = False, wait: bool = True) -> Iterator[None]:
        """An advisory lock `locks/NAME` (flock: released when its holder dies); without
        `wait`, a BlockingIOError when another process holds it."""
        path = self.root / "locks" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
            yield
        finally:
            os.close(fd)

    def temp_dir(self, prefix: str) -> AbstractContextManager[Path]:
        """A scratch folder under tmp/, removed on exit; those of dead builds are swept."""
        return temp_folder(self.root / "tmp", prefix)

    # -- manifests -------------------------------------------------------------------

    def put_manifest(self, manifest: dict[str, Any], run: dict[str, Any]) -> str:
        data = canonical_json(manifest)
        mid = hashlib.sha256(data).hexdigest()
        if self.files.size(f"manifests/{mid}.json") is None:
            self.files.write(f"manifests/{mid}.json", data)
        self.files.write(
            f"manifests/{mid}.run.json", json.dumps(run, indent=2, sort_keys=True).encode()
        )
        name = manifest.get("config", {}).get("build", {}).get("name")
        if isinstance(name, str):  # the next build of this name finds its parent here
            self.files.write(_name_file(name), mid.encode())
        return mid

    def latest_of(self, name: str) -> str | None:
        """The id of the latest build of `[build] name` (a hint: lineage checks it against
        the manifest, and reads every manifest where it is missing)."""
        return self._read_text(_name_file(name))

    # -- records of other runs (mining) ----------------------------------------------

    def put_record(self, kind: str, record: dict[str, Any]) -> str:
        """A run's record (canonical JSON, named by its sha256) under `runs/<kind>/`; the
        objects it names in `objects` are kept by `curate gc` like a manifest's."""
        data = canonical_json(record)
        rid = hashlib.sha256(data).hexdigest()
        if self.files.size(f"runs/{kind}/{rid}.json") is None:
            self.files.write(f"runs/{kind}/{rid}.json", data)
        return rid

    def record_ids(self, kind: str) -> list[str]:
        return _ids(self.files.names(f"runs/{kind}"))

    def read_pointer(self, name: str) -> str | None:
        """A store-wide pointer `runs/NAME` (mining's latest candidate index), or None."""
        return self._read_text(f"runs/{name}")

    def write_pointer(self, name: str, value: str) -> None:
        self.files.write(f"runs/{name}", value.encode())

    def _read_text(self, rel: str) -> str | None:
        """A one-line file (a tag, a name's latest id, a pointer), stripped; None if absent."""
        blob = self.files.read(rel)
        return blob.decode(errors="replace").strip() if blob is not None else None

    def read_record(self, kind: str, rid: str) -> dict[str, Any]:
        """The record, once its bytes are checked against its id."""
        if not HEX64.match(rid):
            raise UnknownIdError(f"{rid[:80]!r} is not a {kind} run id")
        blob = self.files.read(f"runs/{kind}/{rid}.json")
        if blob is None:
            raise UnknownIdError(f"{kind} run {rid} is not in store {self.location}")
        if hashlib.sha256(blob).hexdigest() != rid:
            raise IntegrityError(
                f"{kind} run {rid} in {self.location} is corrupt: refusing to read it"
            )
        return json.loads(blob)

    def manifest_ids(self) -> list[str]:
        return _ids(self.files.names("manifests"))

    def resolve(self, ref: str) -> str:
        """A full id, a unique prefix of 8+ hex digits, or a tag → the manifest id."""
        ref = ref.strip()
        if TAG.match(ref) and (held := self._read_text(f"refs/{ref}")) is not None:
            return self._tag_target(ref, held)
        ids = self.manifest_ids()
        if re.fullmatch(r"[0-9a-f]{8,64}", ref):
            found = [i for i in ids if i.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise UnknownIdError(
                    f"{ref!r} is ambiguous in store {self.location}: it starts {len(found)} manifests ({', '.join(f[:12] for f in found[:5])}); give more digits"
                )
        hint = (
            " (an id prefix needs at least 8 hex digits)"
            if re.fullmatch(r"[0-9a-f]{1,7}", ref)
            else ""
        )
        raise UnknownIdError(
            f"no manifest or tag {ref!r} in store {self.location}{hint}; `curate log --store {shlex.quote(self.location)}` lists them"
        )

    def _tag_target(self, name: str, mid: str) -> str:
        """The manifest id a tag holds: a full id of a manifest in this store, nothing else."""
        if not HEX64.match(mid) or self.files.size(f"manifests/{mid}.json") is None:
            raise IntegrityError(
                f"tag {name!r} in {self.location} holds {mid[:80]!r}, which is not the id of a "
                f"manifest in this store: the tag file was damaged or edited; re-tag with "
                f"`curate tag {name} ID`"
            )
        return mid

    def read_manifest(self, mid: str) -> dict[str, Any]:
        """The manifest, once its bytes are checked against its id."""
        blob = self.manifest_bytes(mid)
        actual = hashlib.sha256(blob).hexdigest()
        if actual != mid:
            raise IntegrityError(
                f"manifest {mid} in {self.location} is corrupt: its bytes hash to {actual}; "
                "refusing to read it (`curate verify` reports it)"
            )
        try:
            return json.loads(blob)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IntegrityError(
                f"manifest {mid} in {self.location} is not valid JSON ({exc}); `curate verify` reports it"
            ) from exc

    def manifest_bytes(self, mid: str) -> bytes:
        if not HEX64.match(mid):
            raise UnknownIdError(f"{mid[:80]!r} is not a manifest id")
        blob = self.files.read(f"manifests/{mid}.json")
        if blob is None:
            raise UnknownIdError(f"manifest {mid} is not in store {self.location}")
        return blob

    def read_run(self, mid: str) -> dict[str, Any]:
        """The build's volatile sidecar (times, host, durations); {} when missing or damaged."""
        blob = self.files.read(f"manifests/{mid}.run.json") if HEX64.match(mid) else None
        try:
            return json.loads(blob) if blob is not None else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}

    # -- tags ------------------------------------------------------------------------

    def tag(self, name: str, mid: str) -> None:
        if not TAG.match(name) or HEX64.match(name) or re.fullmatch(r"[0-9a-f]{8,64}", name):
            raise UserError(
                f"tag name {name!r} is not usable: use letters, digits, '.', '_' or '-', not something that looks like an id"
            )
        self.files.write(f"refs/{name}", (mid + "\n").encode())

    def tags(self) -> Iterator[tuple[str, str]]:
        for name in self.files.names("refs"):
            if TAG.match(name) and (held := self._read_text(f"refs/{name}")) is not None:
                try:
                    yield name, self._tag_target(name, held)
                except IntegrityError:
                    continue  # `log` lists builds; a damaged tag is reported where used

    # -- cache -----------------------------------------------------------------------

    def cache_path(self, kind: str, key: str, suffix: str) -> Path:
        if not HEX64.match(key):
            raise IntegrityError(f"{key[:80]!r} is not a cache key (a sha256 in hex)")
        return self.root / "cache" / kind / key[:2] / f"{key}{suffix}"


def _touch(path: Path) -> None:
    """An object a command names again is young again: gc's age guard keeps it."""
    with contextlib.suppress(OSError):  # another user's object in a shared store: its age stands
        os.utime(path)


def _name_file(name: str) -> str:
    return f"names/{hashlib.sha256(name.encode()).hexdigest()}"


def _ids(names: list[str]) -> list[str]:
    """The ids among a folder's `<id>.json` file names."""
    return sorted(n[:-5] for n in names if n.endswith(".json") and HEX64.match(n[:-5]))
