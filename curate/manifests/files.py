"""Where a store keeps its named files: a local folder, or a bucket named by a URI.

A store's durable part (objects, manifests, tags, names, run records) is a set of files
named by relative paths such as `manifests/<id>.json`. `LocalFiles` keeps them in a folder,
written atomically through `fsio`; `RemoteFiles` keeps them in an object store that
pyarrow opens from a URI (`s3://bucket/prefix?endpoint_override=host:port&scheme=http` for
S3-compatible servers such as MinIO). An object-store PUT is atomic by itself: readers see
the old bytes or the new ones, never half. A failed upload is deleted, since pyarrow
completes a stream it closes even after an error (checked on S3).

Credentials never go into the URI: the URI is recorded in run records and shown in
messages, so keys come from the environment (AWS_ACCESS_KEY_ID, …), config files or the
instance's role, as for every AWS tool.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from curate.errors import UserError
from curate.fsio import write_bytes

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
SECRET_PARAMS = {"access_key", "secret_key", "session_token"}
CHUNK = 8 << 20


def is_uri(location: str | Path) -> bool:
    """A store named by a URI (s3://…), not a local path (`file://` is a local path)."""
    text = str(location)
    return bool(URI.match(text)) and not text.lower().startswith("file://")


def local_path(location: str | Path) -> Path:
    text = str(location)
    return Path(text[len("file://") :] if text.lower().startswith("file://") else text)


def mirror_root(uri: str) -> Path:
    """The local folder of a remote store: its scratch, caches, locks, logs and a verified
    copy of the objects read here. `$CURATE_STORE_CACHE` moves it (a Ray cluster's workers
    need it on a path every node shares); else under the user's cache folder, one per URI."""
    base = os.environ.get("CURATE_STORE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "curate", "stores"
    )
    return Path(base) / hashlib.sha256(uri.encode()).hexdigest()[:16]


class LocalFiles:
    """A store's named files in a folder."""

    def __init__(self, root: Path):
        self.root = root

    def read(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write(self, rel: str, data: bytes) -> None:
        write_bytes(self.root / rel, data)

    def size(self, rel: str) -> int | None:
        path = self.root / rel
        return path.stat().st_size if path.is_file() else None

    def names(self, folder: str) -> list[str]:
        where = self.root / folder
        return sorted(p.name for p in where.iterdir() if p.is_file()) if where.is_dir() else []


class RemoteFiles:
    """A store's named files in an object store, through pyarrow's filesystems."""

    def __init__(self, uri: str):
        import pyarrow.fs as pafs

        parts = urlsplit(uri)
        if parts.scheme.lower() != "s3":
            # pyarrow opens gs:// and hdfs:// too, but untried here (gs:// waited for a
            # metadata server for minutes on a machine without one)
            raise UserError(
                f"store {_shown(uri)}: a store URI is s3://bucket/prefix (AWS S3 or an "
                "S3-compatible server: add ?endpoint_override=host:port&scheme=http); "
                f"{parts.scheme}:// stores are not supported"
            )
        query = parse_qs(parts.query)
        if parts.password or any(_is_secret(key) for key in query):
            raise UserError(
                f"store URI {_shown(uri)} holds credentials: give them in the environment "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …) or the provider's config files; "
                "the URI is written into run records and messages"
            )
        try:
            self.fs, base = pafs.FileSystem.from_uri(uri)
        except (OSError, ValueError, TypeError) as exc:
            raise UserError(
                f"store {_shown(uri)}: not a store location pyarrow can open "
                f"({_scrubbed(str(exc), uri)})"
            ) from None
        self.uri = uri
        self.base = base.rstrip("/")

    def check(self) -> None:
        """Refuse, before any work, a bucket that does not exist (curate creates none)."""
        import pyarrow.fs as pafs

        bucket = self.base.split("/", 1)[0]
        try:
            missing = self.fs.get_file_info(bucket).type == pafs.FileType.NotFound
        except OSError as exc:
            raise UserError(
                f"store {_shown(self.uri)}: cannot reach it ({_scrubbed(str(exc), self.uri)})"
            ) from None
        if missing:
            raise UserError(
                f"store {_shown(self.uri)}: bucket {bucket!r} does not exist (curate creates no "
                "bucket)"
            )

    def _key(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def _error(self, what: str, rel: str, exc: Exception) -> UserError:
        return UserError(
            f"store {_shown(self.uri)}: cannot {what} {rel} ({_scrubbed(str(exc), self.uri)})"
        )

    def read(self, rel: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self._key(rel)) as fh:
                return bytes(fh.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("read", rel, exc) from exc

    def write(self, rel: str, data: bytes) -> None:
        self._put(rel, lambda out: out.write(data))

    def upload(self, rel: str, src: Path) -> None:
        def copy(out: Any) -> None:
            with open(src, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    out.write(chunk)

        self._put(rel, copy)

    def _put(self, rel: str, fill: Any) -> None:
        key = self._key(rel)
        try:
            out = self.fs.open_output_stream(key)
            try:
                fill(out)
            except BaseException:
                out.close()  # pyarrow completes the upload here: the partial object goes next
                self._delete(key)
                raise
            out.close()
        except OSError as exc:
            raise self._error("write", rel, exc) from exc

    def _delete(self, key: str) -> None:
        with contextlib.suppress(OSError):  # a size or hash check refuses what stays
            self.fs.delete_file(key)

    def download(self, rel: str, dest: Path) -> None:
        try:
            with self.fs.open_input_stream(self._key(rel)) as fh, open(dest, "wb") as out:
                shutil.copyfileobj(fh, out, CHUNK)
        except OSError as exc:
            raise self._error("read", rel, exc) from exc

    def size(self, rel: str) -> int | None:
        import pyarrow.fs as pafs

        try:
            info = self.fs.get_file_info(self._key(rel))
        except OSError as exc:
            raise self._error("look up", rel, exc) from exc
        return info.size if info.type == pafs.FileType.File else None

    def names(self, folder: str) -> list[str]:
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self._key(folder), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise self._error("list", folder, exc) from exc
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)


@functools.lru_cache(maxsize=8)
def remote_files(uri: str) -> RemoteFiles:
    """One client per store URI and process: workers open the store once per call."""
    return RemoteFiles(uri)


def _shown(uri: str) -> str:
    """The URI as messages show it: no user or password, and its query's keys without their
    values (`?endpoint_override=…`): no secret in a message, whatever its key's spelling."""
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    keys = "&".join(f"{k}=…" for k in parse_qs(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{host}{parts.path}" + (f"?{keys}" if keys else "")


def _is_secret(key: str) -> bool:
    """A query key that names a credential, in any letter case or spelling AWS uses."""
    low = key.lower().replace("-", "_")
    return low in SECRET_PARAMS or any(w in low for w in ("secret", "password", "token", "key_id"))


def _scrubbed(text: str, uri: str) -> str:
    """`text` (a library's error) without the URI's password and query values in it."""
    parts = urlsplit(uri)
    values = [v for vs in parse_qs(parts.query).values() for v in vs]
    values += [v for v in (parts.password, parts.username) if v]
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "…")
    return text
