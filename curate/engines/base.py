"""What the pipeline needs from an engine, whatever runs the work (a process pool, Ray)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Engine(Protocol):
    """An ordered parallel map over tasks, used as a context manager around a build.

    `map` returns `[fn(*item) for item in items]` in the order of `items`, whatever order the
    work finishes in, so a build's outputs never depend on the engine or its worker count;
    `weights` size each task for the progress bar labelled `label`.
    """

    name: str
    workers: int
    # whether tasks run on other machines: global steps that can (`spread_keys`) then leave
    # their keys with the workers and resolve in parts, as tasks, instead of on the driver
    distributed: bool

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What a build's run record says of the engine (never part of the manifest)."""
        ...

    def map(
        self,
        fn: Callable[..., T],
        items: Sequence[Any],
        label: str,
        weights: Sequence[int] | None = None,
    ) -> list[T]: ...
