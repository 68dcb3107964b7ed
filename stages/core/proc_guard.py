"""Processes and locks of a data stage that must not outlive it, or run twice at once.

- `children_die_with_me()`: datatrove's LocalPipelineExecutor always starts a `multiprocess.Manager`
  server process (forked). A SIGKILLed stage cannot stop it: it lingered for minutes, holding
  inherited file descriptors (mlflow.db among them). An at-fork hook asks Linux (prctl
  PR_SET_PDEATHSIG) to SIGKILL every process this stage forks directly when the stage dies. Only
  direct children: a grandchild (forked by the manager) dies with its own parent. No-op off Linux.
- `exclusive(root, stage)`: two direct `python -m stages.ingest` (no DVC lock) shared
  `data/.raw.tasks` and one crashed. The stage takes an exclusive `flock` on
  `.lucie/locks/<stage>.lock` (released by the kernel when the process dies, so a kill never leaves a
  stale lock); a second run fails at once with one line naming the holder.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from pathlib import Path
from typing import Iterator

from stages.core.runtime import StageError

_PR_SET_PDEATHSIG = 1
_registered_for: set[int] = set()


def _pdeathsig(parent: int) -> None:
    if os.getppid() != parent:  # a grandchild, or the parent is already gone
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # died between fork and prctl
        os._exit(1)


def children_die_with_me() -> None:
    """Register (once per process) the hook that ties forked children to this process's life."""
    me = os.getpid()
    if me in _registered_for or not hasattr(os, "register_at_fork"):
        return
    _registered_for.add(me)
    os.register_at_fork(after_in_child=lambda: _pdeathsig(me))


class StageLocked(StageError):
    """Another run of the same stage is in progress on this project."""


@contextlib.contextmanager
def exclusive(root: Path, stage: str) -> Iterator[Path]:
    import fcntl

    path = Path(root) / ".lucie" / "locks" / f"{stage}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise StageLocked(f"another {stage} run ({holder}) is using this project ({path} is locked); "
                              "wait for it to finish, or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield path
    finally:
        os.close(fd)
