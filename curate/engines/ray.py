"""The Ray engine: the same ordered map over blocks, on Ray actors on a machine or a cluster.

Every pass of a build is `engine.map(fn, items)` over blocks (or slices of them); here each
item is a call on one of the build's actors (one per worker, held for the whole build, so
that what a pass loads, an embedding model or a tokenizer, is loaded once per actor), and
results are put back in the order of `items`, whatever order the calls finish in: the
canonical order comes from an item's position, never from arrival, so the manifest id is
the local engine's for any number of workers. Calls only write files atomically under names
their inputs decide (scratch files in the build's folder, objects named by their sha256),
so a call Ray runs again after its actor died writes the same bytes, and the build does not
change.

`address`: "local" starts Ray in this process for this machine (its temporary folder, and so
its logs, in a short folder of our own, moved into the store's `logs/ray/` at the end); any
other address ("auto", "ray://host:10001", "host:6379") joins a running cluster, whose nodes
must see the store (a folder at the same path on a shared filesystem, or a bucket URI with
CURATE_STORE_CACHE on a shared path for the scratch) and run the same curate and libraries: the engine checks the versions its workers import before the build starts.
Where Ray is already initialized in this process (a notebook, a test session), the build
uses it as it is, starts its actors there, and leaves it running.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from curate.engines.sockets import SOCKET_MAX, fitting_base
from curate.errors import UserError
from curate.progress import Progress

T = TypeVar("T")

# Ray starts an actor again when its process or node dies and runs its call again (not when
# the call raises): a killed worker costs a rerun of its block, nothing else.
TASK_RETRIES = 4
# Variables every worker gets: each actor has one core, so the libraries' own pools only fight.
WORKER_ENV = {"POLARS_MAX_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
# Passed on from the driver when set: where a remote store's local folder (the build's
# scratch) is. Credentials are not: the cluster's own (environment, instance role) apply.
DRIVER_ENV = ("CURATE_STORE_CACHE",)
_settled = False
# a local Ray's temporary folder: <base>/curate-ray-<pid of the build>-<random>
TEMP_PREFIX = "curate-ray-"
# Ray's longest socket below that folder, with a 7-digit pid
SOCKET_TAIL = len("/session_2026-11-28_14-57-50_759355_4194304/sockets/plasma_store")
STALE_SECONDS = 600  # a killed build's Ray processes end within a minute or so


def _worker_env() -> dict[str, str]:
    return WORKER_ENV | {k: os.environ[k] for k in DRIVER_ENV if os.environ.get(k)}


def _call(fn: Callable[..., T], *args: Any) -> T:
    """What each call runs: `fn(*args)`, in a worker settled to one core."""
    global _settled
    if not _settled:
        import pyarrow as pa

        pa.set_cpu_count(1)
        _settled = True
    return fn(*args)


class _Worker:
    """A worker process held for the whole build (an actor): what a pass loads into it (an
    embedding model, a tokenizer, compiled kernels) is still loaded for the next call."""

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return _call(fn, *args)


def _worker_code() -> dict[str, str]:
    """The versions a manifest depends on: curate's, and the libraries whose hashes and
    kernels its steps use (polars' row hashes are exact dedup's keys)."""
    import numpy
    import polars
    import pyarrow

    from curate import __version__

    return {
        "curate": __version__,
        "polars": polars.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
    }


class RayEngine:
    name = "ray"
    distributed = True

    def __init__(
        self,
        workers: int | None = None,
        progress: Progress | None = None,
        address: str = "local",
        logs: Path | None = None,
    ):
        self.requested = workers
        self.workers = workers or 1
        self.progress = progress or Progress(enabled=False)
        self.address = address
        self.logs = logs  # where a local Ray's logs go at the end (None: left in its folder)
        self.kept_logs: str | None = None
        self._owned = False  # whether this engine started or joined Ray (and so ends it)
        self._temp: str | None = None
        self._actors: list[Any] = []

    def describe(self) -> dict[str, Any]:
        """What the run record says of this engine."""
        return {"address": self.address, "workers": self.workers, "logs": self.kept_logs}

    def __enter__(self) -> RayEngine:
        try:
            import ray
        except ImportError as exc:
            raise UserError(
                "--engine ray needs Ray: pip install 'curate[ray]' (ray[data] >= 2.40)"
            ) from exc
        if not ray.is_initialized():
            with self.progress.task("ray", 1) as bar:  # seconds with nothing else to show
                self._start(ray)
                bar.advance()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = min(self.requested, cpus) if self.requested else cpus
        self._check_code(ray)
        return self

    def _pool(self, ray: Any) -> list[Any]:
        """The build's actors, started at its first pass (each holds a core while it lives,
        so none are started before there is work). One that dies (its process or node) is
        started again and its call run again."""
        if not self._actors:
            pool = ray.remote(
                num_cpus=1,
                max_restarts=-1,
                max_task_retries=TASK_RETRIES,
                # also where this build joined a Ray started without them (a notebook's)
                runtime_env={"env_vars": _worker_env()},
            )
            self._actors = [pool(_Worker).remote() for _ in range(self.workers)]
        return self._actors

    def _start(self, ray: Any) -> None:
        quiet = {
            "log_to_driver": False,  # workers' prints and warnings stay in the log files
            "logging_level": logging.ERROR,  # not its notices: the build prints its own
            "include_dashboard": False,
            "runtime_env": {"env_vars": _worker_env()},
        }
        try:
            if self.address == "local":
                _sweep_stale()
                self._temp = _short_temp()
                cpus = self.requested or _cores()
                ray.init(num_cpus=cpus, _temp_dir=self._temp, **quiet)
            else:
                _reachable(self.address)
                _with_token()
                ray.init(address=self.address, **quiet)
        except (OSError, RuntimeError, ValueError) as exc:
            self._discard_temp()
            where = "start Ray here" if self.address == "local" else f"reach {self.address}"
            raise UserError(
                f"--engine ray could not {where}: {str(exc).rstrip('.')}. A cluster is started "
                "with `ray start --head` on its first machine; `--address local` runs Ray here."
            ) from exc
        self._owned = True

    def _check_code(self, ray: Any) -> None:
        """The same curate (and libraries) on the workers as here, or the manifest could
        silently differ."""
        mine = _worker_code()
        theirs = ray.get(ray.remote(num_cpus=0)(_worker_code).remote())
        differ = [f"{k} {theirs.get(k)} (here {v})" for k, v in mine.items() if theirs.get(k) != v]
        if differ:
            raise UserError(
                f"the Ray workers at {self.address} run {', '.join(differ)}: install the same "
                "versions on every node"
            )

    def __exit__(self, *exc: object) -> None:
        import ray

        for actor in self._actors:  # a Ray this build joined goes on without them
            ray.kill(actor)
        self._actors = []
        if not self._owned:
            return

        ray.shutdown()
        self._owned = False
        if self._temp is not None:
            self._keep_logs()
            self._discard_temp()

    def _keep_logs(self) -> None:
        """Move the local Ray's logs into the store; they are not the user's to read."""
        assert self._temp is not None
        session = Path(self._temp) / "session_latest"
        if self.logs is None or not (session / "logs").is_dir():
            return
        target = self.logs / session.resolve().name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(session / "logs", target, dirs_exist_ok=True)
        self.kept_logs = str(target)

    def _discard_temp(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def map(
        self,
        fn: Callable[..., T],
        items: Sequence[Any],
        label: str,
        weights: Sequence[int] | None = None,
    ) -> list[T]:
        """`[fn(*item) for item in items]` on the build's actors, in the order of `items`.

        Each actor runs one item at a time and takes the next as it ends, whichever ends
        first; an argument object shared by many items (the steps, a broadcast index) is
        put in Ray's object store once, not serialized again for every item.
        """
        import ray

        total = sum(weights) if weights else len(items)
        results: list[Any] = [None] * len(items)
        shared = _shared_args(ray, items)
        where: dict[Any, tuple[int, Any]] = {}
        waiting = iter(range(len(items)))

        def submit(actor: Any) -> None:
            for i in waiting:
                args = [shared.get(id(a), a) for a in items[i]]
                where[actor.call.remote(fn, *args)] = (i, actor)
                return

        with self.progress.task(label, total) as bar:
            for actor in self._pool(ray):
                submit(actor)
            while where:
                done, _ = ray.wait(list(where), num_returns=1)
                i, actor = where.pop(done[0])
                submit(actor)
                results[i] = _get(ray, done[0])
                bar.advance(weights[i] if weights else 1)
        return results


def _shared_args(ray: Any, items: Sequence[Any]) -> dict[int, Any]:
    """Object refs for argument objects that more than one item holds (by identity)."""
    seen: dict[int, int] = {}
    keep: dict[int, Any] = {}
    for item in items:
        for arg in item:
            if arg is None or isinstance(arg, (str, int, float, bool)):
                continue
            seen[id(arg)] = seen.get(id(arg), 0) + 1
            keep[id(arg)] = arg
    return {key: ray.put(keep[key]) for key, count in seen.items() if count > 1}


def _get(ray: Any, ref: Any) -> Any:
    """A call's result; a call that raised raises its own error here (a UserError stays
    one, with its message naming file and line), not Ray's wrapper."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, BaseException):
            raise cause from None
        raise


def _temp_bases() -> list[str]:
    """Where a local Ray's folder may go, preferred first: Ray's own RAY_TMPDIR alone where
    it is set (the user chose it), else the temporary folder, else /tmp."""
    if os.environ.get("RAY_TMPDIR"):
        return [os.environ["RAY_TMPDIR"]]
    return list(dict.fromkeys([tempfile.gettempdir(), "/tmp"]))


def _short_temp() -> str:
    """A folder for a local Ray short enough for its sockets: Ray's sockets live in its
    temporary folder, and a cluster's or pytest's TMPDIR is often too long for them."""
    tail = 1 + len(TEMP_PREFIX) + len(str(os.getpid())) + 1 + 8 + SOCKET_TAIL  # mkdtemp: 8
    base = fitting_base(tail, _temp_bases())
    if base is not None:
        return tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=base)
    longest = SOCKET_MAX - tail
    raise UserError(
        f"--engine ray needs a writable folder of at most {longest} characters for the "
        f"sockets of the Ray it starts (tried {', '.join(_temp_bases())}): set RAY_TMPDIR"
    )


def _sweep_stale() -> None:
    """Remove the temporary folders of local Rays whose build was killed (kill -9 leaves no
    chance to clean up; Ray's own processes of that build end by themselves)."""
    import time

    from curate.engines.local import _process_identity

    for folder in (f for base in _temp_bases() for f in Path(base).glob(f"{TEMP_PREFIX}*-*")):
        pid = folder.name.removeprefix(TEMP_PREFIX).split("-", 1)[0]
        try:
            old = time.time() - folder.stat().st_mtime > STALE_SECONDS
        except OSError:
            continue
        if pid.isdigit() and old and _process_identity(int(pid)) is None:
            shutil.rmtree(folder, ignore_errors=True)


def _reachable(address: str, seconds: float = 5.0) -> None:
    """Refuse an address nothing listens on now: Ray itself waits minutes on one."""
    import socket

    if address == "auto":  # Ray finds the cluster of this machine, or says there is none
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("an address is auto, local, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc.strerror or exc})") from exc


def _with_token() -> None:
    """Present this machine's Ray token to the cluster, as `--address auto` does.

    `ray start --head` makes a token (~/.ray/auth_token) and requires it; Ray finds it for
    "auto" but not for an explicit address, and then retries a refused handshake for a
    minute. A mode the user set (RAY_AUTH_MODE) is left as it is.
    """
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    try:  # what "auto" runs (Ray reads the mode once, so setting the variable is too late)
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # another Ray: the user sets RAY_AUTH_MODE=token themselves
        return
    notices = logging.getLogger(setup.__name__)
    level = notices.level
    notices.setLevel(logging.ERROR)  # "token authentication is enabled": as it should be
    try:
        setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        notices.setLevel(level)


def _cores() -> int:
    from curate.engines.local import default_workers

    return default_workers()
