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
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from curate.errors import IntegrityError, UnknownIdError, UserError
from curate.fsio import fsync_path, sha256_file, temp_folder, write_bytes

HEX64 = re.compile(r"^[0-9a-f]{64}$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_store(config_path: str | Path | None = None) -> Path:
    """`--store`, else $CURATE_STORE, else `.curate/` beside the config (or here)."""
    env = os.environ.get("CURATE_STORE")
    if env:
        return Path(env)
    base = Path(config_path).resolve().parent if config_path else Path.cwd()
    return base / ".curate"


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, trailing newline: the bytes a manifest id hashes."""
    return (
        json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        + "\n"
    ).encode()


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- objects ---------------------------------------------------------------------

    def object_path(self, sha: str) -> Path:
        """Where object `sha` lives; a name that is not a sha256 digest is refused, so no
        stored name (a tampered manifest's shard, say) can point outside the store."""
        if not isinstance(sha, str) or not HEX64.match(sha):
            raise IntegrityError(
                f"{str(sha)[:80]!r} is not an object name (a sha256 in hex): the manifest "
                "naming it is corrupt or was edited; `curate verify` checks a build"
            )
        return self.root / "objects" / sha[:2] / sha

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
        if not path.exists():
            write_bytes(path, data)
            path.chmod(0o444)
        return sha

    def put_file(self, src: Path, durable: bool = True) -> str:
        """Move a finished temp file into the store under its hash (same filesystem).

        `durable=False` skips the fsyncs: for objects a build writes in bulk and then makes
        durable together with `sync_objects` before any manifest names them. An object left
        half-written by a crash has the wrong size and is replaced here.
        """
        sha = sha256_file(src)
        path = self.object_path(sha)
        if path.exists() and path.stat().st_size == src.stat().st_size:
            src.unlink()
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
        path = self.object_path(sha)
        if not path.exists():
            return f"object {sha} is missing"
        actual = sha256_file(path)
        return None if actual == sha else f"object {sha} is corrupt: its bytes hash to {actual}"

    def writing(self) -> AbstractContextManager[None]:
        """Held (shared) while a command writes objects a manifest or run record will name:
        `gc` takes it exclusively, so it never removes the objects of a command still
        running."""
        return self.lock("objects")

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
        path = self.root / "manifests" / f"{mid}.json"
        if not path.exists():
            write_bytes(path, data)
        write_bytes(
            self.root / "manifests" / f"{mid}.run.json",
            json.dumps(run, indent=2, sort_keys=True).encode(),
        )
        name = manifest.get("config", {}).get("build", {}).get("name")
        if isinstance(name, str):  # the next build of this name finds its parent here
            write_bytes(self.name_path(name), mid.encode())
        return mid

    def name_path(self, name: str) -> Path:
        """Where the id of the latest build of `[build] name` is kept (a hint: lineage
        checks it against the manifest, and reads every manifest where it is missing)."""
        return self.root / "names" / hashlib.sha256(name.encode()).hexdigest()

    # -- records of other runs (mining) ----------------------------------------------

    def put_record(self, kind: str, record: dict[str, Any]) -> str:
        """A run's record (canonical JSON, named by its sha256) under `runs/<kind>/`; the
        objects it names in `objects` are kept by `curate gc` like a manifest's."""
        data = canonical_json(record)
        rid = hashlib.sha256(data).hexdigest()
        path = self.root / "runs" / kind / f"{rid}.json"
        if not path.exists():
            write_bytes(path, data)
        return rid

    def record_ids(self, kind: str) -> list[str]:
        folder = self.root / "runs" / kind
        if not folder.exists():
            return []
        return sorted(p.name[:-5] for p in folder.glob("*.json") if HEX64.match(p.name[:-5]))

    def read_record(self, kind: str, rid: str) -> dict[str, Any]:
        """The record, once its bytes are checked against its id."""
        if not HEX64.match(rid):
            raise UnknownIdError(f"{rid[:80]!r} is not a {kind} run id")
        try:
            blob = (self.root / "runs" / kind / f"{rid}.json").read_bytes()
        except FileNotFoundError:
            raise UnknownIdError(f"{kind} run {rid} is not in store {self.root}") from None
        if hashlib.sha256(blob).hexdigest() != rid:
            raise IntegrityError(f"{kind} run {rid} in {self.root} is corrupt: refusing to read it")
        return json.loads(blob)

    def manifest_ids(self) -> list[str]:
        folder = self.root / "manifests"
        if not folder.exists():
            return []
        return sorted(p.name[:-5] for p in folder.glob("*.json") if HEX64.match(p.name[:-5]))

    def resolve(self, ref: str) -> str:
        """A full id, a unique prefix of 8+ hex digits, or a tag → the manifest id."""
        ref = ref.strip()
        tag = self.root / "refs" / ref
        if TAG.match(ref) and tag.is_file():
            return self._tag_target(ref, tag)
        ids = self.manifest_ids()
        if re.fullmatch(r"[0-9a-f]{8,64}", ref):
            found = [i for i in ids if i.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise UnknownIdError(
                    f"{ref!r} is ambiguous in store {self.root}: it starts {len(found)} manifests ({', '.join(f[:12] for f in found[:5])}); give more digits"
                )
        hint = (
            " (an id prefix needs at least 8 hex digits)"
            if re.fullmatch(r"[0-9a-f]{1,7}", ref)
            else ""
        )
        raise UnknownIdError(
            f"no manifest or tag {ref!r} in store {self.root}{hint}; `curate log --store {self.root}` lists them"
        )

    def _tag_target(self, name: str, path: Path) -> str:
        """The manifest id a tag holds: a full id of a manifest in this store, nothing else."""
        try:
            mid = path.read_text(errors="replace").strip()
        except OSError as exc:
            raise IntegrityError(f"tag {name!r} in {self.root} cannot be read: {exc}") from exc
        if not HEX64.match(mid) or not (self.root / "manifests" / f"{mid}.json").is_file():
            raise IntegrityError(
                f"tag {name!r} in {self.root} holds {mid[:80]!r}, which is not the id of a "
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
                f"manifest {mid} in {self.root} is corrupt: its bytes hash to {actual}; "
                "refusing to read it (`curate verify` reports it)"
            )
        try:
            return json.loads(blob)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IntegrityError(
                f"manifest {mid} in {self.root} is not valid JSON ({exc}); `curate verify` reports it"
            ) from exc

    def manifest_bytes(self, mid: str) -> bytes:
        if not HEX64.match(mid):
            raise UnknownIdError(f"{mid[:80]!r} is not a manifest id")
        try:
            return (self.root / "manifests" / f"{mid}.json").read_bytes()
        except FileNotFoundError:
            raise UnknownIdError(f"manifest {mid} is not in store {self.root}") from None

    def read_run(self, mid: str) -> dict[str, Any]:
        path = self.root / "manifests" / f"{mid}.run.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    # -- tags ------------------------------------------------------------------------

    def tag(self, name: str, mid: str) -> None:
        if not TAG.match(name) or HEX64.match(name) or re.fullmatch(r"[0-9a-f]{8,64}", name):
            raise UserError(
                f"tag name {name!r} is not usable: use letters, digits, '.', '_' or '-', not something that looks like an id"
            )
        write_bytes(self.root / "refs" / name, (mid + "\n").encode())

    def tags(self) -> Iterator[tuple[str, str]]:
        folder = self.root / "refs"
        if folder.exists():
            for path in sorted(folder.iterdir()):
                if path.is_file() and TAG.match(path.name):
                    try:
                        yield path.name, self._tag_target(path.name, path)
                    except IntegrityError:
                        continue  # `log` lists builds; a damaged tag is reported where used

    # -- cache -----------------------------------------------------------------------

    def cache_path(self, kind: str, key: str, suffix: str) -> Path:
        if not HEX64.match(key):
            raise IntegrityError(f"{key[:80]!r} is not a cache key (a sha256 in hex)")
        return self.root / "cache" / kind / key[:2] / f"{key}{suffix}"
