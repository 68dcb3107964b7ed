"""`files.atomic_dir` swaps outputs so that a complete output exists at every instant (issue 16.3): a real
process writing a directory output is SIGKILLed at each named point of the swap (test hook
LUCIE_TEST_KILL_AT), in both modes (renameat2 exchange and the three-rename fallback); afterwards the
output is the old or the new one, complete, and the next run leaves exactly the new one and nothing else."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stages.core import dir_swap
from stages.core import files as core_files

ROOT = Path(__file__).resolve().parent.parent
OLD = {"a.txt": "old a", "sub/b.txt": "old b", "only-old.txt": "x"}
NEW = {"a.txt": "new a", "sub/b.txt": "new b", "only-new.txt": "y"}
WRITER = """
import sys
from pathlib import Path
from stages.core import files as core_files
out, files = Path(sys.argv[1]), dict(a.split("=", 1) for a in sys.argv[2:])
with core_files.atomic_dir(out) as tmp:
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
"""


def write(out: Path, files: dict, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WRITER, str(out), *(f"{k}={v}" for k, v in files.items())],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def content(d: Path) -> dict | None:
    if not d.is_dir():
        return None
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()}


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def exchange_works(tmp_path: Path) -> bool:
    a, b = tmp_path / "xa", tmp_path / "xb"
    a.mkdir(), b.mkdir()
    try:
        return dir_swap.exchange(a, b)
    finally:
        a.rmdir(), b.rmdir()


MODES = ["exchange", "three-renames"]
POINTS = {"exchange": ["before-swap", "after-swap"], "three-renames": ["before-swap", "after-backup", "after-swap"]}
CASES = [(m, p) for m in MODES for p in POINTS[m]]


@pytest.mark.parametrize("mode,point", CASES, ids=[f"{m}:{p}" for m, p in CASES])
def test_a_kill_at_each_point_leaves_a_complete_output(tmp_path, mode, point):
    if mode == "exchange" and not exchange_works(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available on this system/filesystem")
    env = {"LUCIE_TEST_NO_EXCHANGE": "1"} if mode == "three-renames" else {}
    out = tmp_path / "work" / "data"
    assert write(out, OLD).returncode == 0 and content(out) == OLD

    res = write(out, NEW, LUCIE_TEST_KILL_AT=f"atomic_dir:{point}", **env)
    assert res.returncode == -signal.SIGKILL, res.stderr
    got = content(out)
    if got is None:  # only in the gap of the three-rename fallback: the old output is whole, under its backup name
        assert (mode, point) == ("three-renames", "after-backup")
        backups = [p for p in out.parent.iterdir() if ".old-" in p.name]
        assert len(backups) == 1 and content(backups[0]) == OLD
        dir_swap.recover(out)  # what the next run does first
        assert content(out) == OLD
    else:
        assert got in (OLD, NEW), got
        assert got == (NEW if point == "after-swap" else OLD)

    assert write(out, NEW, **env).returncode == 0  # the rerun
    assert content(out) == NEW
    assert siblings(out) == []  # no temp directory, no backup left


def test_three_renames_without_a_kill(tmp_path):
    out = tmp_path / "data"
    for files in (OLD, NEW):
        assert write(out, files, LUCIE_TEST_NO_EXCHANGE="1").returncode == 0
    assert content(out) == NEW and siblings(out) == []


def test_if_the_old_output_cannot_be_removed_the_new_one_is_in_place_and_no_temp_dir_is_left(tmp_path, monkeypatch,
                                                                                           capsys):
    out = tmp_path / "data"
    with core_files.atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("old")
    real_rm = dir_swap._rm

    def stuck(p: Path):  # the previous output cannot be removed (e.g. a busy mount, an immutable file)
        if (p / "old.txt").exists():
            raise PermissionError(13, "Permission denied", str(p))
        real_rm(p)

    monkeypatch.setattr(dir_swap, "_rm", stuck)
    with core_files.atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert content(out) == {"new.txt": "new"}
    assert "could not be removed" in capsys.readouterr().err
    left = siblings(out)
    assert len(left) == 1 and content(out.parent / left[0]) == {"old.txt": "old"}  # the old output, named; not the new
    monkeypatch.setattr(dir_swap, "_rm", real_rm)
    # A later process (this pid is alive, so pretend the leftover came from a dead one): removed on the next write.
    dead = out.parent / left[0].rsplit("-", 1)[0].__add__("-999999")
    os.rename(out.parent / left[0], dead)
    with core_files.atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("newer")
    assert siblings(out) == [] and content(out) == {"new.txt": "newer"}


def test_a_failed_swap_leaves_no_temp_dir(tmp_path, monkeypatch):
    out = tmp_path / "data"
    with core_files.atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("old")
    monkeypatch.setenv("LUCIE_TEST_NO_EXCHANGE", "1")
    real_rename = os.rename

    def fail_second(src, dst):
        if ".tmp-" in str(src):
            raise OSError(16, "Device or resource busy", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(dir_swap.os, "rename", fail_second)
    with pytest.raises(OSError, match="busy"):
        with core_files.atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.setattr(dir_swap.os, "rename", real_rename)
    assert content(out) == {"old.txt": "old"} and siblings(out) == []
