"""From solved shares to whole rows (or tokens) per source, and the floors checked first.

`apportion_tree` rounds down the same tree `solve` filled: each node's whole amount is split
among its children by largest remainder, within each child's whole-number limits (a floor
rounds up, a cap down), so every floor holds exactly after rounding.
"""

from __future__ import annotations

import math

from curate.config import POSITIVE_ROLES, MixtureSection, SourceSection
from curate.errors import UserError
from curate.mixers.solve import Node


def apportion_tree(tree: Node, total: int, caps: list[int], names: list[str]) -> list[int]:
    """Whole amounts per source (in `names` order) summing to `total` where limits allow."""
    cap_of = dict(zip(names, caps, strict=True))
    out: dict[str, int] = {}

    def bounds(node: Node) -> tuple[int, int]:
        if not node.children:
            return 0, cap_of[node.name]
        kids = [bounds(c) for c in node.children]
        lo = max(math.ceil(node.lo * total - 1e-9), sum(k[0] for k in kids))
        hi = min(math.floor(node.hi * total + 1e-9), sum(k[1] for k in kids))
        return lo, max(lo, hi)

    def walk(node: Node, amount: int) -> None:
        if not node.children:
            out[node.name] = amount
            return
        limits = [bounds(c) for c in node.children]
        parts = bounded_apportion(amount, [c.share for c in node.children], limits)
        for child, part in zip(node.children, parts, strict=True):
            walk(child, part)

    walk(tree, total)
    return [out[name] for name in names]


def bounded_apportion(amount: int, parts: list[float], limits: list[tuple[int, int]]) -> list[int]:
    """Integers in proportion to `parts`, each within its (lo, hi), summing to `amount`
    where the limits allow (largest remainder first; ties to the earlier part)."""
    weight = sum(parts)
    raw = [amount * p / weight if weight > 0 else 0.0 for p in parts]
    out = [min(max(math.floor(r), lo), hi) for r, (lo, hi) in zip(raw, limits, strict=True)]
    order = sorted(range(len(parts)), key=lambda i: (-(raw[i] - math.floor(raw[i])), i))
    while (short := amount - sum(out)) != 0:
        step = 1 if short > 0 else -1
        room = [
            i
            for i in (order if step > 0 else order[::-1])
            if (out[i] < limits[i][1] if step > 0 else out[i] > limits[i][0])
        ]
        if not room:
            break
        for i in room[: abs(short)]:
            out[i] += step
    return out


def check_floors(
    sources: list[SourceSection],
    mixture: MixtureSection,
    available: list[int],
    caps: list[int],
    total: int | None,
    unit: str,
) -> None:
    """Refuse floors the data cannot meet, with the numbers and what to change."""
    floors: list[tuple[str, str, float, list[int]]] = []
    for role, limits in mixture.roles.items():
        members = [i for i, s in enumerate(sources) if s.role == role]
        if limits.min_share:
            floors.append((f"role {role!r}", "min_share", limits.min_share, members))
        if limits.min_positive_share:
            members = [i for i, s in enumerate(sources) if s.role in POSITIVE_ROLES]
            floors.append(
                (
                    "the positive roles (task, general, replay)",
                    "min_positive_share",
                    limits.min_positive_share,
                    members,
                )
            )
    if not floors or not any(caps):
        return  # nothing survived the steps at all: an empty mixture, not a short one
    unmet = [
        floor
        for floor in floors
        if sum(caps[i] for i in floor[3]) < (math.ceil(floor[2] * total - 1e-9) if total else 1)
    ]
    if unmet:
        raise FloorError(_floor_message(unmet, floors, sources, available, caps, total, unit))


class FloorError(UserError):
    """A role's floor that the rows left after the steps cannot meet."""


Floor = tuple[str, str, float, list[int]]  # what, config key, share, member sources


def _floor_message(
    unmet: list[Floor],
    floors: list[Floor],
    sources: list[SourceSection],
    available: list[int],
    caps: list[int],
    total: int | None,
    unit: str,
) -> str:
    lines = []
    for what, key, share, members in unmet:
        have = sum(caps[i] for i in members)
        rows = ", ".join(
            f"{sources[i].name!r}: {available[i]} {unit} left × max_repeats {sources[i].max_repeats}"
            + (f", max_tokens {sources[i].max_tokens}" if sources[i].max_tokens else "")
            for i in members
        )
        if total is None:
            lines.append(
                f"{what} must be at least {share:.2%} of the output ({key}), but nothing of it is "
                f"left after the steps ({rows}): add {what} data, or see why its rows were "
                "rejected (`curate review ID`)"
            )
            continue
        need = math.ceil(share * total - 1e-9)
        got = sum(available[i] for i in members)
        fixes = [f"max_repeats ≥ {math.ceil(need / got)} on its sources"] if got else []
        fixes += [f"{key} ≤ {math.floor(have / total * 10000) / 10000:g}", f"add {what} data"]
        lines.append(
            f"{what} must be at least {share:.2%} of {total} {unit} ({key}): {need} {unit}; "
            f"its sources can give {have} ({rows}). Change one: " + "; ".join(fixes)
        )
    head = f"mixture: {len(unmet)} floor{'s' if len(unmet) > 1 else ''} cannot be met"
    text = head + ":\n  - " + "\n  - ".join(lines)
    if total is not None:
        # a floor so small that any total meets it (min_share = 1e-300) bounds nothing
        bounds = [sum(caps[i] for i in m) / s for _, _, s, m in floors if s > 0]
        largest = math.floor(min(b for b in bounds if math.isfinite(b)) + 1e-9)
        text += (
            f"\nThe largest mixture that meets every floor has total = {largest}: set "
            f"total ≤ {largest}, or leave total out for the largest mixture the data allows"
        )
    return text
