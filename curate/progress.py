"""Progress reporting: rich bars on a terminal, plain lines in CI or when piped."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def is_interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


class _Plain:
    """Prints `label: done/total` every few seconds while running, and once at the end."""

    EVERY_SECONDS = 5.0

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total, self.done, self.enabled = label, total, 0, enabled
        self.start = self.last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= self.EVERY_SECONDS and self.done < self.total:
            print(f"{self.label}: {self.done}/{self.total}", file=sys.stderr, flush=True)
            self.last = now

    def close(self) -> None:
        if self.enabled:
            print(
                f"{self.label}: {self.done}/{self.total} in {time.monotonic() - self.start:.1f}s",
                file=sys.stderr,
                flush=True,
            )


class _Rich:
    def __init__(self, progress: Any, label: str, total: int):
        self.progress, self.task = progress, progress.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def close(self) -> None:
        pass


class Progress:
    """`with progress.task("read", total) as bar: bar.advance()`."""

    def __init__(self, enabled: bool = True, rich: bool | None = None):
        self.enabled = enabled
        self.rich = is_interactive() if rich is None else rich
        self._live: Any = None

    def __enter__(self) -> Progress:
        return self

    def _start_live(self) -> None:
        """The rich display (and its refresh thread) starts with the first bar, not before."""
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._live = RichProgress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self._live.start()

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    @contextmanager
    def task(self, label: str, total: int) -> Iterator[_Plain | _Rich]:
        if self.enabled and self.rich and self._live is None:
            self._start_live()
        bar: _Plain | _Rich = (
            _Rich(self._live, label, total)
            if self._live is not None
            else _Plain(label, total, self.enabled)
        )
        try:
            yield bar
        finally:
            bar.close()
