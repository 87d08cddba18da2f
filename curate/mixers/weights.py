"""Mixture by weight and role: how many copies of each surviving row the output holds.

Requested shares are the weights sharpened or flattened by the temperature
(`w ** (1 / temperature)`, normalized), or, without weights, the sources' natural sizes.
Roles (`[mixture.roles]`) set floors and caps on the share of a role's sources, and
`max_repeats` / `max_tokens` cap what a source can give; `solve` finds the shares closest to
the requested ones within those limits (a source the limits move is reported with the limit
that bound it). With `total`, the output holds that much (rows, or tokens); without, it is
the largest mixture that honours the solved shares without using any row more than
`max_repeats` times (a source with no rows left is left out of that reckoning).

A floor the data cannot meet is an error naming the numbers and the fixes, never a silent
shortfall. A source asked for fewer rows than it has is sampled without replacement (the
rest go to the ledger as `not_sampled`); one asked for more is upsampled by whole repeats
first, then a sample for the remainder, never past `max_repeats`. Draws are seeded per
source, so a build is reproducible and one source's draw does not shift when another
source changes.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from curate.config import POSITIVE_ROLES, MixtureSection, SourceSection
from curate.errors import UserError
from curate.mixers.solve import EPS, GROUPS, Node, allocate, role_nodes
from curate.mixers.targets import apportion_tree, check_floors


class MixtureError(UserError):
    """The mixture asked for cannot be made from the data left after the steps."""


@dataclass(frozen=True)
class MixturePlan:
    copies: np.ndarray  # per alive row (canonical order): how many times it is emitted
    report: dict[str, Any]


def shares(weights: list[float], temperature: float) -> list[float]:
    sharpened = [w ** (1.0 / temperature) if w > 0 else 0.0 for w in weights]
    total = sum(sharpened)
    return [s / total for s in sharpened]


def requested_shares(
    sources: list[SourceSection], available: np.ndarray, temperature: float
) -> list[float]:
    weighted = all(s.weight is not None for s in sources)
    weights = [float(s.weight) if weighted else float(available[i]) for i, s in enumerate(sources)]  # type: ignore[arg-type]
    if sum(weights) == 0:
        weights = [1.0] * len(sources)  # nothing survived: any shares will do
    return shares(weights, temperature if weighted else 1.0)


def limit_tree(
    sources: list[SourceSection],
    mixture: MixtureSection,
    p: list[float],
    caps: list[int],
    total: int | None,
) -> Node:
    """The limits as a tree (see `solve`): sources under their roles, roles under the
    positive / other groups where `min_positive_share` asks for them."""
    leaves = []
    for i, src in enumerate(sources):
        room = (caps[i] / total if total else 1.0) if caps[i] > 0 else 0.0
        why = (
            "max_tokens"
            if src.max_tokens is not None and caps[i] == src.max_tokens
            else "max_repeats"
        )
        leaves.append(Node(src.name, p[i], hi=min(room, 1.0), hi_why=why))
    roles = []
    for role in sorted({s.role for s in sources}, key=_role_order):
        limits = mixture.roles.get(role)
        kids = [leaf for leaf, s in zip(leaves, sources, strict=True) if s.role == role]
        node = Node(role, sum(k.weight for k in kids), children=kids)
        if limits is not None:
            node.lo, node.lo_why = (limits.min_share or 0.0), "min_share"
            if limits.max_share is not None:
                node.hi, node.hi_why = limits.max_share, "max_share"
        roles.append(node)
    mined = mixture.roles.get("mined")
    positive = mined.min_positive_share if mined is not None else None
    if not positive:
        return Node("output", sum(r.weight for r in roles), children=roles)
    groups = []
    positives = [r for r in roles if r.name in POSITIVE_ROLES]
    others = [r for r in roles if r.name not in POSITIVE_ROLES]
    for name, members in zip(GROUPS, (positives, others), strict=True):
        if members:
            groups.append(Node(name, sum(r.weight for r in members), children=members))
    groups[0].lo, groups[0].lo_why = positive, "min_positive_share"
    return Node("output", sum(g.weight for g in groups), children=groups)


def _role_order(role: str) -> int:
    from curate.config import ROLES

    return ROLES.index(role)


def plan_mixture(
    source_rank: np.ndarray,
    sources: list[SourceSection],
    mixture: MixtureSection,
    seed: int,
    sizes: np.ndarray | None = None,
    tokens: np.ndarray | None = None,
    keys: np.ndarray | None = None,
    first: np.ndarray | None = None,
) -> MixturePlan:
    """`source_rank`: the source index of every alive row, in canonical order.

    `first`: per alive row, whether it is drawn before its source's other rows (a row a
    reviewer kept: a decision that lands, not one a sample drops again).

    `keys`: per alive row, a 64-bit number from its id (`id_numbers`); each source's rows
    are drawn in the order of a seeded hash of it, so that a row keeps its fate when others
    are added or removed (a rebuild after review changes the rows decided, not a reshuffled
    sample). Without it, rows are keyed by their position.

    `sizes` (with `unit = "tokens"`): each alive row's size in the budget's count; shares,
    `total` and caps are then in tokens, and a source's draw takes rows in its seeded order
    while they fit in what it was asked for (whole repeats first, as for rows). `tokens`:
    each alive row's tokens in that count, where a tokenizer ran, for the report in both units.
    """
    in_tokens = sizes is not None
    unit = "tokens" if in_tokens else "rows"
    size = sizes.astype(np.int64) if sizes is not None else np.ones(len(source_rank), np.int64)
    n = len(sources)
    available = np.bincount(source_rank, weights=size, minlength=n).astype(np.int64)
    caps = [int(available[i]) * s.max_repeats for i, s in enumerate(sources)]
    if in_tokens:
        caps = [
            min(c, s.max_tokens) if s.max_tokens else c for c, s in zip(caps, sources, strict=True)
        ]
    p = requested_shares(sources, available, mixture.temperature)
    check_floors(sources, mixture, [int(a) for a in available], caps, mixture.total, unit)
    tree, total = solve(sources, mixture, p, caps, unit)
    if mixture.strict_shares:
        _refuse_moved_shares(tree, sources, p)
    wants = whole_amounts(tree, total, caps, sources, mixture, unit)
    floored = {r for r, lim in mixture.roles.items() if lim.min_share}
    copies = np.zeros(len(source_rank), dtype=np.int64)
    if keys is None:
        keys = np.arange(len(source_rank), dtype=np.uint64)
    for i, src in enumerate(sources):
        rows = np.nonzero(source_rank == i)[0]
        if len(rows) and wants[i]:
            order = _seeded_order(keys[rows], seed, src.name)
            if first is not None and first[rows].any():
                order = order[np.argsort(~first[rows][order], kind="stable")]
            copies[rows] = _draw(size[rows], wants[i], caps[i], order, src.role in floored)
    from curate.mixers.report import mixture_report

    report = mixture_report(
        tree,
        sources,
        mixture,
        p,
        wants,
        caps,
        source_rank,
        copies,
        size,
        tokens,
        total,
        mixture.total,
    )
    return MixturePlan(copies, report)


def solve(
    sources: list[SourceSection],
    mixture: MixtureSection,
    p: list[float],
    caps: list[int],
    unit: str,
) -> tuple[Node, int]:
    """The limit tree with its solved shares, and the total: `total` as asked, less where
    the data runs short of it; without one, the largest the solved shares allow."""
    total = mixture.total if any(caps) else 0  # nothing survived: an empty mixture
    tree = limit_tree(sources, mixture, p, caps, total)
    lo, hi = tree.span()
    if hi < 1 - 1e-9 and total:
        total = _largest_total(sources, mixture, p, caps, total)
        tree = limit_tree(sources, mixture, p, caps, total)
        lo, hi = tree.span()
    if (hi < 1 - 1e-9 or lo > 1 + 1e-9) and total != 0:
        raise MixtureError(_unfillable(tree, unit))
    allocate(tree, 1.0)
    if total is None:
        shares = {leaf.name: leaf.share for leaf in tree.leaves()}
        limits = [
            caps[i] / shares[s.name]
            for i, s in enumerate(sources)
            if shares[s.name] > EPS and caps[i] > 0
        ]
        total = int(math.floor(min(limits) + 1e-9)) if limits else 0
    return tree, total


def whole_amounts(
    tree: Node,
    total: int,
    caps: list[int],
    sources: list[SourceSection],
    mixture: MixtureSection,
    unit: str,
) -> list[int]:
    """Whole rows (or tokens) per source. Floors that whole rows cannot all meet at a small
    total (two floors of 0.35 need 2 + 2 of 3 rows) are met at the largest total below that
    can; with `total` given, that is an error."""
    names = [s.name for s in sources]
    for amount in range(total, max(total - 10_000, 0) - 1, -1):
        wants = apportion_tree(tree, amount, caps, names)
        unmet = unmet_floors(wants, sources, mixture)
        if not unmet:
            return wants
        if mixture.total is not None:
            raise MixtureError(
                f"mixture: at total = {total} {unit}, whole {unit} cannot meet every floor "
                f"({'; '.join(unmet)}): raise total, or lower a min_share"
            )
    return [0] * len(sources)


def unmet_floors(
    wants: list[int], sources: list[SourceSection], mixture: MixtureSection
) -> list[str]:
    whole = sum(wants)
    out = []
    for role, limits in mixture.roles.items():
        have = sum(w for w, s in zip(wants, sources, strict=True) if s.role == role)
        if limits.min_share and whole and have < limits.min_share * whole - 1e-9:
            out.append(
                f"role {role!r} would hold {have} of {whole}, under min_share {limits.min_share}"
            )
        if limits.min_positive_share and whole:
            positive = sum(
                w for w, s in zip(wants, sources, strict=True) if s.role in POSITIVE_ROLES
            )
            if positive < limits.min_positive_share * whole - 1e-9:
                out.append(f"positive roles would hold {positive} of {whole}")
    return out


def id_numbers(ids: pl.Series) -> np.ndarray:
    """Each row id (16 hex digits, `#k` for a later copy of a repeated row) as a 64-bit
    number, the copy number mixed in; an id that is not hex counts as 0 (its position then
    breaks the tie)."""
    halves = [
        ids.str.slice(a, 8).str.to_integer(base=16, strict=False).fill_null(0).cast(pl.UInt64)
        for a in (0, 8)
    ]
    copy = ids.str.extract(r"#(\d+)$").cast(pl.UInt64, strict=False).fill_null(0)
    with np.errstate(over="ignore"):
        number = (halves[0].to_numpy() << np.uint64(32)) | halves[1].to_numpy()
        return number ^ (copy.to_numpy() * np.uint64(0x9E3779B97F4A7C15))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _seeded_order(keys: np.ndarray, seed: int, source: str) -> np.ndarray:
    parts = np.array([seed % 2**64, zlib.crc32(source.encode())], dtype=np.uint64)
    salt = _mix(parts[:1]) ^ _mix(_mix(parts[1:]))
    return np.argsort(_mix(keys.astype(np.uint64) ^ salt), kind="stable")


def _draw(size: np.ndarray, want: int, cap: int, draw: np.ndarray, floored: bool) -> np.ndarray:
    """Copies per row of one source: whole repeats, then rows in `draw` order while they
    fit in the remainder (for a floored role, until they cover it: its share never falls
    short of its floor for want of a row that does not fit exactly)."""
    a = int(size.sum())
    base, extra = divmod(want, a)
    per_row = np.full(len(size), base, dtype=np.int64)
    cumulative = np.cumsum(size[draw])
    fits = int(np.searchsorted(cumulative, extra, side="right"))
    short = fits == 0 or cumulative[fits - 1] < extra
    if floored and extra and fits < len(size) and short and base * a + cumulative[fits] <= cap:
        fits += 1
    per_row[draw[:fits]] += 1
    return per_row


def _largest_total(
    sources: list[SourceSection],
    mixture: MixtureSection,
    p: list[float],
    caps: list[int],
    total: int,
) -> int:
    """The largest total ≤ `total` the data can fill within the limits (0 if none)."""
    low, high = 0, total
    while low < high:
        mid = (low + high + 1) // 2
        if limit_tree(sources, mixture, p, caps, mid).span()[1] >= 1 - 1e-9:
            low = mid
        else:
            high = mid - 1
    return low


def _unfillable(tree: Node, unit: str) -> str:
    caps = [f"{r.name} at most {r.hi:.1%}" for r in role_nodes(tree) if r.hi_why == "max_share"]
    return (
        "the mixture cannot be filled: the roles' max_share limits ("
        + ", ".join(caps)
        + f") add up to less than the whole output, and no other role has {unit} to fill the "
        "rest; raise a max_share or add a source of another role"
    )


def _refuse_moved_shares(tree: Node, sources: list[SourceSection], p: list[float]) -> None:
    moved = [
        f"role {r.name!r}: weights ask {r.weight:.4f}, {r.bound} allows {r.share:.4f}"
        for r in role_nodes(tree)
        if r.bound in ("min_share", "max_share", "min_positive_share")
    ]
    groups = [g for g in tree.children if g.name == "positive" and g.bound]
    moved += [
        f"positive roles: weights ask {g.weight:.4f}, min_positive_share needs {g.share:.4f}"
        for g in groups
    ]
    if moved:
        raise MixtureError(
            "strict_shares: the weights conflict with the roles' limits:\n  - "
            + "\n  - ".join(moved)
            + "\nchange the weights to meet the limits, or drop strict_shares to let the build solve for the closest shares"
        )


def not_sampled_detail(report: dict[str, Any], source: str) -> dict[str, Any]:
    entry = report["sources"][source]
    keys = ("requested_rows", "available_rows", "requested_tokens", "available_tokens", "weight")
    return {k: entry[k] for k in keys if k in entry}
