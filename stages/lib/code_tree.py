"""The release's code identity: the git tree of the code at HEAD, without the pipeline's run records.

Why not the commit: `dvc repro` writes dvc.lock, metrics/ and plots/, and committing them makes a new
commit. A release that archives and names HEAD therefore changes with every lock commit, so a committed
dvc.lock could never describe the release of its own commit. The code *tree* does not have that problem:

  code tree = every file of HEAD's tree except RUN_RECORDS (dvc.lock, verification.json, metrics/,
              plots/: what `dvc repro` and `lucie verify` write and the user commits afterwards), DVC's
              own repository config (.dvc/) and `.gitignore` files (DVC appends its outputs to them).

Its id is the id `git write-tree` gives an index holding exactly those files (computed here from
`git ls-tree -r`, without writing to the object store; tests compare with git's own plumbing). A
lock-only commit leaves it unchanged; any change to code, params, docs or tests changes it. The archive
is a tar built from the same entries with fixed metadata (mtime = 0, uid/gid 0, mode from git) and
gzipped with mtime 0, so equal trees give equal bytes on every clone, whatever the commit, date or git
version. The release stage's DVC deps list the same top-level paths (test_code_tree checks), so DVC
re-runs the release whenever the archived code changes.

The commit itself is recorded outside the hashed outputs (MLflow tag, the stage's summary line). The
only history-derived value inside them is `date`: the committer date of the last commit that changed
the code tree, which a lock-only commit does not change either (a shallow clone cannot tell it: error).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

# Written by runs (dvc repro, lucie verify) and committed after them: never part of the code identity.
RUN_RECORDS = ("dvc.lock", "verification.json", "metrics", "plots")
NOT_CODE = (*RUN_RECORDS, ".dvc")
# The same exclusions as a git pathspec (for `git status` and `git log`).
PATHSPEC = (".", *(f":(exclude){p}" for p in NOT_CODE), ":(exclude,glob)**/.gitignore")


class CodeTreeError(RuntimeError):
    """Not a git checkout with a commit, a shallow clone, or a submodule in the code."""


@dataclass(frozen=True)
class Entry:
    mode: str  # git's: 100644, 100755, 120000
    sha: str   # blob id
    path: str


def is_code(path: str) -> bool:
    return path.split("/", 1)[0] not in NOT_CODE and path.rsplit("/", 1)[-1] != ".gitignore"


def git(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    res = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True)
    if res.returncode:
        raise CodeTreeError(f"`git {' '.join(args)}` failed in {root} ({res.stderr.decode().strip()}); "
                            "the release needs a git checkout with a commit")
    return res.stdout


def entries(root: Path, rev: str = "HEAD") -> list[Entry]:
    """The code files of `rev`, in git's path order."""
    out = []
    for rec in git(root, "ls-tree", "-r", "-z", "--full-tree", rev).split(b"\0"):
        if not rec:
            continue
        meta, path = rec.decode().split("\t", 1)
        mode, kind, sha = meta.split()
        if not is_code(path):
            continue
        if kind != "blob":
            raise CodeTreeError(f"{path}: a git {kind} (submodule) in the code; vendor it, the archive cannot hold it")
        out.append(Entry(mode, sha, path))
    return out


def tree_id(items: list[Entry]) -> str:
    """The id of the git tree holding exactly these blobs (what `git write-tree` prints for that index)."""
    root: dict = {}
    for e in items:
        *dirs, name = e.path.split("/")
        node = root
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = e

    def write(node: dict) -> bytes:
        rows = []
        for name, child in node.items():
            if isinstance(child, dict):
                rows.append((name + "/", b"40000 " + name.encode() + b"\0" + write(child)))
            else:
                rows.append((name, child.mode.encode() + b" " + name.encode() + b"\0" + bytes.fromhex(child.sha)))
        body = b"".join(r for _, r in sorted(rows, key=lambda r: r[0].encode()))  # git: trees sort as "name/"
        return hashlib.sha1(b"tree %d\0" % len(body) + body).digest()

    return write(root).hex()


def blobs(root: Path, items: list[Entry]) -> dict[str, bytes]:
    """sha -> content, read with one `git cat-file --batch`."""
    shas = sorted({e.sha for e in items})
    raw = git(root, "cat-file", "--batch", stdin="".join(f"{s}\n" for s in shas).encode())
    out, pos = {}, 0
    for sha in shas:
        nl = raw.index(b"\n", pos)
        size = int(raw[pos:nl].split()[2])
        out[sha] = raw[nl + 1:nl + 1 + size]
        pos = nl + 1 + size + 1
    return out


def archive(root: Path, items: list[Entry], prefix: str) -> bytes:
    """A .tar.gz of the entries under `prefix/`, the same bytes for the same tree anywhere."""
    content = blobs(root, items)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in items:
            info = tarfile.TarInfo(f"{prefix}/{e.path}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            data = content[e.sha]
            if e.mode == "120000":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, data.decode(), 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o755 if e.mode == "100755" else 0o644
                tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(buf.getvalue())
    return out.getvalue()


def dirty(root: Path, items: list | None = None) -> list[str]:
    """Code paths whose working copy differs from HEAD: tracked files modified, staged or deleted, and
    untracked (not ignored) files inside a top-level directory of the code tree (stages/new.py). An untracked
    new top-level entry is not code the release depends on: e.g. `.release.tmp-*`, the stage's own temp
    directory (stages/core/files.atomic_dir), exists while this runs."""
    out = git(root, "status", "--porcelain", "-z", "--untracked-files=all", "--", *PATHSPEC).decode()
    code_dirs = {e.path.split("/", 1)[0] for e in (entries(root) if items is None else items) if "/" in e.path}
    paths = set()
    for rec in out.split("\0"):
        if len(rec) > 3 and rec[2] == " ":
            path = rec[3:]
            if not rec.startswith("??") or path.split("/", 1)[0] in code_dirs:
                paths.add(path)
    return sorted(paths)


def last_change(root: Path) -> tuple[str, str]:
    """(commit, YYYY-MM-DD committer date) of the last commit that changed the code tree."""
    if git(root, "rev-parse", "--is-shallow-repository").strip() == b"true":
        raise CodeTreeError(f"{root} is a shallow clone: the release date is the last commit that changed the code, "
                            "which a shallow history cannot tell; run `git fetch --unshallow`")
    commit, date = git(root, "log", "-1", "--format=%H %cs", "HEAD", "--", *PATHSPEC).decode().split()
    return commit, date


@dataclass(frozen=True)
class CodeTree:
    tree: str        # the code identity (hashed outputs carry this)
    date: str        # committer date of the last commit that changed the code
    files: int
    dirty: list[str]
    head: str        # HEAD's commit: recorded outside the hashed outputs only
    changed_in: str  # the last commit that changed the code tree


def describe(root: Path) -> CodeTree:
    items = entries(root)
    changed_in, date = last_change(root)
    head = git(root, "rev-parse", "HEAD").decode().strip()
    return CodeTree(tree_id(items), date, len(items), dirty(root, items), head, changed_in)


def write_archive(root: Path, out_dir: Path, name: str) -> tuple[CodeTree, str]:
    """Write `<name>-<tree12>.tar.gz` into out_dir; returns the description and the file name."""
    info = describe(root)
    fname = f"{name}-{info.tree[:12]}.tar.gz"
    (out_dir / fname).write_bytes(archive(root, entries(root), f"{name}-{info.tree[:12]}"))
    return info, fname
