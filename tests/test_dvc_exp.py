"""One real DVC experiments cycle in a temp git+DVC copy: `dvc exp run -S ... --queue`, a run of one stage
with `-S`, then `dvc exp show` listing both with their params (and the run's metrics)."""
from __future__ import annotations

import json

from repo_copy import BIN, env, make_copy, run
from stages.core.params import load


def _experiments(show: list[dict]) -> dict[str, dict]:
    out = {}
    for row in show:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                out[rev["name"]] = {"executor": exp.get("executor"), **rev["data"]}
    return out


def test_queue_run_and_show(tmp_path):
    root, e = make_copy(tmp_path / "repo"), env(tmp_path)
    dvc = str(BIN / "dvc")
    run([dvc, "exp", "run", "--queue", "-n", "lr-1e-3", "-S", "pretrain.lr=1e-3",
         "-S", "executor.slurm.time=12:00:00"], root, e)
    run([dvc, "exp", "run", "-n", "fewer-docs", "-S", "ingest.max_docs_per_source=20", "ingest"], root, e)
    assert load(root / "params.yaml").ingest.max_docs_per_source == 20  # applied to the workspace, still valid

    exps = _experiments(json.loads(run([dvc, "exp", "show", "--json"], root, e).stdout))
    queued = exps["lr-1e-3"]
    assert queued["executor"]["state"] == "queued"
    qp = queued["params"]["params.yaml"]["data"]
    assert qp["pretrain"]["lr"] == 1e-3 and qp["executor"]["slurm"]["time"] == "12:00:00"
    ran = exps["fewer-docs"]
    assert ran["params"]["params.yaml"]["data"]["ingest"]["max_docs_per_source"] == 20
    ingest = ran["metrics"]["metrics/ingest.json"]["data"]
    assert ingest["kept"] <= 20 * len(load(root / "params.yaml").data.sources) and ingest["kept"] > 0


def test_the_default_remote_works_for_a_newcomer(tmp_path):
    """`dvc push` (DVC's hint after `dvc repro`) goes to the folder next to the clone; a second clone there pulls."""
    root, e = make_copy(tmp_path / "repo"), env(tmp_path)
    dvc = str(BIN / "dvc")
    run([dvc, "repro", "-s", "ingest"], root, e)
    run([dvc, "push", "data/raw"], root, e)
    remote = tmp_path / "lucie-repro-dvc-remote"
    assert remote.is_dir() and any(p.is_file() for p in remote.rglob("*"))
    run(["git", "add", "dvc.lock"], root, e)
    # a fresh clone reproduces the committed lock, so there may be nothing new to commit
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "--allow-empty", "-qm", "lock"], root, e)
    other = tmp_path / "other"
    run(["git", "clone", "-q", str(root), str(other)], tmp_path, e)
    run([dvc, "pull", "data/raw"], other, e)
    assert sorted(p.name for p in (other / "data/raw").iterdir()) == sorted(p.name for p in (root / "data/raw").iterdir())
