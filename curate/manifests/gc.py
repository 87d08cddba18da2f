"""`curate gc`: remove the objects no manifest names (a dry run unless asked to delete).

Objects are only ever named by manifests (tags name manifests), so an object is garbage when
no manifest in the store names it: the shards of a build whose manifest was deleted, or of a
build killed before it wrote one. Every manifest is read first; one that cannot be read
stops the collection (what it names is unknown, so nothing may go). A build holds the store's
object lock (shared) from its first object until its manifest is written; gc takes it
exclusively, so it never removes the objects of a build still running — and keeps any object
younger than the oldest running writer, should a lock ever fail to hold.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.manifests.manifest import manifest_objects
from curate.manifests.store import HEX64, Store

# What a rebuild recomputes from the sources alone: read blocks, step outputs, plain copies
# of compressed files. (Embeddings and tokenizers stay: they need a model to recompute.)
RECOMPUTABLE = ("blocks", "steps", "decompressed")


def collect(store: Store, delete: bool = False, cache: bool = False) -> dict[str, Any]:
    """{"manifests", "objects", "unreferenced": [sha...], "bytes", "deleted", "cache"}:
    with `cache`, also the recomputable caches (`RECOMPUTABLE`), by kind: bytes they hold."""
    if store.remote:
        # its lock is a file on this machine: a build elsewhere could be naming the objects
        raise UserError(
            f"curate gc does not run on a remote store ({store.location}): a build on another "
            "machine may be writing objects no manifest names yet; use the bucket's own "
            f"lifecycle rules, or gc its local copies by removing {store.root / 'objects'}"
        )
    try:
        with store.lock("objects", exclusive=True, wait=False):
            return _collect(store, delete, cache)
    except BlockingIOError:
        raise UserError(
            f"a build is writing to the store {store.location}; run `curate gc` when it is done"
        ) from None


def _collect(store: Store, delete: bool, cache: bool) -> dict[str, Any]:
    named = _named_objects(store)
    found = sorted(
        p for p in (store.root / "objects").glob("*/*") if p.is_file() and HEX64.match(p.name)
    )
    # belt and braces: an object younger than the oldest running writer stays (the lock
    # already keeps gc out while one runs)
    since = store.oldest_live_writer()
    garbage = [
        p for p in found if p.name not in named and (since is None or p.stat().st_mtime_ns < since)
    ]
    size = sum(p.stat().st_size for p in garbage)
    caches = {kind: _size(store.root / "cache" / kind) for kind in RECOMPUTABLE} if cache else {}
    if delete:
        for path in garbage:
            path.unlink()
        for kind in caches:  # no build runs (the lock): nothing reads them now
            shutil.rmtree(store.root / "cache" / kind, ignore_errors=True)
    return {
        "manifests": len(store.manifest_ids()),
        "objects": len(found),
        "unreferenced": [p.name for p in garbage],
        "bytes": size,
        "deleted": delete,
        "cache": caches,
    }


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _named_objects(store: Store) -> set[str]:
    named: set[str] = set()
    for mid in store.manifest_ids():
        path = store.root / "manifests" / f"{mid}.json"
        try:
            named.update(manifest_objects(json.loads(path.read_bytes())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"manifest {mid} cannot be read ({exc}): gc stops, since the objects it names "
                "are unknown; restore or remove that manifest first"
            ) from exc
    for kind in ("mining",):  # runs that own objects too
        for rid in store.record_ids(kind):
            try:
                record = store.read_record(kind, rid)
            except UserError as exc:
                raise UserError(
                    f"{kind} run {rid} cannot be read ({exc}): gc stops, since the objects it "
                    "names are unknown; restore or remove that record first"
                ) from exc
            named.update(o["object"] for o in record.get("objects", {}).values())
    return named
