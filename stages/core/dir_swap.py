"""Put a finished directory in place of an output so that a complete output exists at every instant.

`files.atomic_dir` used to remove the old output and then rename the new one in: a kill in that gap left
no output at all, and the complete new one sat in a temp directory that the next run deleted. Here:

1. `renameat2(RENAME_EXCHANGE)` (Linux >= 3.15, glibc >= 2.28, through ctypes) swaps the two names in
   one system call: the path holds the old output, then the new one, never nothing. The old output,
   now under the temp name, is removed afterwards; a kill before that leaves it under a temp name of
   a dead process, which the next write to the path removes (`files.remove_stale_tmp`).
2. Where the filesystem or libc cannot exchange, three renames: output -> `.NAME.old-HOST-PID`,
   temp -> output, remove the backup. A kill between the first two leaves the old complete output
   under the backup name; `recover` (run by the next `atomic_dir` on the path) renames it back when
   the path is missing, and removes it when the new output made it into place.

If the old output cannot be removed (the last step), the new one is already in place: a warning names
what was left, and the next run removes it. If anything fails before the swap, the caller removes its
temp directory: a failure never leaves a temp directory behind.

Test hooks: LUCIE_TEST_KILL_AT=atomic_dir:before-swap|after-backup|after-swap SIGKILLs the process at
that point; LUCIE_TEST_NO_EXCHANGE=1 forces the three-rename fallback.
"""
from __future__ import annotations

import ctypes
import errno
import glob
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

KILL_ENV = "LUCIE_TEST_KILL_AT"
NO_EXCHANGE_ENV = "LUCIE_TEST_NO_EXCHANGE"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2

try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
except (OSError, AttributeError):  # not glibc >= 2.28 (musl, macOS): the fallback
    _renameat2 = None


def kill_point(name: str) -> None:
    """SIGKILL this process here when the test hook names this point."""
    if os.environ.get(KILL_ENV) == f"atomic_dir:{name}":
        os.kill(os.getpid(), signal.SIGKILL)


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False when this system or filesystem cannot."""
    if _renameat2 is None or os.environ.get(NO_EXCHANGE_ENV) == "1":
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def backup_name(path: Path, pid: int | None = None) -> Path:
    return path.with_name(f".{path.name}.old-{socket.gethostname()}-{pid or os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _discard(old: Path, path: Path) -> None:
    """Remove the previous output; failing that, say what was left (the new output is in place)."""
    try:
        _rm(old)
    except OSError as err:
        print(f"warning: {path} was replaced, but its previous version could not be removed from {old} ({err}); "
              "the next write to this path removes it, or delete it by hand", file=sys.stderr)


def recover(path: Path) -> list[Path]:
    """After a kill inside a three-rename swap (backups of dead processes on this host): put the old
    output back when the path is missing, else remove the backup. Returns the backups handled."""
    prefix = f".{path.name}.old-{socket.gethostname()}-"
    handled = []
    for b in sorted(path.parent.glob(f"{glob.escape(prefix)}*")) if path.parent.is_dir() else ():
        pid = b.name[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if os.path.lexists(path):
            _discard(b, path)
        else:
            os.rename(b, path)
        handled.append(b)
    return handled


def replace(tmp: Path, path: Path) -> None:
    """Put the finished directory `tmp` at `path`; at every instant a complete output exists."""
    kill_point("before-swap")
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    if exchange(tmp, path):  # path: new output; tmp: the old one
        kill_point("after-swap")
        _discard(tmp, path)
        return
    backup = backup_name(path)
    _rm(backup)
    os.rename(path, backup)
    kill_point("after-backup")
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(backup, path)  # put the old output back; the caller removes tmp
        raise
    kill_point("after-swap")
    _discard(backup, path)
