"""Folders for the Unix sockets of the processes a build starts.

A Unix socket's path has at most 107 bytes on Linux. The forkserver's socket lives in
multiprocessing's temporary folder and a local Ray's in its own: under a long TMPDIR (a
cluster job's, pytest's) both failed with "AF_UNIX path too long". Python 3.13 moves
multiprocessing's folder itself; curate does it on 3.11 and 3.12 too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

SOCKET_MAX = 107
# multiprocessing's folder and the forkserver's socket below a base folder
FORKSERVER_TAIL = len("/pymp-xxxxxxxx/listener-xxxxxxxx")
# where Python 3.13 looks when the temporary folder is too long
SHORT_BASES = ("/tmp", "/var/tmp", "/usr/tmp")


def fitting_base(tail: int, bases: Sequence[str]) -> str | None:
    """The first writable folder of `bases` below which a socket `tail` bytes long fits."""
    for base in bases:
        if len(os.fsencode(base)) + tail <= SOCKET_MAX and os.access(base, os.W_OK):
            return base
    return None


def short_forkserver_folder() -> None:
    """Give multiprocessing a temporary folder that the forkserver's socket fits in, where
    the usual one is too long (before the forkserver starts; removed at exit as its own)."""
    from multiprocessing import process, util

    config = process.current_process()._config  # type: ignore[attr-defined]  # get_temp_dir's
    if config.get("tempdir") or fitting_base(FORKSERVER_TAIL, [tempfile.gettempdir()]):
        return
    base = fitting_base(FORKSERVER_TAIL, SHORT_BASES)
    if base is None:
        return  # multiprocessing's own error names the path
    folder = tempfile.mkdtemp(prefix="pymp-", dir=base)
    util.Finalize(None, shutil.rmtree, args=(folder, True), exitpriority=-100)
    config["tempdir"] = folder


def remove_forkserver_folder() -> None:
    """Remove multiprocessing's temporary folder now, for a process that leaves with
    os._exit (which skips multiprocessing's exit hook). Only the folder: that hook also
    joins live children, which could block."""
    process = sys.modules.get("multiprocessing.process")
    folder = process.current_process()._config.get("tempdir") if process else None
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
