"""A local stand-in for the Hugging Face Hub HTTP API, so the real `HfApi` can publish over real HTTP offline.

No installable server accepts Hub uploads (tooling.md §7), so this stdlib `ThreadingHTTPServer` implements
the routes huggingface_hub 2.4.0 calls on the LFS path (`HF_HUB_DISABLE_XET=1`): repo creation, YAML
validation, preupload, the LFS batch API and PUT, the NDJSON commit, tree listing, refs, commits, branches,
tags, repo info and `resolve` downloads. It keeps git-like state: commits (id, parent, full file map) per repo,
branches and tags pointing at commit ids, LFS objects by sha256. It is honest where the client cannot check:
PUT bodies must hash to their oid, `lfsFile` entries must name an uploaded object, `parentCommit` must be
the branch head, writes and private reads need the token. `corrupt` makes GET serve wrong bytes for a path
(same size, same metadata), as a mirror serving the wrong weights would. What it does not model: Xet,
Hub-side YAML validation, token scopes, rate limits, pagination.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# The Hub's default .gitattributes for a new repo (subset): these paths are stored in LFS whatever their size.
LFS_PATTERNS = ("*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.model",
                "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth",
                "*.rar", "*.safetensors", "*.tar", "*.tar.*", "*.tflite", "*.tgz", "*.xz", "*.zip", "*.zst")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files always go to LFS
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
API = r"/api/(?P<kind>models|datasets)/" + REPO


def blob_id(data: bytes) -> str:
    """git's object id of a blob, which the Hub reports as `oid` of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Entry:
    data: bytes | None = None  # regular file content
    lfs: str | None = None  # sha256 of an LFS object
    size: int = 0

    def oid(self) -> str:
        return blob_id(pointer(self.lfs, self.size) if self.lfs else self.data)


@dataclass
class Repo:
    private: bool
    commits: dict = field(default_factory=dict)  # id -> {"parent", "files": {path: Entry}, "title", "date"}
    branches: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        return self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)


class HubDouble:
    def __init__(self, token: str):
        self.token, self.repos, self.lfs, self.corrupt = token, {}, {}, set()
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, authorized)
        self.lock = threading.Lock()
        self._n = 0
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                double.dispatch(self, self.command)

            do_HEAD = do_POST = do_PUT = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ state helpers
    def commit(self, repo: Repo, branch: str, files: dict, title: str) -> str:
        self._n += 1
        parent = repo.branches.get(branch)
        digest = json.dumps([parent, sorted((p, e.oid()) for p, e in files.items()), title, self._n])
        cid = hashlib.sha1(digest.encode()).hexdigest()
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        repo.commits[cid] = {"parent": parent, "files": files, "title": title, "date": date}
        repo.branches[branch] = cid
        return cid

    def history(self, kind: str, repo_id: str, rev: str = "main") -> list[str]:
        """Commit ids reachable from `rev`, newest first (what tests count)."""
        repo = self.repos[(kind, repo_id)]
        out, cid = [], repo.resolve(rev)
        while cid:
            out.append(cid)
            cid = repo.commits[cid]["parent"]
        return out

    def files(self, kind: str, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        repo = self.repos[(kind, repo_id)]
        return {p: e.data if e.lfs is None else self.lfs[e.lfs] for p, e in repo.commits[repo.resolve(rev)]["files"].items()}

    # ------------------------------------------------------------------ HTTP
    def dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        path, query = unquote(url.path), parse_qs(url.query)
        auth = h.headers.get("Authorization")
        authorized = auth == f"Bearer {self.token}"
        with self.lock:
            self.requests.append((method, path, authorized))
        if auth is not None and not authorized:
            return self.reply(h, 401, {"error": "Invalid credentials"}, {"X-Error-Message": "Invalid credentials in Authorization header"})
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else self.read_chunked(h) if h.headers.get("Transfer-Encoding") == "chunked" else b""
        for verb, pattern, fn in self.routes():
            m = re.fullmatch(pattern, path)
            if m and (verb == method or (verb == "GET" and method == "HEAD")):
                args = m.groupdict()
                kind = args.pop("kind", None) or ("datasets" if args.pop("ds", None) else "models")
                try:
                    with self.lock:
                        status, payload, headers = fn(kind=kind, body=body, query=query, authorized=authorized, method=method, **args)
                except Exception as exc:  # a bug in the double must show up as an error, not a dropped connection
                    status, payload, headers = 500, {"error": f"hub double: {type(exc).__name__}: {exc}"}, None
                return self.reply(h, status, payload, headers)
        self.reply(h, 404, {"error": f"no route {method} {path}"})

    @staticmethod
    def read_chunked(h) -> bytes:
        out = b""
        while (size := int(h.rfile.readline().strip(), 16)) > 0:
            out += h.rfile.read(size)
            h.rfile.readline()
        h.rfile.readline()
        return out

    @staticmethod
    def reply(h, status: int, payload, headers: dict | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def routes(self):
        ds = r"/(?P<ds>datasets/)?" + REPO
        return [("POST", r"/api/repos/create", self.create_repo),
                ("POST", r"/api/validate-yaml", lambda **_: (200, {"errors": [], "warnings": []}, None)),
                ("POST", API + r"/preupload/(?P<rev>[^/]+)", self.preupload),
                ("POST", ds + r"\.git/info/lfs/objects/batch", self.lfs_batch),
                ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self.lfs_put),
                ("POST", API + r"/commit/(?P<rev>[^/]+)", self.commit_route),
                ("GET", API + r"/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self.tree),
                ("GET", API + r"(?:/revision/(?P<rev>[^/]+))?", self.info),
                ("GET", API + r"/refs", self.refs),
                ("GET", API + r"/commits/(?P<rev>[^/]+)", self.commits),
                ("POST", API + r"/branch/(?P<branch>[^/]+)", self.branch),
                ("POST", API + r"/tag/(?P<rev>[^/]+)", self.tag),
                ("GET", ds + r"/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve)]

    def get(self, kind, repo, authorized, write=False):
        """(Repo, None) or (None, error reply). Missing and private-without-token look alike, as on the Hub."""
        r = self.repos.get((kind, repo))
        if (write and not authorized) or r is None or (r.private and not authorized):
            return None, (401 if write and not authorized else 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return r, None

    def at(self, r: Repo, rev: str):
        cid = r.resolve(rev)
        if cid is None:
            return None, (404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        return cid, None

    # ------------------------------------------------------------------ routes
    def create_repo(self, body, authorized, **_):
        if not authorized:
            return 401, {"error": "Invalid username or password."}, None
        p = json.loads(body)
        kind = (p.get("type") or "model") + "s"
        repo_id = f"{p['organization']}/{p['name']}"
        prefix = "" if kind == "models" else "datasets/"
        if (kind, repo_id) in self.repos:
            return 409, {"error": "You already created this repo", "url": f"{self.url}/{prefix}{repo_id}"}, None
        r = self.repos[(kind, repo_id)] = Repo(private=p.get("visibility") == "private" or bool(p.get("private")))
        self.commit(r, "main", {".gitattributes": Entry(data=GITATTRIBUTES, size=len(GITATTRIBUTES))}, "initial commit")
        return 200, {"url": f"{self.url}/{prefix}{repo_id}", "name": repo_id}, None

    def preupload(self, kind, repo, rev, body, authorized, **_):
        r, err = self.get(kind, repo, authorized, write=True)
        if err:
            return err
        cid, err = self.at(r, rev)
        if err:
            return err
        current = r.commits[cid]["files"]
        out = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f["sample"])
            name = f["path"].rsplit("/", 1)[-1]
            lfs = f["size"] >= LFS_MIN_SIZE or b"\0" in sample or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)
            old = current.get(f["path"])
            oid = None if old is None else (old.lfs or blob_id(old.data))  # what the client compares to skip no-ops
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return 200, {"files": out, "commitOid": cid}, None

    def lfs_batch(self, kind, repo, body, authorized, **_):
        r, err = self.get(kind, repo, authorized, write=True)
        if err:
            return err
        objects = []
        for o in json.loads(body)["objects"]:
            item = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.lfs:  # already stored: no action, the client skips the upload
                item["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"}}
            objects.append(item)
        return 200, {"transfer": "basic", "objects": objects}, None

    def lfs_put(self, oid, body, **_):
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "sha256 of the uploaded body does not match the oid"}, None
        self.lfs[oid] = body
        return 200, {}, None

    def commit_route(self, kind, repo, rev, body, authorized, **_):
        r, err = self.get(kind, repo, authorized, write=True)
        if err:
            return err
        if rev not in r.branches:
            return 400, {"error": f"can only commit to a branch, not {rev}"}, {"X-Error-Code": "RevisionNotFound"}
        files = dict(r.commits[r.branches[rev]]["files"])
        header = None
        for line in body.splitlines():
            item = json.loads(line)
            key, v = item["key"], item["value"]
            if key == "header":
                header = v
                if v.get("parentCommit") and v["parentCommit"] != r.branches[rev]:
                    return 412, {"error": "A commit has happened since. Please refresh and try again."}, None
            elif key == "file":
                data = base64.b64decode(v["content"])
                files[v["path"]] = Entry(data=data, size=len(data))
            elif key == "lfsFile":
                if self.lfs.get(v["oid"]) is None or len(self.lfs[v["oid"]]) != v["size"]:
                    return 422, {"error": f"LFS object {v['oid']} for {v['path']} was not uploaded"}, None
                files[v["path"]] = Entry(lfs=v["oid"], size=v["size"])
            elif key == "deletedFile":
                files.pop(v["path"], None)
            elif key == "deletedFolder":
                files = {p: e for p, e in files.items() if not p.startswith(v["path"].rstrip("/") + "/")}
            else:
                return 400, {"error": f"unknown commit operation {key}"}, None
        if header is None:
            return 400, {"error": "missing header"}, None
        cid = self.commit(r, rev, files, header["summary"])
        prefix = "" if kind == "models" else "datasets/"
        return 200, {"commitUrl": f"{self.url}/{prefix}{repo}/commit/{cid}", "commitOid": cid, "pullRequestUrl": None}, None

    def tree(self, kind, repo, rev, query, authorized, sub=None, **_):
        r, err = self.get(kind, repo, authorized)
        if err:
            return err
        cid, err = self.at(r, rev)
        if err:
            return err
        base = (sub or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        out, dirs = [], set()
        for p, e in sorted(r.commits[cid]["files"].items()):
            if base and not p.startswith(base + "/"):
                continue
            rest = p[len(base) + 1:] if base else p
            parts = rest.split("/")
            for i in range(1, len(parts)):  # the folders on the way
                d = "/".join(filter(None, [base, *parts[:i]]))
                if d not in dirs and (recursive or i == 1):
                    dirs.add(d)
                    out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
            if recursive or len(parts) == 1:
                item = {"type": "file", "oid": e.oid(), "size": e.size, "path": p}
                if e.lfs:
                    item["lfs"] = {"oid": e.lfs, "size": e.size, "pointerSize": len(pointer(e.lfs, e.size))}
                out.append(item)
        return 200, out, None

    def info(self, kind, repo, rev, authorized, **_):
        rev = rev or "main"
        r, err = self.get(kind, repo, authorized)
        if err:
            return err
        cid, err = self.at(r, rev)
        if err:
            return err
        c = r.commits[cid]
        return 200, {"id": repo, "sha": cid, "private": r.private, "lastModified": c["date"],
                     "siblings": [{"rfilename": p} for p in sorted(c["files"])]}, None

    def refs(self, kind, repo, authorized, **_):
        r, err = self.get(kind, repo, authorized)
        if err:
            return err

        def refs(d, prefix):
            return [{"name": n, "ref": f"refs/{prefix}/{n}", "targetCommit": c} for n, c in sorted(d.items())]
        return 200, {"branches": refs(r.branches, "heads"), "tags": refs(r.tags, "tags"), "converts": [], "pullRequests": []}, None

    def commits(self, kind, repo, rev, authorized, **_):
        r, err = self.get(kind, repo, authorized)
        if err:
            return err
        if r.resolve(rev) is None:
            return self.at(r, rev)[1]
        return 200, [{"id": c, "title": r.commits[c]["title"], "message": "", "authors": [{"user": "me"}],
                      "date": r.commits[c]["date"]} for c in self.history(kind, repo, rev)], None

    def branch(self, kind, repo, branch, body, authorized, **_):
        r, err = self.get(kind, repo, authorized, write=True)
        if err:
            return err
        if branch in r.branches:
            return 409, {"error": f"Reference refs/heads/{branch} already exists"}, None
        cid, err = self.at(r, (json.loads(body or b"{}")).get("startingPoint") or "main")
        if err:
            return err
        r.branches[branch] = cid
        return 200, {}, None

    def tag(self, kind, repo, rev, body, authorized, **_):
        r, err = self.get(kind, repo, authorized, write=True)
        if err:
            return err
        name = json.loads(body)["tag"]
        if name in r.tags:
            return 409, {"error": f"Tag {name} already exists"}, None
        cid, err = self.at(r, rev)
        if err:
            return err
        r.tags[name] = cid
        return 200, {}, None

    def resolve(self, kind, repo, rev, file, authorized, method, **_):
        r, err = self.get(kind, repo, authorized)
        if err:
            return err
        cid, err = self.at(r, rev)
        if err:
            return err
        e = r.commits[cid]["files"].get(file)
        if e is None:
            return 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": cid}
        data = self.lfs[e.lfs] if e.lfs else e.data
        headers = {"X-Repo-Commit": cid, "ETag": f'"{e.lfs or e.oid()}"', "Content-Type": "application/octet-stream"}
        if e.lfs:
            headers.update({"X-Linked-Etag": f'"{e.lfs}"', "X-Linked-Size": str(e.size)})
        if method == "GET" and (repo, file) in self.corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]  # same size and metadata, wrong bytes
        return 200, data, headers
