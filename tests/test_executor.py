"""Data-stage scale-out (stages/core/executor.py): ingest's, filter's and dedup's tasks on datatrove's executors.

The output must not depend on how many processes ran it: 1 vs 2 local workers give byte-identical
data/filtered and metrics; for filter more tasks change only where Parquet shards end; ingest and dedup
write their output after the merge, so theirs is byte-identical for any tasks and workers. The Slurm script is rendered
by datatrove's own SlurmPipelineExecutor from params (no Slurm here, so nothing is submitted) and parsed by
bash; without the ray package, kind: ray fails with a message naming the package to install. Real clusters:
tests/test_slurm.py and tests/test_ray.py.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages import dedup
from stages.core import executor
from stages import filter as filt, ingest
from stages.core import files
from stages.core.runtime import StageError

PROJECT = Path(__file__).resolve().parent.parent
LID = PROJECT / "assets" / "lid" / "lid.176.ftz"
needs_lid = pytest.mark.skipif(not LID.exists(), reason="assets/lid/lid.176.ftz missing: run `make setup`")


def sample_overrides(extra: dict | None = None, **executor_keys) -> dict:
    """The sample corpus by absolute path; the URL rule off (its blocklist load per process is what is slow,
    and the split/merge under test does not depend on which rules run)."""
    import yaml

    sources = yaml.safe_load((PROJECT / "params.yaml").read_text())["data"]["sources"]
    for s in sources:
        s["path"] = str(PROJECT / s["path"])
    return {"data.sources": sources, "filter.language.model": str(LID), "filter.url.enabled": False,
            **{f"executor.{k}": v for k, v in executor_keys.items()}, **(extra or {})}


def tree(root: Path, *rels: str) -> dict[str, str]:
    out = {}
    for rel in rels:
        p = root / rel
        for f in sorted([p] if p.is_file() else p.rglob("*")):
            if f.is_file():
                out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def run_filter(make_ctx, root: Path, src_root: Path | None = None, **executor_keys) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ctx = make_ctx("filter", sample_overrides(**executor_keys), root=root)
    if src_root is None:
        ingest.run(ctx)
    else:
        shutil.copytree(src_root / "data" / "raw", root / "data" / "raw")
    filt.run(ctx)
    return root


# ---------------------------------------------------------------- row ranges
def test_row_ranges_cover_the_input_in_order(tmp_path):
    for total in (0, 1, 7, 100):
        for world in (1, 2, 3, 8):
            ranges = [executor.row_range(total, r, world) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            assert max(e - s for s, e in ranges) - min(e - s for s, e in ranges) <= 1
    rows = [{"id": f"d{i:03d}", "text": "x" * i, "lang": "en", "source": "s", "category": "web", "license": "MIT",
             "url": "", "date": "", "meta": "{}"} for i in range(23)]
    files.write_manifest(tmp_path, files.write_docs(tmp_path, rows, rows_per_shard=5))  # 5 shards: 5,5,5,5,3
    for world in (1, 2, 4, 23, 30):
        got = [d for r in range(world) for d in executor.read_rows(tmp_path, *executor.row_range(23, r, world))]
        assert got == rows, world


# ---------------------------------------------------------------- same bytes for any number of workers
@needs_lid
def test_one_and_two_local_workers_give_identical_bytes(make_ctx, tmp_path):
    one = run_filter(make_ctx, tmp_path / "one", tasks=2, workers=1)
    two = run_filter(make_ctx, tmp_path / "two", one, tasks=2, workers=2)
    a, b = tree(one, "data/filtered", "metrics/filter.json"), tree(two, "data/filtered", "metrics/filter.json")
    assert a == b
    m = files.read_json(one / "metrics/filter.json")
    assert m["dropped_total"] > 0 and m["kept"] > 0  # a real split: both outcomes present
    assert len(files.read_json(one / "data/filtered/manifest.json")["files"]) == 2  # one shard per task
    # the tasks ran under datatrove: its per-rank completions and stats, and no staging left behind
    logs = two / "logs/datatrove/filter"
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00001"]
    assert (logs / "stats.json").exists()
    assert not (two / "data/.filtered.tasks").exists()

    # tasks: 1 (the default) -> same documents in the same order, same records and metrics; only the
    # shard boundaries differ (tasks is part of the output contract)
    single = run_filter(make_ctx, tmp_path / "single", one)
    assert list(files.read_docs(single / "data/filtered")) == list(files.read_docs(one / "data/filtered"))
    for rel in ("data/filtered/dropped.jsonl", "metrics/filter.json"):
        assert (single / rel).read_bytes() == (one / rel).read_bytes(), rel
    assert len(files.read_json(single / "data/filtered/manifest.json")["files"]) == 1


def run_stage(make_ctx, module, root: Path, overrides: dict | None = None, **executor_keys) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    module.run(make_ctx(module.__name__.split(".")[-1], sample_overrides(overrides, **executor_keys), root=root))
    return root


def test_ingest_gives_the_same_bytes_for_any_tasks_and_workers(make_ctx, tmp_path):
    """Tasks parse and normalise ranges of files; the cap and duplicate ids are decided in corpus order after."""
    outs = ("data/raw", "metrics/ingest.json")
    one = tree(run_stage(make_ctx, ingest, tmp_path / "one"), *outs)
    assert tree(run_stage(make_ctx, ingest, tmp_path / "many", tasks=5, workers=2), *outs) == one
    assert not (tmp_path / "many/data/.raw.tasks").exists()
    assert sorted(p.name for p in (tmp_path / "many/logs/datatrove/ingest/completions").iterdir()) == \
        [f"{r:05d}" for r in range(5)]
    # a cap reached in one task: the rest of the source, parsed by the next task, is not taken
    cap = {"ingest.max_docs_per_source": 48}
    capped = tree(run_stage(make_ctx, ingest, tmp_path / "cap1", cap), *outs)
    # 12 files in 6 tasks: task 0 has en.jsonl (44 lines) + en.malformed.jsonl, task 1 en.noise.jsonl + fr.jsonl
    assert tree(run_stage(make_ctx, ingest, tmp_path / "cap6", cap, tasks=6), *outs) == capped
    m = files.read_json(tmp_path / "cap6/metrics/ingest.json")
    assert m["per_source"]["sample-en"]["read"] == 48
    assert m["read"] < files.read_json(tmp_path / "one/metrics/ingest.json")["read"]


def test_ingest_duplicate_ids_across_tasks_are_rejected_as_in_one_pass(make_ctx, tmp_path):
    (tmp_path / "in").mkdir(parents=True)
    for k in range(3):  # each file repeats an id of the file before it
        rows = [{"id": f"f{k}-{j}", "text": f"text {k} {j}"} for j in range(3)] + ([{"id": f"f{k-1}-0", "text": "again"}] if k else [])
        (tmp_path / "in" / f"part{k}.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    src = {"data.sources": [{"name": "s", "path": "in/*.jsonl", "lang": "en", "license": "CC0-1.0"}]}
    outs = ("data/raw", "metrics/ingest.json")
    single = tmp_path / "single"
    shutil.copytree(tmp_path / "in", single / "in")
    ingest.run(make_ctx("ingest", src, root=single))
    split = tmp_path / "split"
    shutil.copytree(tmp_path / "in", split / "in")
    ingest.run(make_ctx("ingest", {**src, "executor.tasks": 3}, root=split))
    assert tree(split, *outs) == tree(single, *outs)
    assert files.read_json(split / "metrics/ingest.json")["rejected"] == {"duplicate_id": 2}


@needs_lid
def test_dedup_gives_the_same_bytes_for_any_tasks_and_workers(make_ctx, tmp_path):
    """Signatures per task, groups, bands and the written output after the merge: nothing depends on tasks."""
    base = run_stage(make_ctx, ingest, tmp_path / "base")
    outs = ("data/dedup", "metrics/dedup.json")
    runs = {}
    for name, keys in {"one": {}, "three": {"tasks": 3, "workers": 2}, "seven": {"tasks": 7}}.items():
        root = tmp_path / name
        shutil.copytree(base / "data/raw", root / "data/filtered")  # the sample's planted duplicates survive
        runs[name] = tree(run_stage(make_ctx, dedup, root, **keys), *outs)
    assert runs["one"] == runs["three"] == runs["seven"]
    m = files.read_json(tmp_path / "three/metrics/dedup.json")
    assert m["dropped"]["exact"] > 0 and m["dropped"]["near_duplicate"] > 0
    assert not (tmp_path / "three/data/.dedup.tasks").exists()


def test_a_failing_task_fails_the_stage_and_leaves_nothing(make_ctx, tmp_path):
    ctx = make_ctx("filter", sample_overrides({"filter.language.enabled": False}), root=tmp_path)
    ingest.run(ctx)
    shard = tmp_path / "data/raw" / files.read_json(tmp_path / "data/raw/manifest.json")["files"][0]["path"]
    shard.write_bytes(b"not parquet")
    with pytest.raises(Exception, match="(?i)parquet"):
        filt.run(ctx)
    assert not (tmp_path / "data/filtered").exists() and not (tmp_path / "data/.filtered.tasks").exists()


# ---------------------------------------------------------------- resume (executor.skip_completed)
@needs_lid
def test_a_failed_run_resumes_from_its_finished_tasks_and_gives_the_uninterrupted_bytes(make_ctx, tmp_path, capfd):
    """A task that fails (here: its input shard unreadable, as on a flaky filesystem) fails the stage; with
    skip_completed the finished tasks are kept and the rerun of the same work runs only the others."""
    keys = {"executor.tasks": 3, "executor.skip_completed": True, "ingest.rows_per_shard": 101}
    outs = ("data/filtered", "metrics/filter.json")
    whole = tmp_path / "whole"
    whole.mkdir()
    ctx_whole = make_ctx("filter", sample_overrides(keys), root=whole)
    ingest.run(ctx_whole)
    assert [e["rows"] for e in files.read_json(whole / "data/raw/manifest.json")["files"]] == [101, 101, 101]
    filt.run(ctx_whole)  # uninterrupted

    root = tmp_path / "resumed"
    shutil.copytree(whole / "data/raw", root / "data/raw")
    ctx = make_ctx("filter", sample_overrides(keys), root=root)
    shard = root / "data/raw/part-00001.parquet"  # task 1's rows exactly
    good = shard.read_bytes()
    shard.write_bytes(b"not parquet")
    with pytest.raises(Exception, match="(?i)parquet"):
        filt.run(ctx)
    staging = root / "data/.filtered.tasks"
    assert (staging / "task-00000" / executor.TASK_RESULT).exists()  # kept for the resume
    assert not (staging / "task-00001").exists() and not (root / "data/filtered").exists()
    done = {f.name: f.stat().st_ino for f in (staging / "task-00000").iterdir()}

    shard.write_bytes(good)
    capfd.readouterr()
    filt.run(ctx)
    assert "[filter] resuming: 1 of 3 tasks already finished" in capfd.readouterr().err
    assert tree(root, *outs) == tree(whole, *outs)
    # task 0 was not run again: its part is the very file the failed run wrote (renamed into place)
    part0 = files.read_json(root / "data/filtered/manifest.json")["files"][0]["path"]
    assert (root / "data/filtered" / part0).stat().st_ino == done["part-00000.parquet"]
    assert not staging.exists()

    # other work (a changed threshold) never reuses the kept tasks
    shard.write_bytes(b"not parquet")
    with pytest.raises(Exception, match="(?i)parquet"):
        filt.run(ctx)
    assert (staging / "task-00000" / executor.TASK_RESULT).exists()
    shard.write_bytes(good)
    changed = make_ctx("filter", sample_overrides({**keys, "filter.gopher_quality.min_doc_words": 51}), root=root)
    capfd.readouterr()
    filt.run(changed)
    assert "resuming" not in capfd.readouterr().err
    assert (root / "logs/datatrove/filter/completions/00000").exists()  # run again, not skipped


# ---------------------------------------------------------------- Ray: a real code path, a clear message
def test_ray_without_ray_names_the_package(make_ctx, tmp_path, monkeypatch):
    """ray is in the lock; an environment without it (a partial install) gets the line that fixes it."""
    ctx = make_ctx("filter", sample_overrides(kind="ray", tasks=2), root=tmp_path)
    from datatrove.executor.ray import RayPipelineExecutor

    ex = executor.build(ctx.params.executor, [], "filter", tmp_path)
    assert isinstance(ex, RayPipelineExecutor) and ex.world_size == 2 and ex.cpus_per_task == 1
    (tmp_path / "data/raw").mkdir(parents=True)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(StageError, match=r"run `make setup` .*pip install \"ray==2\.60\.0\""):
        filt.run(ctx)
    assert not (tmp_path / "data/filtered").exists()


def test_slurm_without_sbatch_says_so(make_ctx, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    ctx = make_ctx("filter", sample_overrides(kind="slurm"), root=tmp_path)
    (tmp_path / "data/raw").mkdir(parents=True)
    with pytest.raises(StageError, match="needs `sbatch` on PATH"):
        filt.run(ctx)
    assert not (tmp_path / "data/filtered").exists()


# ---------------------------------------------------------------- the Slurm script, rendered by datatrove
SLURM = {"kind": "local", "tasks": 12, "workers": 4, "logging_dir": "logs/dt",
         "slurm": {"partition": "cpu-long", "time": "02:30:00", "cpus_per_task": 3, "mem_per_cpu_gb": 5,
                   "job_name": "lucie-data", "qos": "high", "env_command": "source .venv/bin/activate",
                   "sbatch_args": {"account": "proj42"}, "max_array_size": 10, "poll_seconds": 5}}


def test_sbatch_script_from_params(make_ctx, tmp_path):
    ctx = make_ctx("filter", {"executor": SLURM}, root=tmp_path)
    script = executor.sbatch_script(ctx.params, "filter", tmp_path)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for want in ("#SBATCH --partition=cpu-long", "#SBATCH --time=02:30:00", "#SBATCH --cpus-per-task=3",
                 "#SBATCH --mem-per-cpu=5G", "#SBATCH --job-name=lucie-data-filter", "#SBATCH --qos=high",
                 "#SBATCH --account=proj42", "#SBATCH --array=0-9%4",  # 12 tasks, arrays of <= 10, 4 at once
                 "source .venv/bin/activate"):
        assert want in lines or any(l.strip() == want for l in lines), want
    log_dir = (tmp_path / "logs/dt/filter").resolve()
    assert any(l.strip().startswith("srun") and l.strip().endswith(f"launch_pickled_pipeline {log_dir}/executor.pik")
               for l in lines)
    assert f"#SBATCH --output={log_dir}/slurm_logs/%A_%a.out" in lines
    bash = shutil.which("bash")
    subprocess.run([bash, "-n"], input=script, text=True, check=True)

    # the CLI prints the same script from the repo's params file
    (tmp_path / "params.yaml").write_text(__import__("yaml").safe_dump(ctx.params.model_dump(mode="json")))
    env = {**os.environ, "DVC_ROOT": str(tmp_path), "PYTHONPATH": str(PROJECT)}
    out = subprocess.run([sys.executable, "-m", "stages.core.executor", "--sbatch", "filter"], cwd=PROJECT, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out == script
    bad = subprocess.run([sys.executable, "-m", "stages.core.executor", "--sbatch", "tokenize"], cwd=PROJECT, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not run through the executor" in bad.stderr
