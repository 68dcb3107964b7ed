"""The launcher: torchrun commands for 1 process / N processes / M nodes, and the Slurm script."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from repo_copy import PROJECT
from stages import launch
from stages.core.params import load, parse


def params(**launch_over):
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["pretrain"]["launch"].update(launch_over)
    return parse(raw)


def test_one_process_needs_no_launcher():
    p = params()
    assert launch.command(p) == ["python", "-m", "stages.pretrain"]
    assert launch.env_for(p, cuda=False) == {"OMP_NUM_THREADS": "2", "ACCELERATE_USE_CPU": "true"}


def test_processes_on_one_node_use_a_standalone_rendezvous():
    p = params(nproc_per_node=2)
    assert launch.command(p, args=["--fresh"]) == [
        "torchrun", "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m", "stages.pretrain", "--fresh"]
    line = launch.shell_line(p, cuda=False)
    assert line.startswith("ACCELERATE_USE_CPU=true OMP_NUM_THREADS=2 torchrun --standalone")
    # On GPUs the processes are one NCCL group by themselves; ACCELERATE_USE_CPU would force the CPU.
    assert "ACCELERATE_USE_CPU" not in launch.env_for(params(nproc_per_node=2, backend="nccl"))
    assert "ACCELERATE_USE_CPU" not in launch.env_for(p, cuda=True)


def test_nodes_by_hand_need_a_rank_and_meet_at_the_endpoint():
    p = params(nnodes=2, nproc_per_node=1, rdzv_endpoint="10.0.0.1:29511")
    for rank in (0, 1):
        assert launch.command(p, node_rank=rank) == [
            "torchrun", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
            "--master_addr", "10.0.0.1", "--master_port", "29511", "-m", "stages.pretrain"]
    for bad in (None, 2):
        with pytest.raises(ValueError, match="give --node-rank 0..1"):
            launch.command(p, node_rank=bad)


def test_sbatch_script_for_lucie_7b():
    p = load(PROJECT / "recipes/lucie-7b.yaml")
    script = launch.sbatch_script(p, args=["--allow-resume-mismatch"])
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--job-name=lucie-7b", "--nodes=128", "--ntasks-per-node=1", "--gres=gpu:4",
                      "--cpus-per-task=96", "--time=20:00:00", "--constraint=h100", "--output=%x-%j.out"):
        assert f"#SBATCH {directive}" in lines, directive
    assert not any(line.startswith("#SBATCH --partition") for line in lines)  # null in the recipe: left out
    assert 'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in lines
    srun = [line for line in lines if line.startswith("srun ")]
    assert srun == ['srun --kill-on-bad-exit=1 torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 4 '
                    '--rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head_node:29500" '
                    '-m stages.pretrain --allow-resume-mismatch']
    assert "export OMP_NUM_THREADS=8" in lines and "ACCELERATE_USE_CPU" not in script
    assert lines.index("source .venv/bin/activate") < lines.index(srun[0])
    bash = shutil.which("bash")
    assert subprocess.run([bash, "-n"], input=script, text=True, capture_output=True).returncode == 0


def test_sbatch_script_for_a_cpu_cluster_and_site_options():
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["pretrain"]["launch"].update(nnodes=4, nproc_per_node=2, backend="gloo")
    raw["pretrain"]["launch"]["slurm"].update(partition="cpu_p1", account="abc@cpu", qos="qos_cpu-t3",
                                             extra_directives=["--hint=nomultithread"], setup=["module load python/3.11"])
    script = launch.sbatch_script(parse(raw))
    for line in ("#SBATCH --nodes=4", "#SBATCH --partition=cpu_p1", "#SBATCH --account=abc@cpu",
                 "#SBATCH --qos=qos_cpu-t3", "#SBATCH --hint=nomultithread", "module load python/3.11",
                 "export ACCELERATE_USE_CPU=true"):
        assert line in script.splitlines(), line
    assert "--gres" not in script and "--nproc_per_node 2" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_cli_prints_the_command_and_the_script(tmp_path):
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["pretrain"]["launch"].update(nnodes=2, rdzv_endpoint="127.0.0.1:29600", backend="gloo")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"}
    cli = lambda *a: subprocess.run([sys.executable, "-m", "stages.launch", *a], cwd=tmp_path, env=env,  # noqa: E731
                                    capture_output=True, text=True)
    out = cli("--node-rank", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("ACCELERATE_USE_CPU=true OMP_NUM_THREADS=2 torchrun --nnodes 2 --nproc_per_node 1 "
                                  "--node_rank 1 --master_addr 127.0.0.1 --master_port 29600 -m stages.pretrain")
    missing = cli()
    assert missing.returncode == 2 and "--node-rank" in missing.stderr
    script = cli("--sbatch")
    assert script.returncode == 0 and "#SBATCH --nodes=2" in script.stdout


def test_sbatch_script_for_the_cpu_tiny_recipe_requests_no_gpu():
    script = launch.sbatch_script(parse(yaml.safe_load((PROJECT / "recipes" / "tiny.yaml").read_text())))
    assert "--gres" not in script and "export ACCELERATE_USE_CPU=true" in script.splitlines()


def test_cli_invalid_params_is_a_short_error_exit_2(tmp_path):
    """`--run` (or any mode) with invalid params: the ParamsError naming the key, no traceback, exit 2 (issue 16.9)."""
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["pretrain"]["lr"] = float("inf")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "-m", "stages.launch", "--run"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and "pretrain.lr" in out.stderr and "Traceback" not in out.stderr, out.stderr
