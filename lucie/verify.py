"""`lucie verify`: re-run stages from scratch in a clean copy of HEAD and compare with dvc.lock.

Why: "the code is available" is a weak claim; "the committed outputs were rebuilt byte-for-byte
on <date> with <environment>" is evidence. The committed dvc.lock records DVC's md5 of every
stage output, so reproduction can be checked without trusting anything in the working tree:

- the copy is a `git clone` of the repository checked out at HEAD (committed files only: a
  working tree under edit cannot leak in), so the release stage archives the committed code tree;
- inputs that are not in git (the language-ID model `make setup` downloads) are copied from
  the working tree and named; the stage's recorded dep md5 shows whether they match;
- every stage runs with `dvc repro --single-item --force --no-run-cache` in dependency order,
  in a fresh DVC cache, with MLflow writing to a sqlite file inside the scratch directory;
- each out's md5 is compared with the committed dvc.lock; for a directory out, the two `.dir`
  listings (DVC's per-file md5s, from the caches) name the first differing file.

The result is a JSON file (schema in docs/VERIFY.md); `load_result` and `summary` read it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from stages.core.dag import UnknownStage, plan
from stages.core.files import sha256_file

SCHEMA = "lucie-verify/1"
# Outputs that depend on where and when they were built, so a byte comparison would say nothing: none
# today. release/ and published/ used to name the git commit, which a lock-only commit moves; they now
# name the code tree (stages/lib/code_tree.py), which it does not, so they are compared like every stage.
NOT_COMPARED: dict[str, str] = {}
PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "trl", "datatrove", "dvc", "mlflow")
BIN = Path(sys.executable).parent


class VerifyError(ValueError):
    """The verification could not start (not a repo, unknown stage, missing input): exit 2."""


# --- the hermetic environment (shared with tests/repo_copy.py) ---------------------------------

def offline_env(tmp: Path, mlflow_uri: str | None, **extra) -> dict:
    """This venv first on PATH, no network, no telemetry, caches under `tmp`. With mlflow_uri=None
    MLFLOW_TRACKING_URI is removed (the copy's params.yaml decides), else it is set to mlflow_uri."""
    e = {**os.environ}
    e.update({
        "PATH": f"{BIN}:{e.get('PATH', '')}", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "HF_HOME": str(tmp / "hf_home"),
        "PREFECT_HOME": str(tmp / "prefect_home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false",
        "LUCIE_PYTHON": sys.executable,  # bin/lucie-python: the copy has no .venv of its own
    })
    for k in ("MLFLOW_TRACKING_URI", "LUCIE_PARAMS", "LUCIE_PARENT_RUN_ID", "LUCIE_PIPELINE_RUN"):
        e.pop(k, None)
    if mlflow_uri:
        e["MLFLOW_TRACKING_URI"] = mlflow_uri
    e.update(extra)
    return e


def copy_inputs(src_root: Path, dest: Path, paths: list[str]) -> list[dict]:
    """Copy inputs that git does not hold from src_root's working tree; fail naming any that is absent."""
    absent = [p for p in paths if not (src_root / p).exists()]
    if absent:
        hint = " (`make setup` downloads it)" if any(p.startswith("assets/lid/") for p in absent) else ""
        raise VerifyError(f"missing input(s) not in git and not in {src_root}: {', '.join(absent)}{hint}")
    copied = []
    for p in paths:
        (dest / p).parent.mkdir(parents=True, exist_ok=True)
        if (src_root / p).is_dir():
            shutil.copytree(src_root / p, dest / p)
        else:
            shutil.copy2(src_root / p, dest / p)
        copied.append({"path": p, "source": "working tree (not in git)",
                       "md5": _md5(dest / p) if (dest / p).is_file() else None})
    return copied


# --- comparing dvc.lock entries ----------------------------------------------------------------

def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_listing(cache_dir: Path | None) -> Callable[[str], list | None]:
    """oid ('<md5>.dir') -> DVC's per-file listing [{relpath, md5}, ...] from a cache, or None."""
    def read(oid: str) -> list | None:
        if cache_dir is None or not oid.endswith(".dir"):
            return None
        path = cache_dir / oid[:2] / oid[2:]
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    return read


def first_difference(expected: list, actual: list) -> dict | None:
    """The first file (in relpath order) whose md5 differs or that only one listing has."""
    e = {d["relpath"]: d["md5"] for d in expected}
    a = {d["relpath"]: d["md5"] for d in actual}
    diff = [p for p in sorted(e.keys() | a.keys()) if e.get(p) != a.get(p)]
    if not diff:
        return None
    return {"file": diff[0], "expected": e.get(diff[0]), "actual": a.get(diff[0]), "files_differing": len(diff)}


def changed_inputs(golden: dict, new: dict) -> list[str]:
    """Deps and params whose recorded value differs: the committed lock was not made from these inputs."""
    g = {d["path"]: d.get("md5") for d in golden.get("deps", [])}
    n = {d["path"]: d.get("md5") for d in new.get("deps", [])}
    out = [p for p in sorted(g.keys() | n.keys()) if g.get(p) != n.get(p)]
    for f in sorted(golden.get("params", {}).keys() | new.get("params", {}).keys()):
        gp, np_ = golden.get("params", {}).get(f, {}), new.get("params", {}).get(f, {})
        out += [f"{f}:{k}" for k in sorted(gp.keys() | np_.keys()) if gp.get(k) != np_.get(k)]
    return out


def compare_stage(name: str, golden: dict | None, new: dict, golden_dir: Callable, new_dir: Callable) -> dict:
    """One stage's verdict from its committed and its freshly written dvc.lock entries."""
    if name in NOT_COMPARED:
        return {"status": "not_compared", "reason": NOT_COMPARED[name]}
    if golden is None:
        return {"status": "no_golden", "reason": "the committed dvc.lock has no entry for this stage"}
    g = {o["path"]: o.get("md5") for o in golden.get("outs", [])}
    n = {o["path"]: o.get("md5") for o in new.get("outs", [])}
    outs = []
    for path in sorted(g.keys() | n.keys()):
        rec = {"path": path, "expected": g.get(path), "actual": n.get(path), "identical": g.get(path) == n.get(path)}
        if not rec["identical"] and path in g and path in n and str(g[path]).endswith(".dir"):
            el, al = golden_dir(g[path]), new_dir(n[path])
            if el is None or al is None:
                which = "committed" if el is None else "new"
                rec["note"] = f"the {which} .dir listing is not in the DVC cache (`dvc fetch` brings the committed one)"
            else:
                rec["first_difference"] = first_difference(el, al)
        outs.append(rec)
    result = {"status": "reproduced" if all(o["identical"] for o in outs) else "differs", "outs": outs}
    stale = changed_inputs(golden, new)
    if stale:
        result["inputs_changed"] = stale
    return result


# --- environment and the run -------------------------------------------------------------------

def environment(repo: Path) -> dict:
    import importlib.metadata as md

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    lock = repo / "requirements.lock"
    lock_info = None
    if lock.exists():
        mismatches = []
        for line in lock.read_text().splitlines():
            name, sep, want = line.strip().partition("==")
            if not sep or name.startswith(("#", "-")):
                continue
            try:
                have = md.version(name)
            except md.PackageNotFoundError:
                have = None
            if have != want:
                mismatches.append(f"{name}=={want} (installed: {have})")
        lock_info = {"sha256": sha256_file(lock), "installed_matches": not mismatches, "mismatches": mismatches[:20]}
    cpu_model = None
    try:
        cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
    except OSError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "system": platform.system().lower(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "cpu_model": cpu_model,
            "packages": versions, "requirements_lock": lock_info}


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise VerifyError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _cache_dir(repo: Path) -> Path | None:
    from dvc.repo import Repo

    try:
        with Repo(str(repo)) as r:
            return Path(r.cache.local.path)
    except Exception:  # noqa: BLE001 - no cache just means no per-file listing
        return None


def _lock(repo: Path) -> dict:
    import yaml

    path = repo / "dvc.lock"
    return yaml.safe_load(path.read_text()).get("stages", {}) if path.exists() else {}


def verify(root: Path, stages: list[str] | None = None, keep_scratch: bool = False,
           scratch_parent: Path | None = None, echo: Callable[..., None] | None = None) -> dict:
    """Run the verification and return the result record (see docs/VERIFY.md).

    `echo(text, nl=True)` receives the progress lines (default: stdout)."""
    echo = echo or _print
    if not Path(root).is_dir():
        raise VerifyError(f"{root} is not a directory")
    root = Path(_git(Path(root), "rev-parse", "--show-toplevel"))
    commit = _git(root, "rev-parse", "HEAD")
    dirty = [l for l in _git(root, "status", "--porcelain", "--untracked-files=no").splitlines() if l.strip()]
    scratch = Path(tempfile.mkdtemp(prefix="lucie-verify-", dir=scratch_parent))
    repo = scratch / "repo"
    try:
        # A clone, not a copy of the working tree: only what HEAD holds, at HEAD's real commit id.
        _git(scratch, "clone", "-q", "--no-checkout", str(root), str(repo))
        _git(repo, "checkout", "-q", "--detach", commit)
        golden = _lock(repo)
        lock_sha = sha256_file(repo / "dvc.lock") if (repo / "dvc.lock").exists() else None
        try:
            order, missing, everything = plan(repo, stages)
        except UnknownStage as err:
            raise VerifyError(str(err)) from None
        inputs = copy_inputs(root, repo, missing)
        note = f" ({len(dirty)} modified file(s) in the working tree are not part of it)" if dirty else ""
        echo(f"verifying commit {commit[:12]}{note} in {repo}")
        for i in inputs:
            echo(f"input {i['path']}: copied from the working tree (not in git)")
        date = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        env = offline_env(scratch, f"sqlite:///{scratch / 'mlflow.db'}", LUCIE_PIPELINE_RUN=f"verify-{date}")
        golden_dir = cache_listing(_cache_dir(root))
        new_dir = cache_listing(_cache_dir(repo))  # a fresh cache, unless a global DVC config sets cache.dir
        results: dict[str, dict] = {}
        failed = False
        width = 2 * len(str(len(order))) + 3  # "[n/N]" right-aligned, so the columns line up
        (scratch / "logs").mkdir()
        for n, name in enumerate(order, 1):
            if failed:
                results[name] = {"status": "not_run", "reason": "an upstream stage failed"}
                echo(f"{f'[{n}/{len(order)}]':>{width}} {name:<10} not run")
                continue
            echo(f"{f'[{n}/{len(order)}]':>{width}} {name:<10} ", nl=False)
            t0 = time.monotonic()
            log = scratch / "logs" / f"{name}.log"
            with open(log, "w") as f:
                proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", "--force",
                                       "--no-run-cache", name], cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT)
            secs = round(time.monotonic() - t0, 1)
            if proc.returncode:
                failed = True
                tail = log.read_text(errors="replace").splitlines()[-30:]
                res = {"status": "failed", "reason": f"dvc repro exited {proc.returncode}", "log_tail": tail}
            else:
                res = compare_stage(name, golden.get(name), _lock(repo)[name], golden_dir, new_dir)
            res["seconds"] = secs
            results[name] = res
            echo(f"{res['status']:<13} {secs:7.1f} s{_detail(res)}")
        counts = {s: sum(r["status"] == s for r in results.values())
                  for s in ("reproduced", "differs", "not_compared", "no_golden", "failed", "not_run")}
        compared = len(results) - counts["not_compared"]
        return {
            "schema": SCHEMA, "date": date, "git_commit": commit, "worktree_modified": len(dirty),
            "dvc_lock_sha256": lock_sha, "requested": stages or [], "all_stages": order == everything,
            "environment": environment(repo), "inputs": inputs, "stages": results,
            "counts": {**counts, "compared": compared},
            "reproduced": compared > 0 and counts["reproduced"] == compared,
            "scratch": str(repo) if keep_scratch else None,
        }
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _print(text: str, nl: bool = True) -> None:
    print(text, end="\n" if nl else "", flush=True)


def _detail(res: dict) -> str:
    if res["status"] == "differs":
        bad = [o for o in res["outs"] if not o["identical"]]
        parts = []
        for o in bad:
            fd = o.get("first_difference")
            parts.append(f"{o['path']}" + (f" (first differing file: {fd['file']})" if fd else ""))
        extra = f"; inputs changed since the lock: {', '.join(res['inputs_changed'])}" if res.get("inputs_changed") else ""
        return "  " + ", ".join(parts) + extra
    if res["status"] in ("failed", "no_golden"):
        return f"  {res['reason']}"
    return ""


# --- reading a result --------------------------------------------------------------------------

def load_result(path: Path) -> dict | None:
    """The verification record at `path`, or None if there is none. A file that is not one raises ValueError."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(result, dict) or result.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a `lucie verify` result (schema {SCHEMA!r} expected)")
    return result


def summary(result: dict) -> str:
    """One line, e.g. 'reproduced 9/9 stages byte-for-byte on 2026-11-26 with Python 3.11.14, torch 2.13.0+cpu
    (linux x86_64)', followed by what did not reproduce and what was not compared."""
    c, env = result["counts"], result["environment"]
    torch = env["packages"].get("torch") or "no torch"
    text = (f"reproduced {c['reproduced']}/{c['compared']} stages byte-for-byte on {result['date'][:10]} "
            f"with Python {env['python']}, torch {torch} ({env['system']} {env['machine']}) "
            f"at commit {result['git_commit'][:12]}")
    bad = [f"{n} ({r['status']})" for n, r in result["stages"].items() if r["status"] not in ("reproduced", "not_compared")]
    if bad:
        text += "; not reproduced: " + ", ".join(bad)
    skipped = [n for n, r in result["stages"].items() if r["status"] == "not_compared"]
    if skipped:
        text += f"; not compared: {', '.join(skipped)}"
    if not result.get("all_stages"):
        text += "; partial (not every stage of dvc.yaml was run)"
    return text


def main(stages: list[str] | None, root: Path, keep_scratch: bool, out: Path | None, scratch: Path | None) -> int:
    """The CLI: run, write the JSON, print the summary. 0 = every compared stage reproduced, 1 = not, 2 = could not start."""
    import typer

    try:
        result = verify(root, stages or None, keep_scratch, scratch, echo=typer.echo)
    except VerifyError as err:
        typer.echo(f"lucie verify: {err}", err=True)
        return 2
    path = Path(out) if out else Path(_git(Path(root), "rev-parse", "--show-toplevel")) / "verification.json"
    code = 0 if result["reproduced"] else 1  # this run's verdict; the file may merge earlier runs
    if not result["all_stages"]:  # a partial run merges into the previous result (lucie/verify_merge.py)
        from lucie.verify_merge import merge

        try:
            previous = load_result(path)
        except ValueError as err:
            typer.echo(f"lucie verify: {err}; it is replaced, not merged", err=True)
            previous = None
        result = merge(previous, result, _committed_lock(Path(root)))
        if result.get("merge"):
            typer.echo(f"merged with {len(result['stages'])} stage result(s) in {path}"
                       + (f"; dropped as stale: {', '.join(result['merge']['dropped'])}" if result["merge"]["dropped"] else ""))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    typer.echo(summary(result))
    if result["scratch"]:
        typer.echo(f"scratch kept: {result['scratch']}")
    typer.echo(f"wrote {path}")
    return code


def _committed_lock(root: Path) -> dict:
    """The `stages` of dvc.lock at HEAD ({} when there is none)."""
    import yaml

    try:
        return (yaml.safe_load(_git(root, "show", "HEAD:dvc.lock")) or {}).get("stages", {})
    except VerifyError:
        return {}
