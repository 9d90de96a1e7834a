"""``parallelism=tp``, ``fsdp``, ``tp_fsdp``: tensor parallel over ``tp`` and data parallel over
``dp`` on one DeviceMesh; FSDP2 over dp."""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from b200lab.parallel.base import ParallelStrategy
from b200lab.parallel.config.mesh import MeshConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


class MeshParallel(ParallelStrategy):
    """Tensor parallel over ``tp`` and data parallel over ``dp`` on one DeviceMesh; FSDP2 over dp."""

    Config = MeshConfig

    def __init__(self, cfg, rank: int, world_size: int, device: torch.device):
        super().__init__(cfg, rank, world_size, device)
        self.tensor_parallel, self.sequence_parallel = int(cfg.tp), bool(cfg.sequence_parallel)
        self.effective.update(mesh={"dp": int(cfg.dp), "tp": int(cfg.tp)})
        self.build = str(cfg.get("build", "full"))  # a config from before the option built in full

    def setup(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        tp, dp = int(self.cfg.tp), int(self.cfg.dp)
        if tp * dp != self.world_size:
            raise RuntimeError(f"parallelism.tp x parallelism.dp = {tp * dp} but the job has {self.world_size} ranks")
        if self.world_size > 1:
            self.mesh = init_device_mesh(self.device.type, (dp, tp), mesh_dim_names=("dp", "tp"))
        self.setup_expert_parallel()

    def data_shard(self) -> int:
        return self.rank // int(self.cfg.tp)

    def flops_share(self) -> float:
        # every matmul (attention heads, MLP, output head) is split evenly over the TP group
        return 1.0 / int(self.cfg.tp)

    def shards_parameters(self) -> bool:
        return self.tensor_parallel > 1 or bool(self.cfg.fsdp) or self.expert_parallel > 1

    def tp_mesh(self):
        return self.mesh["tp"] if self.mesh is not None and self.tensor_parallel > 1 else None

    def wrap(self, model: torch.nn.Module, training: bool) -> torch.nn.Module:
        if self.tensor_parallel > 1:
            self.effective["tensor_parallel"] = {
                "ranks": self.tensor_parallel,
                "sequence_parallel": self.sequence_parallel,
            }
        if not self.cfg.fsdp:
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = (
            self.mesh["dp"]
            if self.mesh is not None
            else init_device_mesh(self.device.type, (1,), mesh_dim_names=("dp",))
        )
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
        # expert parallel: each rank owns its experts, so FSDP2 neither shards nor reduces them
        from b200lab.parallel.expert import expert_parameters

        owned = {p for name, p in model.named_parameters() if name in expert_parameters(model)}
        kwargs = {
            "mesh": mesh,
            "reshard_after_forward": bool(self.cfg.reshard_after_forward),
            **({"mp_policy": mp} if mp else {}),
            **({"ignored_params": owned} if owned else {}),
        }
        # the blocks take their inputs as the root made them: FSDP2 in torch 2.11 does not cast a
        # block's inputs again when activation checkpointing recomputes it in backward, so a cast
        # here (the float32 rotary tables to bf16) would make the recompute differ from the forward
        block_kwargs = {**kwargs, "mp_policy": dataclasses.replace(mp, cast_forward_inputs=False)} if mp else kwargs
        for block in _blocks(model):
            fully_shard(block, **block_kwargs)
        fully_shard(model, **kwargs)
        self.effective["wrapper"] = "FSDP2 fully_shard"
        self.effective["fsdp"] = {
            "reshard_after_forward": bool(self.cfg.reshard_after_forward),
            "reshard_after_backward": bool(self.cfg.reshard_after_backward),
            "param_dtype": str(mp.param_dtype).removeprefix("torch.")
            if mp
            else str(param_dtype).removeprefix("torch."),
            "reduce_dtype": str(mp.reduce_dtype).removeprefix("torch.") if mp else None,
            "sharded_param_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "units": len(_blocks(model)) + 1,
            **({"ignored_params": f"{len(owned)} expert weights (each rank owns its experts)"} if owned else {}),
        }
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
