"""Sharded training with torch's own APIs, one path for CPU (gloo) and GPU (nccl): FSDP2, HSDP and TP.

accelerate trains CPU processes with DDP only and refuses its ParallelismConfig there, so when
`pretrain.launch.parallelism` asks for sharding, the trainer uses `Sharded` instead of an Accelerator: the same
small interface (prepare, backward, no_sync, clip_grad_norm_, reduce, get_state_dict, save_state/load_state, ...),
built on `init_device_mesh`, `parallelize_module` (TP), `fully_shard` (FSDP2/HSDP) and
`torch.distributed.checkpoint` (DCP), as torchtitan does. The only differences between this machine and a GPU
cluster are the backend (gloo/nccl), the device and the precision.

Mesh: (dp_replicate, dp_shard, tp), outermost first. TP shards attention and MLP projections column-/row-wise
inside a node; FSDP2 shards every decoder layer and the root over dp_shard; HSDP replicates those shards over
dp_replicate. The data is split over the data-parallel ranks (dp_replicate x dp_shard): the ranks of one TP group
see the same samples, so the samples a step sees never depend on the layout.

Checkpoints are DCP directories (one file per rank + metadata, resharded on load: save at 2 processes, resume
at 1 or 4) plus the scheduler state; the HF export gathers the full state dict on rank 0.
"""
from __future__ import annotations

import contextlib
import os

from stages.core.runtime import StageError

DIMS = ("dp_replicate", "dp_shard", "tp")


def mesh_dims(pc) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The mesh's dimension names and sizes, dimensions of size 1 left out (at least one dimension)."""
    sizes = dict(zip(DIMS, (pc.dp_replicate_size, pc.dp_shard_size, pc.tp_size)))
    kept = [(n, s) for n, s in sizes.items() if s > 1] or [("dp_shard", 1)]
    return tuple(n for n, _ in kept), tuple(s for _, s in kept)


def tp_plan() -> dict:
    """Megatron's split of a Llama decoder layer: q/k/v and gate/up by output columns, o and down by input rows,
    so each layer needs one all-reduce in attention and one in the MLP (forward)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    return {"self_attn.q_proj": ColwiseParallel(), "self_attn.k_proj": ColwiseParallel(),
            "self_attn.v_proj": ColwiseParallel(), "self_attn.o_proj": RowwiseParallel(),
            "mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(), "mlp.down_proj": RowwiseParallel()}


def parallelize(model, mesh, pc, bf16: bool = False):
    """TP (if tp_size > 1), then FSDP2 per decoder layer and on the root (if any dp dimension > 1; HSDP when both
    are). bf16: bf16 compute with fp32 master weights and fp32 gradient reduction. Changes the model in place.
    Activation checkpointing is transformers' own (the trainer enables it), so parameter names never change."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor.parallel import parallelize_module

    layers = model.model.layers
    names = mesh.mesh_dim_names
    if pc.tp_size > 1:
        cfg = model.config
        for n in ("num_attention_heads", "num_key_value_heads"):
            if getattr(cfg, n) % pc.tp_size:
                raise StageError(f"model.{n} = {getattr(cfg, n)} is not divisible by tp_size {pc.tp_size}")
        for layer in layers:
            parallelize_module(layer, mesh["tp"], tp_plan())
    dp = tuple(n for n in ("dp_replicate", "dp_shard") if n in names)
    if dp:
        dp_mesh = mesh[dp] if len(dp) > 1 else mesh[dp[0]]
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
        for layer in layers:
            fully_shard(layer, mesh=dp_mesh, reshard_after_forward=True, mp_policy=mp)
        fully_shard(model, mesh=dp_mesh, reshard_after_forward=True, mp_policy=mp)
    return model


class Sharded:
    """The part of accelerate.Accelerator the trainer uses, for FSDP2 / HSDP / TP with torch's own APIs."""

    def __init__(self, hp, gpu: bool):
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        pc = hp.launch.parallelism
        world = int(os.environ.get("WORLD_SIZE", 1))
        names, sizes = mesh_dims(pc)
        if world != pc.dp_replicate_size * pc.dp_shard_size * pc.tp_size:
            raise StageError(f"pretrain.launch.parallelism asks for {pc.dp_replicate_size} x {pc.dp_shard_size} x "
                             f"{pc.tp_size} processes but {world} were launched (`python -m stages.launch` prints a "
                             "matching command)")
        if gpu:
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")
        if not dist.is_initialized():
            if "RANK" in os.environ:  # torchrun / srun
                dist.init_process_group("nccl" if gpu else "gloo")
            else:  # one plain process (a sharded checkpoint resumed at world size 1): an in-memory store
                dist.init_process_group("nccl" if gpu else "gloo", store=dist.HashStore(), rank=0, world_size=1)
        self.mesh = init_device_mesh(self.device.type, sizes, mesh_dim_names=names)
        self.pc, self.dist = pc, dist
        self.num_processes, self.process_index = dist.get_world_size(), dist.get_rank()
        self.is_main_process = self.process_index == 0
        self.dp_size = pc.dp_replicate_size * pc.dp_shard_size
        coords = dict(zip(names, self.mesh.get_coordinate()))
        self.dp_rank = coords.get("dp_replicate", 0) * pc.dp_shard_size + coords.get("dp_shard", 0)
        self.bf16 = hp.precision == "bf16"
        self._model = self._opt = self._sched = None

    # ------------------------------------------------------------ setup
    def prepare(self, *objs):
        """accelerate's call shape: the model is parallelized here; the optimizer and schedule, built by the caller
        over the parallelized model's (DTensor) parameters, are only recorded for checkpoints; anything else is
        returned as it is."""
        import torch

        out = []
        for obj in objs:
            if isinstance(obj, torch.nn.Module):
                obj = parallelize(obj.to(self.device), self.mesh, self.pc, self.bf16)
                self._model = obj
            elif isinstance(obj, torch.optim.Optimizer):
                self._opt = obj
            elif isinstance(obj, torch.optim.lr_scheduler.LRScheduler):
                self._sched = obj
            out.append(obj)
        return out[0] if len(out) == 1 else tuple(out)

    def free_memory(self) -> None:
        self._model = self._opt = self._sched = None

    # ------------------------------------------------------------ a step
    def backward(self, loss) -> None:
        loss.backward()

    @contextlib.contextmanager
    def no_sync(self, model):
        """FSDP2: accumulate unreduced gradients until the last micro-batch."""
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        else:
            yield

    def clip_grad_norm_(self, params, max_norm: float):
        """torch's clip when every gradient is a DTensor of one mesh (FSDP2/HSDP). With TP, replicated parameters
        keep plain gradients beside the sharded ones: the norm is taken per layout (mesh and placements), one
        reduction each (two or three per step, not one per gradient), and the squares summed."""
        import torch
        from torch.distributed.tensor import DTensor

        params = [p for p in params if p.grad is not None]
        grads = [p.grad for p in params]
        meshes = {g.device_mesh for g in grads if isinstance(g, DTensor)}
        if len(meshes) == 1 and all(isinstance(g, DTensor) for g in grads):
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"), foreach=True)
            return norm.full_tensor() if isinstance(norm, DTensor) else norm
        layouts: dict = {}
        for g in grads:
            key = (g.device_mesh, tuple(g.placements)) if isinstance(g, DTensor) else None
            layouts.setdefault(key, []).append(g.detach())
        total_sq = torch.zeros((), dtype=torch.float32)
        for same in layouts.values():
            n = torch.nn.utils.get_total_norm(same, 2.0, foreach=True)
            total_sq += (n.full_tensor() if isinstance(n, DTensor) else n).float().cpu() ** 2
        total = total_sq.sqrt()
        coef = float(max_norm / (total + 1e-6)) if max_norm else 1.0
        if coef < 1.0:
            for g in grads:
                g.mul_(coef)
        return total

    def reduce(self, tensor, reduction: str = "mean"):
        t = tensor.clone()
        self.dist.all_reduce(t)
        return t / self.num_processes if reduction == "mean" else t

    def wait_for_everyone(self) -> None:
        self.dist.barrier()

    # ------------------------------------------------------------ weights and checkpoints
    def unwrap_model(self, model):
        return model

    def get_state_dict(self, model) -> dict:
        """The full (unsharded) state dict on rank 0, on CPU; {} elsewhere. Every rank must call it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if getattr(model.config, "tie_word_embeddings", False):
            sd.pop("lm_head.weight", None)
        return sd if self.is_main_process else {}

    def _app_state(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self._model, self._opt)
        return {"model": model_sd, "optim": optim_sd}

    def save_state(self, path: str) -> None:
        """A DCP checkpoint (every rank writes its shards) + the schedule's state (rank 0)."""
        import torch
        import torch.distributed.checkpoint as dcp

        dcp.save(self._app_state(), checkpoint_id=path)
        if self.is_main_process:
            torch.save(self._sched.state_dict(), os.path.join(path, "scheduler.pt"))

    def load_state(self, path: str) -> None:
        """Load a DCP checkpoint saved at any mesh of the same model (DCP reshards)."""
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        if not os.path.exists(os.path.join(path, ".metadata")):
            raise StageError(f"{path} is not a sharded (DCP) checkpoint: it was saved without "
                             "pretrain.launch.parallelism; resume it with the same launch settings")
        state = self._app_state()
        dcp.load(state, checkpoint_id=path)
        set_state_dict(self._model, self._opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self._sched.load_state_dict(torch.load(os.path.join(path, "scheduler.pt"), weights_only=True))


def data_parallel(acc) -> tuple[int, int]:
    """(size, rank) of the data-parallel group: the ranks that read different samples."""
    if isinstance(acc, Sharded):
        return acc.dp_size, acc.dp_rank
    return acc.num_processes, acc.process_index
