"""Reviewers' decisions: an append-only JSONL file, and what it says about each rule.

One JSON object per line: `id`, `decision` (`keep`: the rejection was wrong; `reject`: it
was right, or a kept row must go; `undo`: take back this id's previous decision), `reason_reviewed`,
`note`, `reviewer`, `time`, `manifest`. Lines are only ever appended, each in one write under
a lock, after an fsync of the line before; a crash can leave at most a torn last line (no
newline), which readers skip and the next append cuts off. A whole decision without its
newline (a file saved by an editor) is read, and the next append adds the newline first. The last decision per id wins,
across files in the order given.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import math
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.fsio import read_regular

DECISIONS = ("keep", "reject")
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


@dataclass(frozen=True)
class Decision:
    id: str
    decision: str
    reason_reviewed: str | None
    note: str | None
    reviewer: str | None
    where: str  # file:line, the evidence a build records


def record(
    row_id: str,
    decision: str,
    reason: str | None,
    manifest: str,
    note: str | None = None,
    reviewer: str | None = None,
) -> dict[str, Any]:
    return {
        "id": row_id,
        "decision": decision,
        "reason_reviewed": reason,
        "note": note,
        "reviewer": reviewer or getpass.getuser(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "manifest": manifest,
    }


def append(path: Path, records: list[dict[str, Any]]) -> None:
    """Append `records` as whole lines (one write), never touching complete lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise UserError(f"{path}: decisions file cannot be written ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{path}: decisions file is not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
            last = tail[tail.rfind(b"\n") + 1 :]
            if _whole(last):  # a whole decision written without its newline: kept
                os.lseek(fd, 0, os.SEEK_END)
                os.write(fd, b"\n")
            else:  # a torn line from a crash: cut it
                os.ftruncate(fd, size - len(last))
            os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path, shown: str | None = None) -> list[Decision]:
    """Every decision in a file, in order; a torn last line is skipped, any other bad line
    is an error naming file and line."""
    shown = shown or str(path)
    data = read_regular(path, "decisions file")
    lines = data.split(b"\n")
    if not _whole(lines[-1]):  # torn by a crash (or empty): skipped, cut by the next append
        lines.pop()
    out = []
    for number, raw in enumerate(lines, 1):
        where = f"{shown}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{where}: not UTF-8 text (byte {exc.start})") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise UserError(f"{where}: not a JSON object ({str(exc)[:80]})") from None
        decision = obj.get("decision") if isinstance(obj, dict) else None
        if decision not in (*DECISIONS, "undo") or not isinstance(obj.get("id"), str):
            raise UserError(
                f"{where}: field `decision` must be keep, reject or undo and `id` a row id"
            )
        out.append(
            Decision(
                obj["id"],
                decision,
                obj.get("reason_reviewed"),
                obj.get("note"),
                obj.get("reviewer"),
                where,
            )
        )
    return out


def _whole(line: bytes) -> bool:
    """A last line without its newline that is a whole decision (an editor saved it so), not
    a line torn by a crash."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and obj.get("decision") in (*DECISIONS, "undo")


def latest(decisions: list[Decision]) -> dict[str, Decision]:
    """The standing decision per id: the last, with `undo` taking back the one before it."""
    stacks: dict[str, list[Decision]] = {}
    for d in decisions:
        stack = stacks.setdefault(d.id, [])
        if d.decision == "undo":
            if stack:
                stack.pop()
        else:
            stack.append(d)
    return {i: s[-1] for i, s in stacks.items() if s}


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (0, 1 when nothing was reviewed)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rule_stats(
    rejected: dict[tuple[str, str], int],
    reviewed: dict[str, tuple[str, str]],
    standing: dict[str, Decision],
    threshold: float = 0.9,
) -> list[dict[str, Any]]:
    """Per (reason, source): rows rejected, reviewed, confirmed (reject), overturned (keep),
    precision with its 95% Wilson interval; `flagged` where the whole interval is below
    `threshold` (the rule is wrong too often), `uncertain` where it straddles it (review
    more rows of it)."""
    out = []
    for (reason, source), count in sorted(rejected.items()):
        mine = [d for i, d in standing.items() if reviewed.get(i) == (reason, source)]
        confirmed = sum(d.decision == "reject" for d in mine)
        overturned = sum(d.decision == "keep" for d in mine)
        lo, hi = wilson(confirmed, confirmed + overturned)
        out.append(
            {
                "reason": reason,
                "source": source,
                "rejected": count,
                "reviewed": confirmed + overturned,
                "confirmed": confirmed,
                "overturned": overturned,
                "precision": round(confirmed / (confirmed + overturned), 4) if mine else None,
                "interval": [round(lo, 4), round(hi, 4)],
                "flagged": bool(mine) and hi < threshold,
                "uncertain": not mine or lo < threshold <= hi,
            }
        )
    return out
