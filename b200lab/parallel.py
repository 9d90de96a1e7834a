"""Parallelism strategies: the class ``parallelism._target_`` names.

A strategy owns the device mesh, how the model is wrapped (through the model family's
``parallelize`` hook), which data shard each rank reads, the share of the model's FLOPs a rank
does, and when gradients are synchronised. The aggregator counts tokens once per distinct data
shard (a tensor-parallel group is one replica) and sums each rank's FLOPs share, so no
replicated token or FLOP is counted twice.

- :class:`DataParallel` (``single``, ``ddp``): every rank a replica on its own batch; DDP
  all-reduces gradients when training.
- :class:`MeshParallel` (``tp``, ``fsdp``): a 2-D DeviceMesh ``(dp, tp)``, tensor-parallel peers
  adjacent (rank = dp index x tp + tp index, so a TP group sits on one node). The model family
  splits its matmuls over ``tp`` (Megatron column/row, ``torch.distributed.tensor.parallel``);
  ``fsdp`` shards parameters, gradients and optimizer state over ``dp`` with FSDP2
  ``fully_shard``. ``nproc`` is derived: tp x dp.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from b200lab.components import CheckContext, ComponentConfig


@dataclass
class ParallelismConfig(ComponentConfig):
    nproc: Optional[int] = 1  # ranks of the job (processes, one GPU each on CUDA), over all nodes
    nnodes: int = 1  # machines the job spans; each runs nproc / nnodes ranks (b200lab/launch.py)
    node_rank: Optional[int] = None  # this machine's index; None: $NODE_RANK, else $SLURM_NODEID, else 0
    rdzv_endpoint: Optional[str] = None  # host:port on node 0 for nnodes > 1; None: $B200LAB_RDZV_ENDPOINT, else $MASTER_ADDR:$MASTER_PORT


# CPU ranks (gloo, development and tests) may time-share cores: slow, still exact
CPU_RANKS_PER_CORE = 2


class ParallelStrategy:
    Config = ParallelismConfig
    tensor_parallel: int = 1  # ranks one replica's matmuls are split over
    sequence_parallel: bool = False
    # True when the wrapper keeps float32 parameters the optimizer steps (FSDP2 mixed precision):
    # the precision recipe's separate master copy is then not made
    keeps_master_weights: bool = False

    def __init__(self, cfg, rank: int, world_size: int, device: torch.device):
        self.cfg = cfg
        self.rank, self.world_size, self.device = rank, world_size, device
        self.mesh = None
        self.effective: dict = {"name": cfg.name, "ranks": world_size}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        from b200lab.config import available_ranks

        if cfg.nproc is None or cfg.nproc < 1:
            return [f"parallelism.nproc={cfg.nproc}: must be a positive integer"]
        if cfg.nnodes < 1 or cfg.nproc % cfg.nnodes:
            return [f"parallelism.nnodes={cfg.nnodes} must be a positive integer that divides parallelism.nproc={cfg.nproc}"]
        if cfg.nnodes > 1:
            from b200lab.launch import rendezvous

            try:
                rendezvous(cfg)
            except ValueError as exc:
                return [str(exc)]
        per_node = cfg.nproc // cfg.nnodes
        limit = available_ranks(ctx.device)
        nodes = f" per node (parallelism.nnodes={cfg.nnodes})" if cfg.nnodes > 1 else ""
        if ctx.device == "cuda" and per_node > limit:
            return [f"parallelism.nproc={cfg.nproc} exceeds the {limit} GPUs visible on this machine{nodes}"]
        if ctx.device == "cpu" and per_node > CPU_RANKS_PER_CORE * limit:
            return [f"parallelism.nproc={cfg.nproc} exceeds the {CPU_RANKS_PER_CORE * limit} gloo ranks this machine's {limit} CPU cores "
                    f"run ({CPU_RANKS_PER_CORE} per core){nodes}"]
        return []

    def setup(self) -> None:
        """After the process group exists: build the mesh."""

    def data_shard(self) -> int:
        """Ranks with the same shard read the same samples; their tokens count once."""
        return self.rank

    def flops_share(self) -> float:
        """The fraction of one replica's model FLOPs this rank does."""
        return 1.0

    def tp_mesh(self):
        """The 1-D mesh a model's tensor-parallel plan splits over; None without tensor parallel."""
        return None

    def wrap(self, model: torch.nn.Module, training: bool) -> torch.nn.Module:
        return model

    def no_sync(self, model: torch.nn.Module, last_micro_batch: bool, every_micro_batch: bool):
        """Context for one micro-batch's backward: gradient sync deferred unless this is the last
        micro-batch or the caller needs every micro-batch reduced (float32 master sums)."""
        return contextlib.nullcontext()

    def reduces_master_grads(self) -> bool:
        """True when the strategy reduces the float32 master gradients once per optimizer step
        (:meth:`reduce_masters_in_backward`) instead of each micro-batch's 16-bit gradients."""
        return False

    def reduce_masters_in_backward(self, model: torch.nn.Module, master) -> None:
        raise NotImplementedError


@dataclass
class DataParallelConfig(ParallelismConfig):
    # with float32 master weights and grad_accum > 1: micro_batch all-reduces every micro-batch's
    # 16-bit gradients (DDP's own hooks); optimizer_step sums micro-batches in the float32 masters
    # under no_sync and all-reduces those once per optimizer step
    grad_sync: str = "micro_batch"
    # DDP's gradient bucket size; under torch.compile each bucket is also a graph break (dynamo's
    # DDPOptimizer splits the graph at bucket boundaries so reductions overlap the backward). 200, not
    # DDP's 25: gpt_1b on 2 x H100 scales 0.975 at 200 and 0.965 at 25 (docs/measurements/2026-11-26-parallel-overlap)
    bucket_cap_mb: float = 200.0


GRAD_SYNC = ("micro_batch", "optimizer_step")


class DataParallel(ParallelStrategy):
    """Every rank its own batch; DistributedDataParallel all-reduces gradients when training."""

    Config = DataParallelConfig

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if cfg.grad_sync not in GRAD_SYNC:
            problems.append(f"parallelism.grad_sync={cfg.grad_sync!r}: choose {' or '.join(GRAD_SYNC)}")
        if not cfg.bucket_cap_mb > 0:
            problems.append(f"parallelism.bucket_cap_mb={cfg.bucket_cap_mb}: must be a positive number of MiB")
        return problems

    def setup(self) -> None:
        if self.world_size > 1:
            from torch.distributed.device_mesh import init_device_mesh

            self.mesh = init_device_mesh(self.device.type, (self.world_size,), mesh_dim_names=("dp",))
        self.effective["mesh"] = {"dp": self.world_size}

    def wrap(self, model: torch.nn.Module, training: bool) -> torch.nn.Module:
        if not training or self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        self.effective["wrapper"] = "DistributedDataParallel"
        self.effective["bucket_cap_mb"] = float(self.cfg.bucket_cap_mb)
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       process_group=self.mesh.get_group("dp"), bucket_cap_mb=float(self.cfg.bucket_cap_mb))

    def no_sync(self, model, last_micro_batch: bool, every_micro_batch: bool):
        if last_micro_batch or every_micro_batch or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()

    def reduces_master_grads(self) -> bool:
        return self.world_size > 1 and self.cfg.grad_sync == "optimizer_step"

    def reduce_masters_in_backward(self, model: torch.nn.Module, master) -> None:
        """The one gradient reduction of an optimizer step, overlapped with the last micro-batch's
        backward: DDP hands each gradient bucket, as it fills, to a comm hook that adds the bucket's
        16-bit gradients to their float32 master sums (the earlier micro-batches, summed under
        no_sync) and all-reduces that float32 sum while the backward goes on. The caller then drops
        the last micro-batch's 16-bit gradients instead of accumulating them (they are in the sum)."""
        model.register_comm_hook(_MasterSum(master, self.mesh.get_group("dp"), self.world_size), _sum_into_masters_and_all_reduce)
        self.effective["grad_reduction"] = "float32 master sums, all-reduced per DDP bucket during the last micro-batch's backward"


class _MasterSum:
    """The comm hook's state: where each parameter's float32 master gradient lives."""

    def __init__(self, master, group, world_size: int):
        self.master, self.group, self.world_size = master, group, world_size


def _sum_into_masters_and_all_reduce(state: _MasterSum, bucket):  # no return annotation: DDP checks it as an object, and this module postpones annotations
    import torch.distributed as dist

    with torch.no_grad():
        sums = [state.master.master_grad(p) for p in bucket.parameters()]
        flat = torch.cat([s.reshape(-1) for s in sums])
        for part, grad in zip(flat.split([s.numel() for s in sums]), bucket.gradients()):
            part.add_(grad.reshape(-1))
        flat.div_(state.world_size)
    reduced = dist.all_reduce(flat, group=state.group, async_op=True).get_future()

    def unpack(fut) -> torch.Tensor:
        with torch.no_grad():
            for s, part in zip(sums, fut.value()[0].split([s.numel() for s in sums])):
                s.copy_(part.view_as(s))
        return bucket.buffer()  # DDP writes it into .grad; the caller drops those

    return reduced.then(unpack)


@dataclass
class MeshConfig(ParallelismConfig):
    nproc: Optional[int] = None  # derived: tp x dp (a value set here must equal it)
    tp: int = 1  # tensor-parallel ranks per replica (the model's heads, K/V heads and d_ff split over them)
    dp: int = 1  # replicas (data shards)
    fsdp: bool = False  # shard parameters, gradients and optimizer state over dp with FSDP2 fully_shard
    sequence_parallel: bool = False  # norms and residual stream sharded over the sequence between the TP regions
    reshard_after_forward: bool = True  # FSDP2: free the gathered weights after forward (ZeRO-3) or keep them for backward (ZeRO-2)
    # FSDP2 with grad_accum > 1: free the gathered weights after each micro-batch's backward, or keep
    # them (and the unsharded gradient sums) until the optimizer step's last micro-batch; with
    # reshard_after_forward=false that is one all-gather per optimizer step instead of one per micro-batch
    reshard_after_backward: bool = True
    mp_param_dtype: str = "auto"  # FSDP2 MixedPrecisionPolicy compute dtype; auto: the precision's parameter dtype
    mp_reduce_dtype: str = "float32"  # FSDP2 gradient reduce-scatter dtype
    # FSDP2 training of 16-bit parameters: float32 shards the optimizer steps (FSDP2's own master
    # weights), or "param" to keep the shards 16-bit (the precision's master_dtype then decides:
    # float32 masters of the shards, or none with precision.master_dtype=none)
    sharded_dtype: str = "float32"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


class MeshParallel(ParallelStrategy):
    """Tensor parallel over ``tp`` and data parallel over ``dp`` on one DeviceMesh; FSDP2 over dp."""

    Config = MeshConfig

    def __init__(self, cfg, rank: int, world_size: int, device: torch.device):
        super().__init__(cfg, rank, world_size, device)
        self.tensor_parallel, self.sequence_parallel = int(cfg.tp), bool(cfg.sequence_parallel)
        self.effective.update(mesh={"dp": int(cfg.dp), "tp": int(cfg.tp)})

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = [f"parallelism.{k}={cfg[k]}: must be a positive integer" for k in ("tp", "dp") if cfg[k] is None or cfg[k] < 1]
        if problems:
            cfg.nproc = cfg.nproc or 1
            return problems
        derived = cfg.tp * cfg.dp
        if cfg.nproc is not None and cfg.nproc != derived:
            return [f"parallelism.nproc={cfg.nproc} does not equal parallelism.tp x parallelism.dp = {cfg.tp} x {cfg.dp} = {derived} "
                    "(leave nproc out: it is derived)"]
        cfg.nproc = derived  # the completed config records the ranks the job runs
        problems += super().validate(cfg, ctx)
        if cfg.tp > 1:
            from b200lab.models.base import tensor_parallel_problems

            problems += tensor_parallel_problems(ctx.cfg.model, cfg.tp, cfg.sequence_parallel, ctx.cfg.seq.len)
        elif cfg.sequence_parallel:
            problems.append("parallelism.sequence_parallel=true needs parallelism.tp > 1 (it shards between tensor-parallel regions)")
        precision = str((ctx.cfg.get("precision") or {}).get("name", ""))
        if cfg.tp > 1 and precision.startswith("fp8"):
            problems.append(f"precision={precision} with parallelism.tp={cfg.tp}: the FP8 recipes replace nn.Linear with Transformer "
                            "Engine or torchao modules, which the tensor-parallel plan (ColwiseParallel/RowwiseParallel on nn.Linear) "
                            "cannot split; FP8 under tensor parallel is not built (docs/KNOWN_GAPS.md). Use bf16 with tp, or FP8 with fsdp/ddp")
        if cfg.tp > 1 and cfg.dp > 1 and ctx.training and not cfg.fsdp:
            problems.append(f"parallelism.tp={cfg.tp} with parallelism.dp={cfg.dp} trains its replicas through FSDP2 over dp: "
                            "set parallelism.fsdp=true")
        if cfg.nnodes > 1 and cfg.tp > cfg.nproc // cfg.nnodes:
            problems.append(f"parallelism.tp={cfg.tp} exceeds the {cfg.nproc // cfg.nnodes} ranks per node: a tensor-parallel "
                            "group must stay inside one node")
        if cfg.sharded_dtype not in ("float32", "param"):
            problems.append(f"parallelism.sharded_dtype={cfg.sharded_dtype!r}: choose float32 or param")
        for key in ("mp_param_dtype", "mp_reduce_dtype"):
            allowed = ("auto", *DTYPES) if key == "mp_param_dtype" else tuple(DTYPES)
            if cfg[key] not in allowed:
                problems.append(f"parallelism.{key}={cfg[key]!r}: choose one of {', '.join(allowed)}")
        return problems

    def setup(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        tp, dp = int(self.cfg.tp), int(self.cfg.dp)
        if tp * dp != self.world_size:
            raise RuntimeError(f"parallelism.tp x parallelism.dp = {tp * dp} but the job has {self.world_size} ranks")
        if self.world_size > 1:
            self.mesh = init_device_mesh(self.device.type, (dp, tp), mesh_dim_names=("dp", "tp"))

    def data_shard(self) -> int:
        return self.rank // int(self.cfg.tp)

    def flops_share(self) -> float:
        # every matmul (attention heads, MLP, output head) is split evenly over the TP group
        return 1.0 / int(self.cfg.tp)

    def tp_mesh(self):
        return self.mesh["tp"] if self.mesh is not None and self.tensor_parallel > 1 else None

    def wrap(self, model: torch.nn.Module, training: bool) -> torch.nn.Module:
        if self.tensor_parallel > 1:
            self.effective["tensor_parallel"] = {"ranks": self.tensor_parallel, "sequence_parallel": self.sequence_parallel}
        if not self.cfg.fsdp:
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = self.mesh["dp"] if self.mesh is not None else init_device_mesh(self.device.type, (1,), mesh_dim_names=("dp",))
        param_dtype = next(model.parameters()).dtype
        mp = None
        if training:
            compute = param_dtype if self.cfg.mp_param_dtype == "auto" else DTYPES[self.cfg.mp_param_dtype]
            if param_dtype in (torch.bfloat16, torch.float16) and self.cfg.sharded_dtype == "float32":
                # FSDP2's recipe: float32 sharded parameters are the master weights the optimizer
                # steps; each forward gathers them cast to the compute dtype
                model.float()
                self.keeps_master_weights = True
            mp = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=DTYPES[self.cfg.mp_reduce_dtype])
        kwargs = {"mesh": mesh, "reshard_after_forward": bool(self.cfg.reshard_after_forward), **({"mp_policy": mp} if mp else {})}
        # the blocks take their inputs as the root made them: FSDP2 in torch 2.11 does not cast a
        # block's inputs again when activation checkpointing recomputes it in backward, so a cast
        # here (the float32 rotary tables to bf16) would make the recompute differ from the forward
        block_kwargs = {**kwargs, "mp_policy": dataclasses.replace(mp, cast_forward_inputs=False)} if mp else kwargs
        for block in _blocks(model):
            fully_shard(block, **block_kwargs)
        fully_shard(model, **kwargs)
        self.effective["wrapper"] = "FSDP2 fully_shard"
        self.effective["fsdp"] = {"reshard_after_forward": bool(self.cfg.reshard_after_forward),
                                  "reshard_after_backward": bool(self.cfg.reshard_after_backward),
                                  "param_dtype": str(mp.param_dtype).removeprefix("torch.") if mp else str(param_dtype).removeprefix("torch."),
                                  "reduce_dtype": str(mp.reduce_dtype).removeprefix("torch.") if mp else None,
                                  "sharded_param_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                                  "units": len(_blocks(model)) + 1}
        return model

    def no_sync(self, model, last_micro_batch: bool, every_micro_batch: bool):
        if not hasattr(model, "set_requires_gradient_sync"):
            return contextlib.nullcontext()
        sync = last_micro_batch or every_micro_batch
        model.set_requires_gradient_sync(sync)
        if not self.cfg.reshard_after_backward:
            model.set_reshard_after_backward(sync)  # keep the gathered weights until the step's last micro-batch
        return contextlib.nullcontext()


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated layers each FSDP unit wraps (``model.blocks`` for the GPT families)."""
    blocks = getattr(model, "blocks", None)
    return list(blocks) if isinstance(blocks, torch.nn.ModuleList) else []
