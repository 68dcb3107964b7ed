"""Directories the project deletes are its own: inside the project, and made by it.

`executor.logging_dir` used to be joined to the project root as given, so an absolute path (or `../..`)
made a data stage `rmtree` `<that dir>/<stage>` wherever it pointed. Now:

- `inside(root, rel, key)`: a configured relative path resolved under the project root; an absolute
  path, one that climbs out with `..`, or one that resolves outside through a symlink is refused with
  one line naming the params key;
- `remove(d)`: removes a directory only when the project made it: it holds the marker file `make`
  leaves (MARKER), or it is a datatrove logging folder from before the marker existed (datatrove's
  `executor.json`); an empty directory is removed too. Anything else is refused with one line, and
  nothing is deleted;
- `make(d)`: creates the directory with its marker.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

MARKER = ".lucie-owned"
LEGACY = ("executor.json",)  # datatrove writes it into every logging folder it runs with


class NotOwned(ValueError):
    """A path the project must not touch; the message names the key or the folder and what to do."""


def inside(root: Path, rel: str, key: str) -> Path:
    """`root / rel`, resolved, refused unless it stays inside `root`."""
    root = Path(root).resolve()
    if os.path.isabs(rel) or Path(rel).drive:
        raise NotOwned(f"{key}: {rel!r} is absolute; give a path relative to the project ({root})")
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise NotOwned(f"{key}: {rel!r} resolves to {path}, outside the project ({root}); "
                       "give a path inside it")
    return path


def owned(d: Path) -> bool:
    d = Path(d)
    if not d.is_dir() or d.is_symlink():
        return False
    return (d / MARKER).is_file() or any((d / f).is_file() for f in LEGACY) or not any(d.iterdir())


def remove(d: Path) -> None:
    """Delete `d` (absent is fine) only if the project made it; refuse otherwise."""
    d = Path(d)
    if not os.path.lexists(d):
        return
    if not owned(d):
        raise NotOwned(f"{d} exists and was not made by this project (no {MARKER}); nothing deleted: "
                       "move it away or choose another executor.logging_dir")
    shutil.rmtree(d)


def make(d: Path) -> Path:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).write_text("made by lucie-repro; the pipeline may delete this folder\n")
    return d
