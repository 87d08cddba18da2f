"""Lineage: which build a build derives from, and the graph `curate log --graph` draws.

A build without `--parent` derives from the latest build of the same `[build] name` in the
store. A rebuild whose manifest would equal that latest build's (but for `parent`) takes its
parent too, so rebuilding unchanged inputs gives the same manifest id, not a new link.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.manifests.store import Store, canonical_json


def latest_named(store: Store, name: str) -> tuple[str, dict[str, Any]] | None:
    """The newest build of `name` in the store: the one its name file holds, or where
    that is missing or wrong (a store of an earlier version, an edit), by creation time
    over every manifest."""
    try:
        mid = store.latest_of(name) or ""
        data = store.read_manifest(mid)
        if data["config"]["build"]["name"] == name:
            return mid, data
    except (OSError, UserError, KeyError, TypeError):
        pass
    found = []
    for mid in store.manifest_ids():
        try:
            data = store.read_manifest(mid)
        except UserError:
            continue  # a damaged manifest is nobody's parent
        if data["config"]["build"]["name"] == name:
            found.append((_written(store, mid), mid, data))
    if not found:
        return None
    _, mid, data = max(found, key=lambda f: (f[0], f[1]))
    return mid, data


def _written(store: Store, mid: str) -> tuple[str, int]:
    """When a build was last put: its run's creation time (to the second), then its run
    file's modification time (a rebuild rewrites it) for builds of the same second."""
    path = store.root / "manifests" / f"{mid}.run.json"
    try:
        modified = path.stat().st_mtime_ns
    except OSError:
        modified = 0
    return store.read_run(mid).get("created") or "", modified


def inferred_parent(store: Store, manifest: dict[str, Any]) -> str | None:
    latest = latest_named(store, manifest["config"]["build"]["name"])
    if latest is None:
        return None
    mid, data = latest
    # compared as the bytes their ids hash (tuples and lists, ints and floats alike); the
    # report is made after this, from the rest (the parent included), so it is left out
    same = {"parent": None, "report": None}
    if canonical_json({**data, **same}) == canonical_json({**manifest, **same}):
        return data["parent"]  # the same build again: the same id
    return mid


def graph(entries: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(depth, entry) in drawing order: each root (no parent in the store), oldest first,
    then its descendants under it, oldest first."""
    ids = {e["id"] for e in entries}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for e in sorted(entries, key=lambda e: (e["created"] or "", e["id"])):
        parent = e.get("parent") if e.get("parent") in ids else None
        children.setdefault(parent, []).append(e)
    out: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for e in children.get(parent, []):
            out.append((depth, e))
            walk(e["id"], depth + 1)

    walk(None, 0)
    return out


def source_lineage(paths: list[Path]) -> dict[str, Any] | None:
    """Where a source's rows came from, when a `lineage.json` sits beside its files (as
    `curate mine import` writes it: the mining runs, log files, rules and labels)."""
    for folder in dict.fromkeys(p.parent for p in paths):
        path = folder / "lineage.json"
        if path.is_file():
            try:
                found = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UserError(f"{path}: not a lineage file ({exc}); fix or remove it") from exc
            if not isinstance(found, dict):
                raise UserError(f"{path}: a lineage file holds a JSON object")
            return found
    return None
