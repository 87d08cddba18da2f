"""A run's trained files, hashed when they are saved and checked before anything uses them.

`curate train` records the sha256 of every file of `adapter/` (and `curate merge` of
`merged/`) in the run's summary.json, its release.yaml and the store's training record.
`merge`, `gate` and `report` read a run through `read_run`, which refuses (exit 2, naming the
file) a summary that is not a run's, an adapter whose files changed, went missing or gained
a file, and an adapter saved by a curate that recorded no hashes: what is gated and shipped
is what was trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.errors import IntegrityError, UserError
from curate.fsio import read_regular, sha256_file

# the folders of a run whose files are hashed, and the summary key recording each
SEALED = {"adapter": "adapter_sha256", "merged": "merged_sha256"}


def folder_digests(folder: Path) -> dict[str, str]:
    """{path relative to `folder`: sha256} of every file under it, sorted."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_json_file(path: Path, what: str) -> Any:
    """A JSON file curate wrote, or exit 2 naming it (missing, not a regular file — a FIFO
    is refused, not waited on — not UTF-8, damaged)."""
    data = read_regular(path, what)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path}: {what} cannot be read ({str(exc)[:120]})") from None


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run folder's summary.json, checked to be one (exit 2 naming the file if not)."""
    path = run_dir / "summary.json"
    summary = read_json_file(path, "run summary")
    missing = [
        k for k in ("run_id", "manifest") if not isinstance(summary, dict) or k not in summary
    ]
    if missing:
        raise UserError(f"{path}: not a curate run summary (no {', '.join(missing)})")
    return summary


def verify_folder(run_dir: Path, summary: dict[str, Any], part: str) -> None:
    """Every file of `run_dir/part` is the one recorded at save time; else IntegrityError
    naming the first file that differs."""
    folder = run_dir / part
    recorded = summary.get(SEALED[part])
    if not isinstance(recorded, dict):
        raise IntegrityError(
            f"{folder}: the run records no hashes of its {part} files (saved by an older "
            f"curate, or the summary was edited); refusing to use it unverified. Train again: "
            f"curate train {str(summary.get('manifest', ''))[:12]}"
        )
    found = folder_digests(folder) if folder.is_dir() else {}
    for name, sha in sorted(recorded.items()):
        if name not in found:
            raise IntegrityError(f"{folder / name}: missing (recorded at save time)")
        if found[name] != sha:
            raise IntegrityError(
                f"{folder / name}: its sha256 {found[name][:12]}… is not the {sha[:12]}… "
                f"recorded when it was saved; refusing to use a changed {part}"
            )
    if extra := sorted(set(found) - set(recorded)):
        raise IntegrityError(f"{folder / extra[0]}: not a file the run saved in {part}/")


def read_run(run_dir: Path, adapter: bool = True, merged: bool = True) -> dict[str, Any]:
    """The run's summary once its adapter verifies (required unless not `adapter`, and then
    checked when present) and its merged model, when there is one and `merged` (a merge
    killed before recording its hashes is merged again, so `merge` itself skips it)."""
    summary = read_summary(run_dir)
    if adapter or (run_dir / "adapter").exists() or "adapter_sha256" in summary:
        verify_folder(run_dir, summary, "adapter")
    if merged and ((run_dir / "merged").exists() or "merged_sha256" in summary):
        verify_folder(run_dir, summary, "merged")
    return summary
