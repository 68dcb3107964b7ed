"""The pretraining launch command and its Slurm script, built from `pretrain.launch` in params.

The training script is the same at every scale (`python -m stages.pretrain`); only the
launcher around it changes:

  1 process            python -m stages.pretrain
  N processes, 1 node  torchrun --standalone --nnodes 1 --nproc_per_node N -m stages.pretrain
  M nodes (by hand)    torchrun --nnodes M --nproc_per_node N --node_rank R --master_addr H --master_port P ...
                       (run once per node, R = 0..M-1; H:P = pretrain.launch.rdzv_endpoint, node 0's address)
  M nodes (Slurm)      sbatch script: one task per node, `srun torchrun` with the c10d rendezvous on the
                       allocation's first host (scontrol show hostnames), so no node rank is needed

torchrun, not `accelerate launch --cpu`: the latter starts ONE process whatever --num_processes says
(research/tooling.md §4). On CPU, ACCELERATE_USE_CPU=true makes the torchrun processes one gloo group.
No torch import here: printing a command or a script must be instant.

    python -m stages.launch                      # the command for this machine (node 0)
    python -m stages.launch --node-rank 1        # ... for node 1 of a by-hand multi-node run
    python -m stages.launch --sbatch > run.sbatch
    python -m stages.launch --run [-- --allow-resume-mismatch]   # execute it
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from stages.core.params import Launch, Params, ParamsError, load

MODULE = "stages.pretrain"


def uses_gpu(launch: Launch, cuda: bool | None = None) -> bool:
    """nccl: GPUs; gloo: CPU; auto: GPUs when CUDA is there (checked without importing torch)."""
    if launch.backend != "auto":
        return launch.backend == "nccl"
    if cuda is None:
        cuda = shutil.which("nvidia-smi") is not None
    return cuda


def env_for(p: Params, cuda: bool | None = None) -> dict[str, str]:
    """Variables every training process needs."""
    env = {"OMP_NUM_THREADS": str(p.pretrain.threads)}
    if not uses_gpu(p.pretrain.launch, cuda):
        env["ACCELERATE_USE_CPU"] = "true"  # without it, torchrun's CPU processes would train independently
    return env


def command(p: Params, node_rank: int | None = None, args: list[str] | tuple = ()) -> list[str]:
    """argv for one node. Multi-node by hand needs node_rank; the Slurm script uses `sbatch_script` instead."""
    launch = p.pretrain.launch
    if launch.nnodes == 1 and launch.nproc_per_node == 1:
        return ["python", "-m", MODULE, *args]
    cmd = ["torchrun", "--nnodes", str(launch.nnodes), "--nproc_per_node", str(launch.nproc_per_node)]
    if launch.nnodes == 1:
        cmd.insert(1, "--standalone")  # a local rendezvous on a free port: no address to configure
    else:
        if node_rank is None or not 0 <= node_rank < launch.nnodes:
            raise ValueError(f"pretrain.launch.nnodes is {launch.nnodes}: give --node-rank 0..{launch.nnodes - 1} "
                             "(one invocation per node), or use --sbatch on a Slurm cluster")
        host, port = launch.rdzv_endpoint.rsplit(":", 1)
        cmd += ["--node_rank", str(node_rank), "--master_addr", host, "--master_port", port]
    return [*cmd, "-m", MODULE, *args]


def shell_line(p: Params, node_rank: int | None = None, args: list[str] | tuple = (), cuda: bool | None = None) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env_for(p, cuda).items()))
    return f"{env} {shlex.join(command(p, node_rank, args))}"


def sbatch_script(p: Params, args: list[str] | tuple = (), workdir: str = '"$SLURM_SUBMIT_DIR"') -> str:
    """A Slurm batch script: one task per node, each running torchrun for that node's processes.

    The c10d rendezvous meets on the first host of the allocation (port from rdzv_endpoint), so every node
    runs the same line. Resubmitting the script resumes from the latest checkpoint (the stage does that by
    itself), which is how Lucie's 20-hour jobs were chained.
    """
    launch, s = p.pretrain.launch, p.pretrain.launch.slurm
    port = launch.rdzv_endpoint.rsplit(":", 1)[1]
    # A script cannot look for CUDA on nodes it has not got yet: GPUs are requested only when the recipe says
    # nccl (lucie-7b, lucie-1b); `auto` (the CPU recipes) asks for CPUs and runs the processes on them.
    gpu = launch.backend == "nccl"
    head = [
        "#!/bin/bash",
        f"#SBATCH --job-name={s.job_name}",
        f"#SBATCH --nodes={launch.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={s.cpus_per_task}",
        f"#SBATCH --time={s.time}",
        f"#SBATCH --output={s.output}",
    ]
    if gpu:
        head.append(f"#SBATCH --gres=gpu:{launch.nproc_per_node}")
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            head.append(f"#SBATCH --{key}={getattr(s, key)}")
    head += [f"#SBATCH {d}" for d in s.extra_directives]
    env = env_for(p, cuda=gpu)
    torchrun = [
        "torchrun", "--nnodes", '"$SLURM_NNODES"', "--nproc_per_node", str(launch.nproc_per_node),
        "--rdzv_id", '"$SLURM_JOB_ID"', "--rdzv_backend", "c10d", "--rdzv_endpoint", f'"$head_node:{port}"',
        "-m", MODULE, *(shlex.quote(a) for a in args),
    ]
    body = [
        "",
        "# Generated by `python -m stages.launch --sbatch` from params.yaml (pretrain.launch); edit the params, not this.",
        "set -euo pipefail",
        f"cd {workdir}",
        *s.setup,
        *(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())),
        "# Every node joins the rendezvous on the first host of the allocation.",
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "srun --kill-on-bad-exit=1 " + " ".join(torchrun),
        "",
    ]
    return "\n".join(head + body)


def main(argv: list[str] | None = None) -> None:
    from stages.core.runtime import params_path

    ap = argparse.ArgumentParser(prog="python -m stages.launch", description=__doc__.split("\n")[0])
    ap.add_argument("--node-rank", type=int, default=None, help="this node's rank (by-hand multi-node runs)")
    ap.add_argument("--sbatch", action="store_true", help="print the Slurm batch script instead")
    ap.add_argument("--run", action="store_true", help="execute the command (replaces this process)")
    ap.add_argument("args", nargs="*", help="passed to stages.pretrain (after --)")
    a = ap.parse_args(argv)
    try:
        p = load(params_path(Path.cwd()))
    except ParamsError as err:  # one line(s) naming the key, exit 2, as every stage does
        print(f"launch: {err}", file=sys.stderr)
        sys.exit(2)
    if a.sbatch:
        sys.stdout.write(sbatch_script(p, a.args))
        return
    try:
        cmd = command(p, a.node_rank, a.args)
    except ValueError as err:
        ap.error(str(err))
    if not a.run:
        print(shell_line(p, a.node_rank, a.args))
        return
    # Prefer the tools of this interpreter's environment (the venv) over whatever PATH has first.
    exe = Path(sys.executable).parent / cmd[0]
    cmd[0] = sys.executable if cmd[0] == "python" else (str(exe) if exe.exists() else cmd[0])
    os.execvpe(cmd[0], cmd, {**os.environ, **env_for(p)})


if __name__ == "__main__":
    main()
