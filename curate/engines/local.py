"""The local engine: an ordered parallel map over blocks, in a process pool.

With N workers, N-1 are processes forked from a forkserver that has already imported
curate's readers (so each task pays no import), and this process is the N-th. With one
worker, tasks run here only (same code path, easier to debug). Results come back in task
order whatever order the workers finish in, so a build's outputs do not depend on the
number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from curate.progress import Progress

T = TypeVar("T")

PRELOAD = [
    "curate.sources",
    "curate.readers",
    "curate.identity",
    "curate.rows",
    "curate.engines.passes",
    "curate.manifests.store",
    "pyarrow.parquet",
    "pyarrow.json",
    "polars",
]


@contextmanager
def _without_user_main() -> Iterator[None]:
    """Spawn workers without re-running the caller's `__main__` in them.

    Workers only run curate's own functions, so they need nothing from the caller's script;
    multiprocessing would otherwise import it again in every worker (and fail outright when
    the caller is `python -` or an interactive session).
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


_ENGINE_RAN = False  # set once an engine ran in this process (and so polars was used)


def _one_thread_each() -> None:
    """Workers already fill the cores: keep Arrow's and polars' own thread pools to one thread."""
    os.environ["POLARS_MAX_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import pyarrow as pa

    pa.set_cpu_count(1)


def _warm_up() -> None:
    """A no-op task: makes the pool start its workers early."""


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class LocalEngine:
    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        progress: Progress | None = None,
        start_method: str = "forkserver",
    ):
        self.workers = workers or default_workers()
        self.start_method = start_method
        self.progress = progress or Progress(enabled=False)
        self._pool: ProcessPoolExecutor | None = None
        self._arrow_threads = 0
        self._tokenizer_threads: str | None = None

    def __enter__(self) -> LocalEngine:
        global _ENGINE_RAN
        if self.workers > 1:
            ctx = multiprocessing.get_context(self._safe_start_method())
            if ctx.get_start_method() == "forkserver":
                ctx.set_forkserver_preload(PRELOAD)
            helpers = self.workers - 1  # this process is the other worker
            with _without_user_main():
                self._pool = ProcessPoolExecutor(
                    max_workers=helpers, mp_context=ctx, initializer=_one_thread_each
                )
                # Start every worker now (a pool spawns them on submit): their imports then
                # overlap with the caller's planning, and no worker is spawned later.
                for _ in range(helpers):
                    self._pool.submit(_warm_up)
            # this process is a worker too: its Arrow threads would only fight the others
            import pyarrow as pa

            self._arrow_threads = pa.cpu_count()
            pa.set_cpu_count(1)
            self._tokenizer_threads = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by tokenizers on every call
        _ENGINE_RAN = True  # an engine's work uses polars here: no later fork is safe
        return self

    def _safe_start_method(self) -> str:
        """`fork` only when asked and this process has no other Python thread.

        Forking is the cheapest start (workers inherit every import), but a child inherits
        the locks other threads held, and polars' thread pool hangs in a child forked after
        polars was used. The CLI asks for `fork` before any of that has happened; the
        Python API, which cannot know what its caller did, uses the forkserver.
        """
        unsafe = threading.active_count() > 1 or sys.platform != "linux" or _ENGINE_RAN
        if self.start_method == "fork" and unsafe:
            return "forkserver"
        return self.start_method

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            import pyarrow as pa

            pa.set_cpu_count(self._arrow_threads)
            if self._tokenizer_threads is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = self._tokenizer_threads

    def map(
        self,
        fn: Callable[..., T],
        items: Sequence[Any],
        label: str,
        weights: Sequence[int] | None = None,
    ) -> list[T]:
        """`[fn(*item) for item in items]`, in parallel, in order, with a progress bar.

        The pool's workers take tasks from the front, one at a time as each finishes (so
        none holds a task it has not started), and this process takes them from the back;
        they meet in the middle. Results keep the order of `items`.
        """
        total = sum(weights) if weights else len(items)
        results: list[Any] = [None] * len(items)
        with self.progress.task(label, total) as bar:
            if self._pool is None or len(items) <= 1:
                for i, item in enumerate(items):
                    results[i] = fn(*item)
                    bar.advance(weights[i] if weights else 1)
                return results
            pool = self._pool
            lock = threading.Lock()
            bounds = {"front": 0, "back": len(items)}  # tasks [front, back) are not taken yet
            futures: dict[int, Future[Any]] = {}

            def feed(_: object = None) -> None:
                with lock:  # take the next task and submit it in one step
                    if bounds["front"] >= bounds["back"]:
                        return
                    i = bounds["front"]
                    bounds["front"] += 1
                    try:
                        futures[i] = pool.submit(fn, *items[i])
                    except RuntimeError:  # the pool is shutting down after a failure
                        return
                futures[i].add_done_callback(feed)

            for _ in range(self.workers - 1):
                feed()
            while True:
                with lock:
                    if bounds["front"] >= bounds["back"]:
                        break
                    bounds["back"] -= 1
                    i = bounds["back"]
                results[i] = fn(*items[i])
                bar.advance(weights[i] if weights else 1)
            for i in range(len(items)):
                with lock:
                    future = futures.get(i)
                if future is not None:
                    results[i] = future.result()
                    bar.advance(weights[i] if weights else 1)
            return results
