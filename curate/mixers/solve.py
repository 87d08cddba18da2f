"""Shares that honour the weights within the limits roles and data set.

The limits form a tree: the output; (with `min_positive_share`) the positive roles and the
others; each role (`min_share`, `max_share`); each source (what its rows can give:
`max_repeats`, `max_tokens`, relative to the total). Amounts flow down from the root: a node
gives each child its requested share scaled by one common factor, clamped to what the child
can hold (`fill`), so shares stay in the weights' proportions except where a limit binds,
and what a bound child cannot take (or must take) is spread over its siblings in proportion.
This is the closest feasible point in the sense users read mixtures: every unbound source
keeps its weight's ratio to every other unbound source of its group.

Exact and deterministic: piecewise-linear solves, no iteration, no tolerance to tune.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EPS = 1e-12
GROUPS = ("positive", "other")  # the level between the output and the roles, where present


@dataclass
class Node:
    name: str
    weight: float  # requested share (leaves) or the sum of its leaves'
    lo: float = 0.0
    hi: float = 1.0
    lo_why: str | None = None  # the limit `lo` stands for (e.g. "min_share")
    hi_why: str | None = None
    children: list[Node] = field(default_factory=list)
    share: float = 0.0  # solved
    bound: str | None = None  # the limit that moved this node off its weight, if any

    def span(self) -> tuple[float, float]:
        """The shares this node can hold: its own limits within its children's."""
        if not self.children:
            return self.lo, self.hi
        spans = [c.span() for c in self.children]
        return max(self.lo, sum(s[0] for s in spans)), min(self.hi, sum(s[1] for s in spans))

    def leaves(self) -> list[Node]:
        return [self] if not self.children else [x for c in self.children for x in c.leaves()]


def role_nodes(tree: Node) -> list[Node]:
    """The role nodes of a limit tree, under the groups where there are groups."""
    if tree.children and tree.children[0].name in GROUPS:
        return [r for g in tree.children for r in g.children]
    return tree.children


def fill(weights: list[float], spans: list[tuple[float, float]], amount: float) -> list[float]:
    """x_i = clamp(w_i · m, lo_i, hi_i) with Σ x_i = amount (the caller checked that
    Σ lo ≤ amount ≤ Σ hi). Children without weight take only their `lo` unless the others
    cannot hold the amount; then they share the rest in proportion to their headroom."""
    lo = [s[0] for s in spans]
    hi = [s[1] for s in spans]
    weighted = [i for i, w in enumerate(weights) if w > 0]
    top = sum(hi[i] for i in weighted) + sum(lo[i] for i, w in enumerate(weights) if w <= 0)
    if amount >= top - EPS:  # every weighted child full; the unweighted share the rest
        out = [hi[i] if weights[i] > 0 else lo[i] for i in range(len(weights))]
        rest = amount - top
        room = [hi[i] - lo[i] if weights[i] <= 0 else 0.0 for i in range(len(weights))]
        if rest > 0 and sum(room) > 0:
            out = [o + rest * r / sum(room) for o, r in zip(out, room, strict=True)]
        return out
    # f(m) = Σ clamp(w m, lo, hi) is piecewise linear and nondecreasing: find its segment
    points = sorted(
        {0.0, *(lo[i] / weights[i] for i in weighted), *(hi[i] / weights[i] for i in weighted)}
    )

    def f(m: float) -> float:
        return sum(
            min(max(weights[i] * m, lo[i]), hi[i]) if weights[i] > 0 else lo[i]
            for i in range(len(weights))
        )

    m = points[-1]
    for a, b in zip(points, points[1:], strict=False):
        fa, fb = f(a), f(b)
        if fb >= amount:
            m = a if fb == fa else a + (amount - fa) * (b - a) / (fb - fa)
            break
    return [
        min(max(weights[i] * m, lo[i]), hi[i]) if weights[i] > 0 else lo[i]
        for i in range(len(weights))
    ]


def allocate(node: Node, amount: float) -> None:
    """Give `node` the share `amount` and pass it down; mark the limits that bound."""
    node.share = amount
    if not node.children:
        return
    spans = [c.span() for c in node.children]
    shares = fill([c.weight for c in node.children], spans, amount)
    scale = amount / node.weight if node.weight > 0 else 0.0
    for child, (lo, hi), share in zip(node.children, spans, shares, strict=True):
        asked = child.weight * scale
        # a child held at a limit its weight would pass is bound by it; one that only takes
        # up what a bound sibling gave up (or gives up what one needed) is not
        if share > asked + 1e-9 and share <= lo + 1e-9:
            # raised to its own floor, or to the floors of the roles under it
            child.bound = child.lo_why if child.lo >= lo - EPS else "min_share"
        elif share < asked - 1e-9 and share >= hi - 1e-9:
            # held to its own cap, or to what the rows under it can give
            child.bound = child.hi_why if child.hi <= hi + EPS else "max_repeats"
        allocate(child, share)
