"""What is this path? Pick the evidence collector for `lucie audit PATH`.

Detection order (docs/AUDIT.md): a directory with MANIFEST.json is our release tree; a .yml/.yaml
file is a Model Openness Tool record; a directory with README.md or config.json (or a Hub cache
folder whose refs/main names a snapshot) is a Hugging Face model snapshot. Anything else is an
error that names what was looked for, so a wrong path never yields an (empty, all-red) card.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import hf_snapshot, mot_record, safe_read
from .evidence import Evidence, collect_release

KINDS = ("release", "hf-snapshot", "mof-record")


class InputError(ValueError):
    """A path none of the collectors can read."""


@dataclass
class Collected:
    kind: str
    evidence: Evidence
    mot_record: dict | None = None  # the MOT record as read, for a MOF input (its class is computed on it)


def detect(path: Path) -> str:
    path = Path(path)
    if not path.exists() and not path.is_symlink():  # a symlink loop is refused below, not "missing"
        raise InputError(f"{path}: no such file or directory")
    if not path.is_dir():
        safe_read.check(path)  # a FIFO, a device or a symlink loop is refused (UnsafeInput), never opened
        if path.suffix.lower() in (".yml", ".yaml"):
            return "mof-record"
        raise InputError(f"{path}: a file, but not a MOF record (.yml/.yaml); `lucie audit` reads a release "
                         "directory, a Hugging Face model snapshot directory or a MOF YAML record")
    if safe_read.is_file(path / "MANIFEST.json"):
        return "release"
    root = hf_snapshot.resolve_root(path)
    if safe_read.is_file(root / "README.md") or safe_read.is_file(root / "config.json"):
        return "hf-snapshot"
    raise InputError(f"{path}: not a release directory (no MANIFEST.json), not a Hugging Face model snapshot "
                     "(no README.md or config.json) and not a MOF record (.yml/.yaml file)")


def collect(path: Path, label: str | None = None) -> Collected:
    """Evidence from PATH, whatever it is; `label` names it in the record (default: the path as given).
    Every read is confined to PATH's directory (model_card.safe_read): a hostile input raises
    safe_read.UnsafeInput, with its own exit code, and is never a parse error."""
    with safe_read.confined(safe_read.audit_root(path)):
        return _collect(path, label)


def _collect(path: Path, label: str | None) -> Collected:
    kind = detect(path)
    try:
        if kind == "release":
            return Collected(kind, collect_release(Path(path), label))
        if kind == "hf-snapshot":
            return Collected(kind, hf_snapshot.collect(Path(path), label))
        ev, record = mot_record.collect(Path(path), label)
        return Collected(kind, ev, record)
    except (ValueError, OSError) as err:  # bad YAML/JSON in the input, unreadable file...
        msg = str(err)
        raise InputError(msg if str(path) in msg else f"{path} ({kind}): {msg}") from None
