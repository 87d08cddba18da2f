"""Reports to look at: a build's (a store object its manifest names), a training run's,
and two builds side by side. `report_for` decides which a reference names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curate.errors import UserError
from curate.fsio import write_bytes
from curate.manifests.store import Store


@dataclass(frozen=True)
class Report:
    html: bytes
    default_out: Path  # where it goes when no --out is given
    what: str  # for the message: "build 3f2a9c1e…" or "run …"


def report_for(ref: str, store: Store) -> Report:
    """The report of a run (folder, id or prefix) or of a build (id, prefix or tag): the
    stored object when the build wrote one, else made now from its manifest."""
    from curate.gate.ask import run_folder

    folder = run_folder(ref, store)
    if folder is not None:
        from curate.report.run import run_report

        return Report(run_report(folder).encode(), folder / "report.html", f"run {folder.name}")
    from curate import api

    manifest = api.open_manifest(ref, store.root)
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
    if out.is_file() and out.read_bytes() == html:
        return False
    if out.exists() and not (overwrite or owned):
        raise UserError(f"{out} exists; pass --overwrite to replace it, or --out another path")
    write_bytes(out, html)
    return True
