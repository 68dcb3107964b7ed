"""The Hugging Face Hub client of `publish`: what the Hub holds (refs, file listings with LFS sha256 and git blob
ids), whether a local file is already there, which files go to LFS, the token (never shown), and the client's
errors. Everything here talks to the Hub only through huggingface_hub's HfApi, so a local Hub double over real
HTTP (tests/hub_double.py) and olah exercise the same code as the real Hub.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

# How the Hub decides LFS (used only to predict it in the plan; the Hub's preupload answer is what counts):
# its default .gitattributes patterns, files of 10 MiB or more, and binary content.
LFS_PATTERNS = ("*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.model",
                "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
                "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tar.*", "*.tflite", "*.tgz", "*.wasm", "*.xz",
                "*.zip", "*.zst", "*tfevents*")
LFS_MIN_SIZE = 10 * 1024 * 1024


def git_blob_id(path: Path) -> str:
    """The id git (and the Hub's tree listing) gives a regular file's content."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def predicted_lfs(path_in_repo: str, src: Path) -> bool:
    name = path_in_repo.rsplit("/", 1)[-1]
    if src.stat().st_size >= LFS_MIN_SIZE or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS):
        return True
    with open(src, "rb") as f:
        return b"\0" in f.read(512)


def resolve_token() -> tuple[str | None, str]:
    """The token and where it came from; the token itself is never printed, logged or written."""
    from huggingface_hub import get_token

    token = get_token()
    if token is None:
        return None, "none (set HF_TOKEN or run `hf auth login`)"
    env = any(os.environ.get(k) for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"))
    return token, "HF_TOKEN environment variable" if env else "huggingface_hub login"


def redact(text: str, token: str | None) -> str:
    """Belt and braces for every message shown or logged: no error text may carry the token."""
    return text.replace(token, "<token>") if token else text


def safe_endpoint(endpoint: str) -> str:
    u = urlsplit(endpoint)
    return f"{u.scheme}://{u.hostname}" + (f":{u.port}" if u.port else "") + u.path


def offline() -> bool:
    """What huggingface_hub itself will do: HF_HUB_OFFLINE is read once, when it is imported."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


def remote_refs(api, rtype: str, repo_id: str) -> dict | None:
    """{"branches": {name: commit}, "tags": {...}}, or None when the repo does not exist (or is not visible)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        refs = api.list_repo_refs(repo_id, repo_type=rtype)
    except RepositoryNotFoundError:
        return None
    return {"branches": {b.name: b.target_commit for b in refs.branches}, "tags": {t.name: t.target_commit for t in refs.tags}}


def remote_files(api, rtype: str, repo_id: str, commit: str) -> dict:
    from huggingface_hub.hf_api import RepoFile

    return {f.path: f for f in api.list_repo_tree(repo_id, repo_type=rtype, revision=commit, recursive=True)
            if isinstance(f, RepoFile)}


def unchanged(src: Path, sha256: str, remote) -> bool:
    """LFS entries carry the content's sha256; regular ones the git blob id (cheap size check first)."""
    if remote.lfs is not None:
        return remote.lfs.sha256 == sha256
    return remote.size == src.stat().st_size and remote.blob_id == git_blob_id(src)


def hub_errors() -> tuple[type[BaseException], ...]:
    """What the client raises for a remote problem (HTTP status, connection, bad metadata, failed upload);
    anything else is a bug here and keeps its traceback."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    return HfHubHTTPError, httpx2.HTTPError, OSError, ValueError, RuntimeError


def hub_api(endpoint: str | None, token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)
