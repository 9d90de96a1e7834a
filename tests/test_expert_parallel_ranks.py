"""Expert parallel on 2 real gloo ranks (spawned processes) against one rank: each rank builds the
MoE under ``parallelism=ddp parallelism.expert_parallel=2`` (on the meta device, then only its
experts materialised), runs forward and backward on its half of a fresh random global batch, and
its weights, loss and every gradient are held against an independent one-rank build (this
process, same seed) on the whole batch: the same weights exactly, the mean of the ranks' losses
equal to the one-rank loss, the replicated gradients (DDP's mean) and the rank's experts'
gradients equal to the one-rank gradients. The router's load-balancing and z-losses are on, so
the group's loads in the balancing loss are checked too. In float64 the experts run the loop
reference, in float32 the grouped GEMM; one case routes no token to rank 1's experts (it receives
no rows, and its backward must still run the reverse all-to-all)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from b200lab.core.registry import complete
from support import free_port
from tiny_models import TINY_MOE

pytestmark = pytest.mark.e2e  # spawns gloo ranks

WORLD, BATCH, SEQ = 2, 2, 8
MODEL = {**TINY_MOE, "aux_loss_coef": 0.1, "z_loss_coef": 0.01}
PRECISIONS = {
    "float64": {"name": "fp64", "compute_dtype": "float64"},
    "float32": {"name": "fp32", "compute_dtype": "float32"},
}
TOLERANCE = {"float64": 1e-10, "float32": 2e-5}
IDLE_RANK_1 = [0.0, 0.0, -10000.0, -10000.0]  # experts 2 and 3 (rank 1's) never chosen


def job_cfg(seed: int, dtype: str, selection_bias: list | None, expert_parallel: bool):
    parallelism = {"_target_": "b200lab.parallel.data_parallel.DataParallel", "name": "single"}
    if expert_parallel:
        parallelism.update(name="ddp", nproc=WORLD, expert_parallel=WORLD)
    precision = {"_target_": "b200lab.precision.autocast.AutocastPrecision", **PRECISIONS[dtype]}
    return OmegaConf.create(
        {
            "model": complete("model", {**MODEL, "selection_bias": selection_bias}),
            "precision": complete("precision", precision),
            "attention": complete("attention", {"_target_": "b200lab.attention.base.MathAttention", "name": "math"}),
            "parallelism": complete("parallelism", parallelism),
            "compile": {"name": "none", "mode": None, "fullgraph": False},
            "seq": {"name": "t", "len": SEQ, "batch": BATCH},
            "run": {"seed": seed},
        }
    )


def global_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1)
    data = torch.randint(0, MODEL["vocab_size"], (WORLD * BATCH, SEQ + 1), generator=g)
    return data[:, :-1], data[:, 1:]


def step(built, inputs, targets) -> tuple[float, dict, dict]:
    """(loss, weights, gradients) of one forward and backward, under the plain parameter names."""
    from b200lab.precision.base import unwrap

    outputs = built.model(inputs)
    loss = built.family.loss(outputs, targets)
    loss.backward()
    named = list(unwrap(built.model).named_parameters())
    return (
        float(loss.detach()),
        {n: p.detach().clone() for n, p in named},
        {n: p.grad.detach().clone() for n, p in named},
    )


def one_rank(seed: int, dtype: str, selection_bias) -> tuple[float, dict, dict]:
    from b200lab.core.registry import instantiate
    from b200lab.workloads.base import RankContext, build_model

    cfg = job_cfg(seed, dtype, selection_bias, expert_parallel=False)
    device = torch.device("cpu")
    strategy = instantiate("parallelism", cfg.parallelism, 0, 1, device)
    built = build_model(RankContext(cfg=cfg, device=device, strategy=strategy), training=True, compile_model=False)
    built.model.train()
    return step(built, *global_batch(seed))


def _rank_main(rank: int, port: int, cases: list, out: dict) -> None:
    import torch.distributed as dist

    from b200lab.core.registry import instantiate
    from b200lab.workloads.base import RankContext, build_model, split_meta_model

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for seed, dtype, selection_bias in cases:
            cfg = job_cfg(seed, dtype, selection_bias, expert_parallel=True)
            device = torch.device("cpu")
            strategy = instantiate("parallelism", cfg.parallelism, rank, WORLD, device)
            strategy.setup()
            ctx = RankContext(cfg=cfg, device=device, strategy=strategy, rank=rank, world_size=WORLD)
            precision = instantiate("precision", cfg.precision, "cpu", True)
            attention = instantiate("attention", cfg.attention, "cpu")
            meta = split_meta_model(ctx, precision, attention, training=True)
            before = {n: (p.is_meta, tuple(p.shape)) for n, p in meta.named_parameters()}
            built = build_model(ctx, training=True, compile_model=False)
            built.model.train()
            inputs, targets = (t[rank * BATCH : (rank + 1) * BATCH] for t in global_batch(seed))
            loss, weights, grads = step(built, inputs, targets)
            out[(seed, dtype, rank)] = {
                "before": before,
                "loss": loss,
                "weights": weights,
                "grads": grads,
                "wrapper": type(built.model).__name__,
                "effective": dict(strategy.effective),
            }
    finally:
        dist.destroy_process_group()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


EXPERTS = ("mlp.experts.up", "mlp.experts.down")


CASES = [("float64", None), ("float64", IDLE_RANK_1), ("float32", None)]  # float64: the loop; float32: grouped


def test_two_expert_parallel_ranks_match_one_rank():
    seed = int(torch.seed() % 10_000)
    runs = [(seed + i, dtype, bias) for i, (dtype, bias) in enumerate(CASES)]
    references = {(s, dtype): one_rank(s, dtype, bias) for s, dtype, bias in runs}
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_rank_main, args=(free_port(), runs, out), nprocs=WORLD, join=True)
    out = dict(out)
    for s, dtype, bias in runs:
        ref_loss, ref_weights, ref_grads = references[(s, dtype)]
        tol, what = TOLERANCE[dtype], f"{dtype} bias={bias} seed={s}"
        ranks = [out[(s, dtype, r)] for r in range(WORLD)]
        # the objective: DDP's mean over ranks of each rank's loss is the one-rank loss
        assert sum(r["loss"] for r in ranks) / WORLD == pytest.approx(ref_loss, rel=tol), what
        for rank, r in enumerate(ranks):
            assert r["wrapper"] == "DistributedDataParallel" and r["effective"]["build"] == "meta", r["effective"]
            for name, ref in ref_weights.items():
                expert = name.endswith(EXPERTS)
                rows = slice(2 * rank, 2 * rank + 2) if expert else slice(None)
                is_meta, shape = r["before"][name]
                assert is_meta and shape == tuple(ref[rows].shape), f"{name}: {shape} before materialising"
                assert torch.equal(r["weights"][name], ref[rows]), f"{what} rank {rank}: {name} weights"
                grad, ref_grad = r["grads"][name], ref_grads[name][rows]
                if bias is not None and expert and rank == 1:  # no token reached rank 1's experts
                    assert torch.equal(grad, torch.zeros_like(grad)) and torch.equal(ref_grad, torch.zeros_like(grad))
                else:
                    assert _rel(grad, ref_grad) < tol, f"{what} rank {rank}: {name} grad {_rel(grad, ref_grad):.3g}"
        # the two ranks hold different experts
        up = "blocks.0.mlp.experts.up"
        assert not torch.equal(ranks[0]["weights"][up], ranks[1]["weights"][up])
