"""The local engine: an ordered parallel map over blocks, in a process pool.

With N workers, N-1 are processes forked from a forkserver and this process is the N-th;
with one worker, tasks run here only (same code path, easier to debug). Results come back in
task order whatever order the workers finish in, so a build's outputs do not depend on the
number of workers.

Workers always start from the forkserver, never by forking this process: a child forked
from a process whose polars (or Arrow, or tokenizers) thread pool has run inherits the pool's
locks but not its threads, and waits on them forever. That is how the CLI's `fork` start hung
every build with an eval set: loading the eval set normalizes its words with polars in this
process before the pool starts. The forkserver is a fresh interpreter that only imports
(PRELOAD) and never runs that work, so whatever this process did, its forks are clean.
`prestart` launches it early, so that its imports overlap with the caller's planning.

Workers die with the process that started them. Their parent is the forkserver, and that
does not help: every forkserver child holds the write end of the forkserver's "alive" pipe,
so the forkserver lives as long as its children, and the children as long as their parent.
So each worker watches the build's process itself (by pid and start time; a zombie counts
as dead, since a caller still reading the build's output has not reaped it yet) and exits
within WATCHDOG_SECONDS of its death, even when blocked in a pipe write; the forkserver
then sees its pipe close and exits too. A kill -9 of a build leaves no process behind.
"""

from __future__ import annotations

import importlib.abc
import multiprocessing
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, TypeVar

from curate.engines.sockets import short_forkserver_folder
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
WATCHDOG_SECONDS = 0.5


@contextmanager
def _without_user_main() -> Iterator[None]:
    """Start the forkserver and workers without importing the caller's `__main__` in them.

    Workers only run curate's own functions, so they need nothing from the caller's script;
    multiprocessing would otherwise import it again (and fail outright when the caller is
    `python -` or an interactive session). The pool starts on a thread while the caller's
    thread runs curate's own code, which never looks at `__main__`.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _start_context() -> Any:
    """The forkserver on Linux; spawn where there is none (the same guarantees, slower)."""
    if sys.platform == "linux":
        short_forkserver_folder()
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def prestart() -> None:
    """Launch the forkserver now (it imports PRELOAD in its own process, in parallel)."""
    if sys.platform == "linux":
        from multiprocessing import forkserver

        _start_context()
        with _without_user_main():
            forkserver.ensure_running()


def _process_identity(pid: int) -> str | None:
    """A living process's start time (its identity across pid reuse); None once it is dead
    or a zombie. Where there is no /proc, whether the pid exists."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return None if fields[0] in (b"Z", b"X") else fields[19].decode()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
            return "alive"
        except ProcessLookupError:
            return None
        except PermissionError:
            return "alive"


def _die_with(owner: int, identity: str | None) -> None:
    """End this worker within WATCHDOG_SECONDS of `owner` (the build's process) dying."""

    def watch() -> None:
        while _process_identity(owner) == identity:
            time.sleep(WATCHDOG_SECONDS)
        os._exit(1)

    if identity is None or _process_identity(owner) != identity:
        os._exit(1)  # it died before this worker started
    threading.Thread(target=watch, name="curate-watchdog", daemon=True).start()


class HiddenModules(importlib.abc.MetaPathFinder):
    """Makes top-level packages unimportable in this process (see `hidden`)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".", 1)[0] in self.names:
            raise ModuleNotFoundError(f"{name} is hidden during this curate command")


@contextmanager
def hidden(*names: str) -> Iterator[None]:
    """Keep packages out of this process and of the workers its engines start meanwhile.

    pyarrow imports pandas, when installed, the first time it converts Python values, only
    to learn whether they might be pandas objects: ~0.2-0.4 s of CPU per process, a tenth of
    a small build. Workers carry the same hiding (they start from the forkserver, not from
    this process, so they would not inherit it otherwise).
    """
    finder = HiddenModules(tuple(n for n in names if n not in sys.modules))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _hidden_now() -> tuple[str, ...]:
    return tuple(n for f in sys.meta_path if isinstance(f, HiddenModules) for n in f.names)


def _worker_init(
    owner: int, identity: str | None, hide: tuple[str, ...], env: dict[str, str]
) -> None:
    """Workers already fill the cores: Arrow's and polars' own pools get one thread each.

    The build's environment comes along: the forkserver keeps the one of its first start,
    so a variable set since (a notebook's AWS credentials or CURATE_STORE_CACHE for a bucket
    store) would otherwise be missing in workers — where a worker without credentials put
    mangled uploads into an S3-compatible server (caught by the hash check on reading)."""
    _die_with(owner, identity)
    os.environ.clear()
    os.environ.update(env)
    if hide:
        sys.meta_path.insert(0, HiddenModules(hide))
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
    distributed = False

    def __init__(
        self,
        workers: int | None = None,
        progress: Progress | None = None,
        pool_only: bool = False,
    ):
        self.workers = workers or default_workers()
        self.progress = progress or Progress(enabled=False)
        # every task in the pool, none here: what tasks leave in a process's heap stays out
        # of this one, which goes on to hold what the tasks' results add up to
        self.pool_only = pool_only
        self._pool: ProcessPoolExecutor | None = None
        self._ready = threading.Event()  # set once the pool started (or failed to)
        self._start_error: BaseException | None = None
        self._arrow_threads = 0
        self._tokenizer_threads: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"workers": self.workers}

    def __enter__(self) -> LocalEngine:
        if self.workers > 1 or self.pool_only:
            # Workers start on a thread: spawning one waits until the forkserver has
            # imported PRELOAD, and this process can plan and read meanwhile.
            threading.Thread(target=self._start_pool, name="curate-pool", daemon=True).start()
            # this process is a worker too: its Arrow threads would only fight the others
            import pyarrow as pa

            self._arrow_threads = pa.cpu_count()
            pa.set_cpu_count(1)
            self._tokenizer_threads = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by tokenizers on every call
        return self

    def _start_pool(self) -> None:
        try:
            with _without_user_main():
                me = os.getpid()
                size = self.workers if self.pool_only else self.workers - 1
                pool = ProcessPoolExecutor(
                    max_workers=size,  # else this process is the other worker
                    mp_context=_start_context(),
                    initializer=_worker_init,
                    initargs=(me, _process_identity(me), _hidden_now(), dict(os.environ)),
                )
                # every worker now (a pool spawns them on submit), none later
                for _ in range(size):
                    pool.submit(_warm_up)
            self._pool = pool
        except BaseException as exc:  # noqa: BLE001 - raised in this process's own thread
            self._start_error = exc
        finally:
            self._ready.set()

    def __exit__(self, *exc: object) -> None:
        if self.workers > 1 or self.pool_only:
            self._ready.wait()
        if self._start_error is not None:  # the work was all done here: slower, not wrong
            print(
                f"warning: worker processes could not start ({self._start_error!r}); "
                "this process did all the work",
                file=sys.stderr,
            )
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
            if self.pool_only:
                self._ready.wait()
            if self.pool_only and self._pool is not None:
                submitted = {self._pool.submit(fn, *item): i for i, item in enumerate(items)}
                for done in as_completed(submitted):
                    results[submitted[done]] = done.result()
                    bar.advance(weights[submitted[done]] if weights else 1)
                return results
            if self.workers <= 1 or len(items) <= 1 or self.pool_only:
                for i, item in enumerate(items):
                    results[i] = fn(*item)
                    bar.advance(weights[i] if weights else 1)
                return results
            lock = threading.Lock()
            bounds = {"front": 0, "back": len(items)}  # tasks [front, back) are not taken yet
            futures: dict[int, Future[Any]] = {}
            refused: list[int] = []  # taken for the pool, which could not take them: run here

            def feed(_: object = None) -> None:
                pool = self._pool
                with lock:  # take the next task and submit it in one step
                    if pool is None or bounds["front"] >= bounds["back"]:
                        return
                    i = bounds["front"]
                    bounds["front"] += 1
                    try:
                        futures[i] = pool.submit(fn, *items[i])
                    except RuntimeError:  # a broken or closing pool: never lose the task
                        refused.append(i)
                        return
                futures[i].add_done_callback(feed)

            def start_feeding() -> None:  # once the workers are up; this process starts now
                self._ready.wait()
                for _ in range(self.workers - 1):
                    feed()

            threading.Thread(target=start_feeding, name="curate-feed", daemon=True).start()
            while True:
                with lock:
                    if bounds["front"] >= bounds["back"]:
                        break
                    bounds["back"] -= 1
                    i = bounds["back"]
                results[i] = fn(*items[i])
                bar.advance(weights[i] if weights else 1)
            with lock:  # every task is taken: the pool's share is final
                taken = dict(futures)
            for i in refused:
                results[i] = fn(*items[i])
                bar.advance(weights[i] if weights else 1)
            for i in sorted(taken):
                results[i] = taken[i].result()
                bar.advance(weights[i] if weights else 1)
            return results
