"""The parallelism-strategy contract: the class ``parallelism._target_`` names extends it.

A strategy owns the device mesh, how the model is wrapped (through the model family's
``parallelize`` hook), which data shard each rank reads, the share of the model's FLOPs a rank
does, and when gradients are synchronised. The aggregator counts tokens once per distinct data
shard (a tensor-parallel group is one replica) and sums each rank's FLOPs share, so no
replicated token or FLOP is counted twice.
"""

from __future__ import annotations

import contextlib

import torch

from b200lab.parallel.config.base import ParallelismConfig


class ParallelStrategy:
    Config = ParallelismConfig
    tensor_parallel: int = 1  # ranks one replica's matmuls are split over
    sequence_parallel: bool = False
    # True when the wrapper keeps float32 parameters the optimizer steps (FSDP2 mixed precision):
    # the precision recipe's separate master copy is then not made
    keeps_master_weights: bool = False
    # parallelism.build ("auto", "meta", "full") where the strategy has the option; None: every rank
    # builds the whole model, nothing to choose
    build: str | None = None
    # the wrapper can take a model whose parameters are still on the meta device (FSDP2 can; DDP
    # broadcasts rank 0's weights, so a meta build wraps after materialising)
    wraps_meta_model: bool = True
    expert_parallel: int = 1  # ranks each MoE layer's experts are split over (setup_expert_parallel)

    def __init__(self, cfg, rank: int, world_size: int, device: torch.device):
        self.cfg = cfg
        self.rank, self.world_size, self.device = rank, world_size, device
        self.mesh = None
        self.effective: dict = {"name": cfg.name, "ranks": world_size}

    def setup(self) -> None:
        """After the process group exists: build the mesh."""

    def setup_expert_parallel(self) -> None:
        """With ``parallelism.expert_parallel`` > 1 (validated equal to the data-parallel ranks,
        every rank of the job): a process group of its own for the experts' all-to-alls, so they
        never interleave with DDP's or FSDP2's collectives on one communicator."""
        ep = int(self.cfg.get("expert_parallel") or 1)
        if ep == 1:
            return
        import torch.distributed as dist

        if ep != self.world_size:
            raise RuntimeError(f"parallelism.expert_parallel={ep} but the job has {self.world_size} ranks")
        self.expert_parallel = ep
        self._expert_group = dist.new_group(list(range(self.world_size)))
        self.effective["expert_parallel"] = {"ranks": ep, "group": "every rank (its own communicator)"}

    def expert_shard(self, n_experts: int):
        """This rank's :class:`~b200lab.parallel.expert.ExpertShard` of ``n_experts`` experts, or
        None without expert parallel."""
        if self.expert_parallel == 1:
            return None
        from b200lab.parallel.expert import ExpertShard

        return ExpertShard(self._expert_group, self.rank, self.expert_parallel, n_experts)

    def data_shard(self) -> int:
        """Ranks with the same shard read the same samples; their tokens count once."""
        return self.rank

    def flops_share(self) -> float:
        """The fraction of one replica's model FLOPs this rank does."""
        return 1.0

    def shards_parameters(self) -> bool:
        """True when a rank holds only part of the parameters (tensor parallel, FSDP2)."""
        return False

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
