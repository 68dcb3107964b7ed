"""Exact resume: a run SIGKILLed right after its step-4 checkpoint, then rerun, ends bit-identical to an
uninterrupted run (losses, weights, every checkpoint file). A changed config or data is refused, naming
the difference, unless the override flag or LUCIE_RESUME_OVERRIDE=1 is given.

Six training subprocesses of ~10 s each (mostly imports): marked slow.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import signal

import pytest
import yaml

from pretrain_data import child_env, losses, make_repo, pretrain_cmd, run

pytestmark = pytest.mark.slow
KILL_AT = 4


def tree(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def mlflow_series(db, name: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("lucie-repro")
    (r,) = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED' and tags.`lucie.role` = 'stage'")  # a killed run stays RUNNING
    return sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, name))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    tracked = {"tracking.enabled": True}
    whole = make_repo(tmp / "whole", tracked)
    killed = tmp / "killed"
    shutil.copytree(whole, killed)
    env = lambda root, **kw: child_env(root, MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db", **kw)  # noqa: E731

    a = run(pretrain_cmd(), whole, env(whole))
    assert a.returncode == 0, a.stderr[-3000:]
    b = run(pretrain_cmd(), killed, env(killed, LUCIE_PRETRAIN_KILL_AFTER=str(KILL_AT)))
    state = {"returncode": b.returncode, "work": sorted(p.name for p in (killed / ".lucie/pretrain/ckpt").iterdir()),
             "outputs": (killed / "artifacts/checkpoints/main").exists()}
    mismatch = tmp / "mismatch"
    shutil.copytree(killed, mismatch)  # the killed run's state, for the refusal tests
    c = run(pretrain_cmd(), killed, env(killed))
    return {"whole": whole, "killed": killed, "mismatch": mismatch, "killed_state": state, "resumed": c, "tmp": tmp}


def test_the_run_was_really_killed_after_its_checkpoint(runs):
    s = runs["killed_state"]
    assert s["returncode"] == -signal.SIGKILL
    assert s["work"] == ["step0000004"] and not s["outputs"]  # a checkpoint in WORK, no stage output yet


def test_resume_is_bit_identical_to_an_uninterrupted_run(runs):
    whole, killed, c = runs["whole"], runs["killed"], runs["resumed"]
    assert c.returncode == 0, c.stderr[-3000:]
    assert "resumed from step 4" in c.stderr
    assert losses(killed)[KILL_AT:] == losses(whole)[KILL_AT:] and len(losses(whole)) == 8
    assert (killed / "plots/pretrain_loss.csv").read_bytes() == (whole / "plots/pretrain_loss.csv").read_bytes()
    assert (killed / "artifacts/phases/main/model.safetensors").read_bytes() == \
        (whole / "artifacts/phases/main/model.safetensors").read_bytes()
    # Every checkpoint file: training states (optimizer, scheduler, RNG), HF revisions, revisions.json.
    assert tree(killed / "artifacts/checkpoints/main") == tree(whole / "artifacts/checkpoints/main")
    assert (killed / "metrics/pretrain.json").read_bytes() == (whole / "metrics/pretrain.json").read_bytes()
    assert json.loads((killed / "metrics/timing/pretrain.json").read_text())["resumed_from_step"] == KILL_AT
    assert not (killed / ".lucie/pretrain").exists()  # the work directory became the stage's outputs


def test_checkpoint_and_revisions_content(runs):
    ck = runs["whole"] / "artifacts/checkpoints/main"
    assert sorted(p.name for p in ck.iterdir()) == ["hf", "step0000004", "step0000008"]
    state = json.loads((ck / "step0000004/state.json").read_text())
    assert state["step"] == 4 and state["samples_consumed"] == 32 and state["tokens"] == 32 * 32
    assert state["config"]["pretrain"]["lr"] == 0.003 and "threads" not in state["config"]["pretrain"]
    assert len(state["data_fingerprint"]) == 64 and state["config_fingerprint"]
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"} <= \
        {p.name for p in (ck / "step0000004").iterdir()}
    revs = json.loads((ck / "hf/revisions.json").read_text())["revisions"]
    assert [(r["revision"], r["step"], r["phase"]) for r in revs] == [("step0000004", 4, "main"), ("step0000008", 8, "main")]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ck / "hf/step0000008")
    tok = AutoTokenizer.from_pretrained(ck / "hf/step0000008")
    assert tok("Bonjour").input_ids[0] == 0 and model.config.num_hidden_layers == 2
    # The last revision is the final model.
    assert (ck / "hf/step0000008/model.safetensors").read_bytes() == \
        (runs["whole"] / "artifacts/phases/main/model.safetensors").read_bytes()


def test_mlflow_gets_loss_lr_grad_norm_speed_and_mfu_per_step(runs):
    whole, killed = runs["whole"], runs["killed"]
    for name in ("train_loss", "lr", "grad_norm", "tokens_per_s", "mfu", "batch_size"):
        series = mlflow_series(whole / "mlflow.db", name)
        assert [s for s, _ in series] == list(range(1, 9)), name
    assert [v for _, v in mlflow_series(whole / "mlflow.db", "train_loss")] == losses(whole)
    assert all(0 < v < 1 for _, v in mlflow_series(whole / "mlflow.db", "mfu"))
    # The resumed stage run holds the whole curve (steps 1-4 re-logged from the work directory's log).
    assert [v for _, v in mlflow_series(killed / "mlflow.db", "train_loss")][-8:] == losses(whole)
    speed = (whole / "metrics/timing/pretrain_speed.csv").read_text().splitlines()
    assert speed[0] == "step,tokens_per_s,mfu,step_seconds" and len(speed) == 9


def _change(root, **pretrain) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["pretrain"].update(pretrain)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def changed_copy(runs, name: str, **pretrain):
    """The killed run's state with another LR (threads too, which is not math) and re-written token data."""
    root = runs["tmp"] / name
    shutil.copytree(runs["mismatch"], root)
    _change(root, lr=0.001, threads=1, **pretrain)
    manifest = root / "data/tokens/train/manifest.json"
    m = json.loads(manifest.read_text())
    m["note"] = "re-tokenized"  # any change of the tokens manifest is a different data fingerprint
    manifest.write_text(json.dumps(m))
    return root


def test_resume_with_other_config_or_data_is_refused_naming_the_difference(runs):
    root = changed_copy(runs, "refused")
    r = run(pretrain_cmd(), root, child_env(root))
    assert r.returncode == 3  # a StageError (docs: exit codes)
    err = " ".join(r.stderr.split())
    assert "pretrain.lr: 0.003 (checkpoint) != 0.001 (params)" in err
    assert "data (data/tokens/train/manifest.json sha256)" in err
    assert "--allow-resume-mismatch" in err and "LUCIE_RESUME_OVERRIDE=1" in err
    assert not (root / "artifacts/checkpoints/main").exists() and (root / ".lucie/pretrain/ckpt/step0000004").exists()


def test_override_env_resumes_anyway_and_records_it(runs):
    root = changed_copy(runs, "override-env")
    r = run(pretrain_cmd(), root, child_env(root, LUCIE_RESUME_OVERRIDE="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((root / "artifacts/checkpoints/main/step0000008/state.json").read_text())
    assert any(line.startswith("pretrain.lr: 0.003") for line in state["resumed_despite"])
    assert state["config"]["pretrain"]["lr"] == 0.001  # later checkpoints carry the config they ran with
    assert json.loads((root / "metrics/timing/pretrain.json").read_text())["resumed_from_step"] == KILL_AT


def test_override_flag_resumes_in_bf16(runs):
    """The flag form of the override, and bf16 autocast (CPU has it) running for the rest of the steps."""
    root = changed_copy(runs, "override-flag", precision="bf16")
    r = run(pretrain_cmd("--allow-resume-mismatch"), root, child_env(root))
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((root / "artifacts/checkpoints/main/step0000008/state.json").read_text())
    assert "pretrain.precision: \"fp32\" (checkpoint) != \"bf16\" (params)" in state["resumed_despite"]
    out = losses(root)
    assert len(out) == 8 and all(x == x and x < 10 for x in out)  # finite losses from the bf16 steps
    import torch
    from safetensors.torch import load_file

    assert load_file(root / "artifacts/checkpoints/main/hf/step0000008/model.safetensors")["lm_head.weight"].dtype == torch.bfloat16
