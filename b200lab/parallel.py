"""Parallelism strategies: the class ``parallelism._target_`` names.

A strategy owns the device mesh, how the model is wrapped (through the model family's
``parallelize`` hook), which data shard each rank reads, the share of the model's FLOPs a rank
does, and when gradients are synchronised. The aggregator counts tokens once per distinct data
shard (a tensor-parallel group is one replica) and sums each rank's FLOPs share, so no
replicated token or FLOP is counted twice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from b200lab.components import CheckContext, ComponentConfig


@dataclass
class ParallelismConfig(ComponentConfig):
    nproc: int = 1  # ranks of the job (processes, one GPU each on CUDA)


class ParallelStrategy:
    Config = ParallelismConfig

    def __init__(self, cfg, rank: int, world_size: int, device: torch.device):
        self.cfg = cfg
        self.rank, self.world_size, self.device = rank, world_size, device
        self.mesh = None
        self.effective: dict = {"name": cfg.name, "ranks": world_size}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        from b200lab.config import available_ranks

        if cfg.nproc < 1:
            return [f"parallelism.nproc={cfg.nproc}: must be a positive integer"]
        limit = available_ranks(ctx.device)
        if cfg.nproc > limit:
            what = "GPUs visible" if ctx.device == "cuda" else "CPU cores"
            return [f"parallelism.nproc={cfg.nproc} exceeds the {limit} {what} on this machine"]
        return []

    def setup(self) -> None:
        """After the process group exists: build the mesh."""

    def data_shard(self) -> int:
        """Ranks with the same shard read the same samples; their tokens count once."""
        return self.rank

    def flops_share(self) -> float:
        """The fraction of one replica's model FLOPs this rank does."""
        return 1.0

    def wrap(self, model: torch.nn.Module, training: bool) -> torch.nn.Module:
        return model

    def no_sync(self, model: torch.nn.Module, last_micro_batch: bool, every_micro_batch: bool):
        """Context for one micro-batch's backward: gradient sync deferred unless this is the last
        micro-batch or the caller needs every micro-batch reduced (float32 master sums)."""
        return contextlib.nullcontext()


class DataParallel(ParallelStrategy):
    """Every rank its own batch; DistributedDataParallel all-reduces gradients when training."""

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
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       process_group=self.mesh.get_group("dp"))

    def no_sync(self, model, last_micro_batch: bool, every_micro_batch: bool):
        if last_micro_batch or every_micro_batch or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()
