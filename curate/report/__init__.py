"""Reports to look at: a build's (a store object its manifest names), a training run's,
and two builds side by side. `report_for` decides which a reference names."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.fsio import sealed_json, unseal_json, write_bytes
from curate.manifests.store import Store, canonical_json


def stored_report(data: dict[str, Any], store: Store) -> dict[str, Any]:
    """The `report` entry of a manifest about to be stored: its HTML put in the store, or
    the object an earlier build with the same manifest (and the same report code) put
    there. A no-op rebuild thus pays a lookup, not a scan of its ledger and rows."""
    key = hashlib.sha256(canonical_json({**data, "report": None}) + _code()).hexdigest()
    remembered = store.cache_path("reports", key, ".json")
    try:
        entry = unseal_json(remembered.read_bytes(), key)
        if entry is not None and store.verify_object(entry["object"]) is None:
            return {"object": entry["object"], "bytes": int(entry["bytes"])}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not made yet, or a damaged entry: made again
    from curate.manifests.manifest import Manifest
    from curate.report.build import build_report

    html = build_report(Manifest("", data, store)).encode()
    entry = {"object": store.put_bytes(html), "bytes": len(html)}
    write_bytes(remembered, sealed_json(entry, key))
    return entry


@functools.cache
def _code() -> bytes:
    """The report code's own digest: a changed view makes the report again."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.digest()


@dataclass(frozen=True)
class Report:
    html: bytes
    default_out: Path  # where it goes when no --out is given
    what: str  # for the message: "build 3f2a9c1e…" or "run …"
    owned: bool = False  # default_out is curate's own file (a run's report.html)


def report_for(ref: str, store: Store) -> Report:
    """The report of a run (folder, id or prefix) or of a build (id, prefix or tag): the
    stored object when the build wrote one, else made now from its manifest."""
    from curate.gate.ask import run_folder

    folder = run_folder(ref, store)
    if folder is not None:
        from curate.report.run import run_report

        html = run_report(folder).encode()
        return Report(html, folder / "report.html", f"run {folder.name}", owned=True)
    from curate import api

    manifest = api.open_manifest(ref, store.location)
    entry = manifest.data.get("report")
    if entry:
        html = manifest.store.verified_object(entry["object"]).read_bytes()
    else:  # built with --no-report, or before reports: made now, not stored
        from curate.report.build import build_report

        html = build_report(manifest).encode()
    return Report(html, Path(f"report-{manifest.id[:12]}.html"), f"build {manifest.id[:12]}")


def write_report(html: bytes, out: Path, overwrite: bool, owned: bool = False) -> bool:
    """Write `html` to `out` atomically; a different file already there is the user's and is
    kept unless `overwrite` (or curate `owned` it: a run's report.html). False when the same
    bytes were already there."""
    if out.exists() and not out.is_file():  # a folder is never replaced, --overwrite or not
        raise UserError(f"--out {out} is a folder (or not a regular file); give a file path")
    if out.is_file() and out.read_bytes() == html:
        return False
    if out.exists() and not (overwrite or owned):
        raise UserError(f"{out} exists; pass --overwrite to replace it, or --out another path")
    write_bytes(out, html)
    return True
