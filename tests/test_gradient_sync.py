"""Gradient synchronisation over two real gloo ranks (spawned processes).

DDP with float32 master weights and ``grad_sync=optimizer_step``: each rank on its own data shard,
bf16 weights, 3 micro-batches per optimizer step. The optimizer must see, on both ranks, the mean
over ranks of each rank's float32 sum of its bf16 micro-batch gradients: checked against a float64
sum computed from a plain copy of the model, outside DDP and outside the comm hook that does the
reduction. FSDP2: keeping the gathered weights across micro-batches issues one all-gather per unit
per step and gives the default layout's update; activation checkpointing trains as without it."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

from b200lab.core.registry import complete
from support import free_port
from tiny_models import train_cfg

ACCUM = 3


pytestmark = pytest.mark.e2e  # spawns two gloo ranks


def _rank_main(rank: int, port: int, seed: int, out: dict) -> None:
    import torch.distributed as dist
    import torch.nn.functional as F

    from b200lab.parallel.data_parallel import DataParallel
    from b200lab.workloads.base import RankContext
    from b200lab.workloads.train import Train

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        cfg = train_cfg({"name": "bf16", "compute_dtype": "bfloat16", "grad_accum_dtype": "float32"}, grad_accum=ACCUM)
        cfg.run.seed = seed
        cfg.parallelism = complete(
            "parallelism",
            {
                "_target_": "b200lab.parallel.data_parallel.DataParallel",
                "name": "ddp",
                "nproc": 2,
                "grad_sync": "optimizer_step",
            },
        )
        device = torch.device("cpu")
        strategy = DataParallel(cfg.parallelism, rank, 2, device)
        strategy.setup()
        work = Train(cfg.workload, RankContext(cfg=cfg, device=device, strategy=strategy, rank=rank, world_size=2))
        work.setup()

        plain = copy.deepcopy(work.model.module)  # the same bf16 weights, no DDP, no hook
        local = [torch.zeros_like(p, dtype=torch.float64) for p in plain.parameters()]
        for x, y in zip(work.inputs, work.targets):
            plain.zero_grad(set_to_none=True)
            (F.cross_entropy(plain(x).float().flatten(0, 1), y.flatten()) / ACCUM).backward()
            for s, p in zip(local, plain.parameters()):
                s += p.grad.double()

        seen = []
        work.optimizer.register_step_pre_hook(
            lambda opt, a, k: seen.append([m.grad.clone() for m in opt.param_groups[0]["params"]])
        )
        work.step()
        out[rank] = {
            "local": local,
            "seen": seen[0],
            "masters": [m.detach().clone() for m in work.master.masters],
            "effective": {**work.effective, **strategy.effective},
            "grads_left": [p.grad is None for p in work.model.parameters()],
        }
    finally:
        dist.destroy_process_group()


def test_one_float32_reduction_per_step_averages_every_ranks_micro_batch_sums():
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_rank_main, args=(free_port(), int(torch.seed() % 10_000), out), nprocs=2, join=True)
    r0, r1 = out[0], out[1]
    assert r0["effective"]["ddp_sync"] == "once per step (float32 master gradients, in the last backward)"
    assert "during the last micro-batch's backward" in r0["effective"]["grad_reduction"]

    expected = [(a + b) / 2 for a, b in zip(r0["local"], r1["local"])]
    # the ranks read different data: their local sums differ, so a missing reduction would show
    assert max(float((a - b).abs().max()) for a, b in zip(r0["local"], r1["local"])) > 1e-3
    for rank in (r0, r1):
        assert {g.dtype for g in rank["seen"]} == {torch.float32}
        worst = max(float((g.double() - e).abs().max() / e.abs().max()) for g, e in zip(rank["seen"], expected))
        assert worst < 1e-6, worst
        assert all(rank["grads_left"])  # the last micro-batch's bf16 gradients were dropped, not left for the next step
    for a, b in zip(r0["masters"], r1["masters"]):
        assert torch.equal(a, b)  # one reduced gradient, one AdamW step: the replicas stay identical


class _OpCounter(TorchDispatchMode):
    """Counts every operator dispatched while it is active (FSDP2's collectives are c10d ops)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _fsdp_rank_main(rank: int, port: int, seed: int, out: dict) -> None:
    import torch.distributed as dist

    from b200lab.parallel.mesh import MeshParallel
    from b200lab.workloads.base import RankContext
    from b200lab.workloads.train import Train

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for keep in (False, True):
            cfg = train_cfg(
                {"name": "bf16", "compute_dtype": "bfloat16", "grad_accum_dtype": "float32"}, grad_accum=ACCUM
            )
            cfg.run.seed = seed
            cfg.parallelism = complete(
                "parallelism",
                {
                    "_target_": "b200lab.parallel.mesh.MeshParallel",
                    "name": "fsdp",
                    "tp": 1,
                    "dp": 2,
                    "fsdp": True,
                    "reshard_after_forward": not keep,
                    "reshard_after_backward": not keep,
                },
            )
            device = torch.device("cpu")
            strategy = MeshParallel(cfg.parallelism, rank, 2, device)
            strategy.setup()
            torch.manual_seed(seed)  # the same initial weights in both layouts
            work = Train(cfg.workload, RankContext(cfg=cfg, device=device, strategy=strategy, rank=rank, world_size=2))
            work.setup()
            with _OpCounter() as ops:
                work.step()
            counts = ops.counts
            out[(rank, keep)] = {
                "params": [p.full_tensor().detach().clone() for p in work.model.parameters()],
                "all_gathers": sum(v for k, v in counts.items() if "all_gather" in k),
                "reduce_scatters": sum(v for k, v in counts.items() if "reduce_scatter" in k),
                "units": strategy.effective["fsdp"]["units"],
                "loss": float(work.losses[-1]),
            }
    finally:
        dist.destroy_process_group()


def test_fsdp_keeps_gathered_weights_across_micro_batches_with_the_same_update():
    """parallelism.reshard_after_forward=false reshard_after_backward=false: one all-gather per
    FSDP unit per optimizer step (instead of one per micro-batch's forward and backward), one
    reduce-scatter per unit either way, and the same updated weights as the default layout."""
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_fsdp_rank_main, args=(free_port(), int(torch.seed() % 10_000), out), nprocs=2, join=True)
    for rank in (0, 1):
        default, kept = out[(rank, False)], out[(rank, True)]
        units = kept["units"]
        assert kept["all_gathers"] == units and default["all_gathers"] == 2 * ACCUM * units, (
            kept["all_gathers"],
            default["all_gathers"],
        )
        assert kept["reduce_scatters"] == default["reduce_scatters"] == units
        assert kept["loss"] == default["loss"]
        for a, b in zip(default["params"], kept["params"]):
            assert torch.equal(a, b)
        assert len(default["params"]) > 0


def _fsdp_checkpointed_rank_main(rank: int, port: int, seed: int, out: dict) -> None:
    import torch.distributed as dist

    from b200lab.parallel.mesh import MeshParallel
    from b200lab.workloads.base import RankContext
    from b200lab.workloads.train import Train

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        losses = {}
        for mode in ("none", "full"):
            cfg = train_cfg({"name": "bf16", "compute_dtype": "bfloat16", "grad_accum_dtype": "float32"}, grad_accum=2)
            cfg.run.seed = seed
            cfg.model.checkpointing = mode
            cfg.parallelism = complete(
                "parallelism",
                {"_target_": "b200lab.parallel.mesh.MeshParallel", "name": "fsdp", "tp": 1, "dp": 2, "fsdp": True},
            )
            device = torch.device("cpu")
            strategy = MeshParallel(cfg.parallelism, rank, 2, device)
            strategy.setup()
            torch.manual_seed(seed)
            work = Train(cfg.workload, RankContext(cfg=cfg, device=device, strategy=strategy, rank=rank, world_size=2))
            work.setup()
            work.step()
            work.step()
            losses[mode] = [float(v) for v in work.losses]
        out[rank] = losses
    finally:
        dist.destroy_process_group()


def test_fsdp_trains_a_checkpointed_model_as_the_plain_one():
    """FSDP2 with float32 shards computing in bf16, model.checkpointing=full: the blocks' recompute
    in backward sees the same dtypes as their forward (FSDP2 skips its input cast there), and two
    steps give the losses of the same run without checkpointing."""
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_fsdp_checkpointed_rank_main, args=(free_port(), int(torch.seed() % 10_000), out), nprocs=2, join=True)
    for rank in (0, 1):
        assert len(out[rank]["full"]) == 2 and out[rank]["full"] == out[rank]["none"]
