"""Reading untrusted audit input: bounded, regular files only, never outside the audited directory.

Auditors run `lucie audit` on repositories they do not trust. Every byte the audit reads goes
through here, so hostile input cannot exhaust, hang or lead it outside its input:

- size: a file parsed as text (README, config.json, MANIFEST.json, a MOF record, a LICENSE...) is at
  most MAX_TEXT_BYTES; a file that is only hashed is read up to the size `fstat` gave when it was
  opened (a file that grows while hashed is refused);
- regular files only: a FIFO, device or socket is refused after `lstat`, never opened for reading
  (a FIFO README would block `open` forever, `/dev/zero` never ends); the opened descriptor is
  checked again with `fstat` (O_NONBLOCK, so a swap to a FIFO between the two cannot block either);
- symlinks: one that resolves outside the audited directory (`confined(root)`) is refused, so
  `model.safetensors -> /etc/passwd` is neither hashed nor counted; a symlink loop is refused;
- YAML: `SafeYamlLoader` (a `yaml.SafeLoader`) refuses anchors and aliases (a 1 KB alias bomb
  expands to gigabytes) and nesting deeper than MAX_DEPTH; JSON nesting has the same bound.

Each refusal is an `UnsafeInput` carrying its own exit code (docs/AUDIT.md "Exit codes"), distinct
from 1 (a requirement failed) and 2 (bad usage / an input that does not parse).
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import yaml

MAX_TEXT_BYTES = 8 << 20  # 8 MiB: the largest Hub model cards are a few hundred KB
MAX_DEPTH = 64  # YAML/JSON nesting; real cards and MOF records stay under 10
MAX_ARCHIVE_BYTES = 256 << 20  # the release's source archive, which doc_facts opens (not only hashes)

_root: contextvars.ContextVar[Path | None] = contextvars.ContextVar("audit_root", default=None)


class UnsafeInput(Exception):
    """A refused input; not a ValueError, so no collector mistakes it for a parse error (exit 2)."""

    exit_code = 3

    def __init__(self, path, why: str):
        super().__init__(f"{path}: {why}")


class TooLarge(UnsafeInput):
    exit_code = 3


class NotRegular(UnsafeInput):
    exit_code = 4


class OutsideInput(UnsafeInput):
    exit_code = 5


class YamlAlias(UnsafeInput):
    exit_code = 6


class TooDeep(UnsafeInput):
    exit_code = 7


@contextlib.contextmanager
def confined(root: Path):
    """Within this block, no read may leave `root` (resolved) through a symlink."""
    token = _root.set(Path(os.path.realpath(root)))
    try:
        yield
    finally:
        _root.reset(token)


def audit_root(path: Path) -> Path:
    """The directory an audit of PATH is confined to: PATH itself, or for a file its folder; for a
    snapshot inside a Hub cache (`models--org--name/snapshots/REV`), the cache folder, whose `blobs/`
    the snapshot's symlinks point into. A file or directory named by the user is taken where it resolves."""
    path = Path(os.path.realpath(path))
    if not path.is_dir():
        return path.parent
    if path.parent.name == "snapshots" and (path.parent.parent / "blobs").is_dir():
        return path.parent.parent
    return path


def _kind(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a directory" if stat.S_ISDIR(mode) else "not a regular file")


def check(path) -> Path:
    """The real path of PATH once it is known to be a regular file inside the audited directory;
    raises UnsafeInput otherwise. Opens nothing."""
    path = Path(path)
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as err:  # ELOOP, or a dangling link
        why = "a symlink loop" if err.errno == errno.ELOOP else f"cannot be resolved ({err.strerror})"
        raise NotRegular(path, f"{why}; the audit reads regular files only") from None
    root = _root.get()
    if root is not None and real != root and root not in real.parents:
        raise OutsideInput(path, f"resolves to {real}, outside the audited directory {root}; "
                                 "the audit reads nothing outside its input")
    mode = os.stat(real).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegular(path, f"{_kind(mode)}, not a regular file; the audit reads regular files only "
                               "(remove it or replace it with the real file)")
    return real


def is_file(path) -> bool:
    """Like Path.is_file, but a special file or a link outside the input is refused, not skipped:
    False only when nothing is there (or a dangling link)."""
    path = Path(path)
    if not os.path.lexists(path) or (path.is_symlink() and not path.exists() and not _is_loop(path)):
        return False
    if path.is_dir():
        return False
    check(path)
    return True


def _is_loop(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def _open(path) -> tuple[int, int]:
    """(fd, size) of a checked regular file, opened without blocking or following a late symlink."""
    real = check(path)
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped between check and open
        os.close(fd)
        raise NotRegular(path, f"{_kind(st.st_mode)}, not a regular file; the audit reads regular files only")
    return fd, st.st_size


def read_bytes(path, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The whole file, refused when it is larger than `limit` (checked on the size and on the bytes read)."""
    fd, size = _open(path)
    with os.fdopen(fd, "rb") as fh:
        if size > limit:
            raise TooLarge(path, f"{size} bytes, over the audit's limit of {limit} bytes for a file it parses")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(path, f"over the audit's limit of {limit} bytes for a file it parses")
    return data


def read_head(path, n: int) -> bytes:
    """The first `n` bytes at most (a LICENSE header, an LFS pointer, an SPDX line)."""
    fd, _ = _open(path)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(n)


def read_text(path, limit: int = MAX_TEXT_BYTES, encoding: str = "utf-8", errors: str = "strict") -> str:
    return read_bytes(path, limit).decode(encoding, errors)


def size(path) -> int:
    """The size of a checked regular file."""
    return os.stat(check(path)).st_size


def sha256(path) -> str:
    """sha256 of a regular file, reading exactly the size it had when opened (a growing file is refused)."""
    fd, size_ = _open(path)
    h = hashlib.sha256()
    left = size_
    with os.fdopen(fd, "rb") as fh:
        while left > 0 and (b := fh.read(min(1 << 20, left))):
            h.update(b)
            left -= len(b)
        if left == 0 and fh.read(1):
            raise TooLarge(path, f"grew past its size of {size_} bytes while it was hashed")
    return h.hexdigest()


def _depth(value) -> int:
    """Nesting depth of parsed JSON, iteratively (no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def load_json(path, limit: int = MAX_TEXT_BYTES):
    """Parsed JSON from a bounded regular file; ValueError when it does not parse, TooDeep past MAX_DEPTH."""
    text = read_text(path, limit)
    try:
        data = json.loads(text)
    except RecursionError:
        raise TooDeep(path, f"nested deeper than {MAX_DEPTH} levels; refused") from None
    if _depth(data) > MAX_DEPTH:
        raise TooDeep(path, f"nested deeper than {MAX_DEPTH} levels; refused")
    return data


class SafeYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases and nesting deeper than MAX_DEPTH, while composing
    (before anything is expanded). `name` (set by `yaml_load`) is the file the error names."""

    name = "YAML"

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            what = "an alias (*)" if isinstance(event, yaml.AliasEvent) else "an anchor (&)"
            raise YamlAlias(self.name, f"{what} at line {event.start_mark.line + 1} of the YAML; the audit refuses "
                                       "YAML anchors and aliases (their expansion is unbounded)")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise TooDeep(self.name, f"YAML nested deeper than {MAX_DEPTH} levels at line "
                                     f"{event.start_mark.line + 1}; refused")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def yaml_load(text: str, loader: type[yaml.SafeLoader] = SafeYamlLoader, name: str = "YAML"):
    """yaml.load with a loader that has SafeYamlLoader's guards (pass a subclass of it)."""
    ldr = loader(text)
    ldr.name = name
    try:
        return ldr.get_single_data()
    finally:
        ldr.dispose()


def open_binary(path):
    """A checked regular file opened for binary reading (use as a context manager)."""
    fd, _ = _open(path)
    return os.fdopen(fd, "rb")
