"""``parallelism=single`` and ``ddp``: every rank its own batch; DDP all-reduces gradients when
training. With ``parallelism.expert_parallel`` each rank keeps only its experts (built on the meta
device, then materialised), which DDP leaves out of its all-reduce."""

from __future__ import annotations

import contextlib

import torch

from b200lab.parallel.base import ParallelStrategy
from b200lab.parallel.config.data_parallel import DataParallelConfig


class DataParallel(ParallelStrategy):
    """Every rank its own batch; DistributedDataParallel all-reduces gradients when training."""

    Config = DataParallelConfig
    wraps_meta_model = False  # DDP broadcasts rank 0's materialised weights

    def __init__(self, cfg, rank: int, world_size: int, device: torch.device):
        super().__init__(cfg, rank, world_size, device)
        if int(cfg.get("expert_parallel") or 1) > 1:
            self.build = "auto"  # meta: each rank materialises only its own experts

    def setup(self) -> None:
        if self.world_size > 1:
            from torch.distributed.device_mesh import init_device_mesh

            self.mesh = init_device_mesh(self.device.type, (self.world_size,), mesh_dim_names=("dp",))
        self.effective["mesh"] = {"dp": self.world_size}
        self.setup_expert_parallel()

    def shards_parameters(self) -> bool:
        return self.expert_parallel > 1

    def wrap(self, model: torch.nn.Module, training: bool) -> torch.nn.Module:
        if not training or self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        self.effective["wrapper"] = "DistributedDataParallel"
        self.effective["bucket_cap_mb"] = float(self.cfg.bucket_cap_mb)
        if self.expert_parallel > 1:
            from b200lab.parallel.expert import expert_parameters

            # each rank owns its experts: their gradients are complete on their owner, not all-reduced
            owned = sorted(expert_parameters(model))
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, owned)
            self.effective["ddp_ignores"] = f"{len(owned)} expert weights (each rank owns its experts)"
        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            process_group=self.mesh.get_group("dp"),
            bucket_cap_mb=float(self.cfg.bucket_cap_mb),
        )

    def no_sync(self, model, last_micro_batch: bool, every_micro_batch: bool):
        if last_micro_batch or every_micro_batch or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()

    def reduces_master_grads(self) -> bool:
        if self.expert_parallel > 1 and self.cfg.grad_sync == "optimizer_step":
            # the comm hook sums DDP's buckets only: the experts' gradients would be dropped with the
            # rest of the last micro-batch's 16-bit gradients
            self.effective["grad_sync"] = "micro_batch (expert parallel: the experts are in no DDP bucket)"
            return False
        return self.world_size > 1 and self.cfg.grad_sync == "optimizer_step"

    def reduce_masters_in_backward(self, model: torch.nn.Module, master) -> None:
        """The one gradient reduction of an optimizer step, overlapped with the last micro-batch's
        backward: DDP hands each gradient bucket, as it fills, to a comm hook that adds the bucket's
        16-bit gradients to their float32 master sums (the earlier micro-batches, summed under
        no_sync) and all-reduces that float32 sum while the backward goes on. The caller then drops
        the last micro-batch's 16-bit gradients instead of accumulating them (they are in the sum)."""
        model.register_comm_hook(
            _MasterSum(master, self.mesh.get_group("dp"), self.world_size), _sum_into_masters_and_all_reduce
        )
        self.effective["grad_reduction"] = (
            "float32 master sums, all-reduced per DDP bucket during the last micro-batch's backward"
        )


class _MasterSum:
    """The comm hook's state: where each parameter's float32 master gradient lives."""

    def __init__(self, master, group, world_size: int):
        self.master, self.group, self.world_size = master, group, world_size


def _sum_into_masters_and_all_reduce(
    state: _MasterSum, bucket
):  # no return annotation: DDP checks it as an object, and this module postpones annotations
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
