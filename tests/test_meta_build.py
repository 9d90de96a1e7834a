"""Meta-device construction over real gloo ranks (spawned processes): before materialising, a
rank's parameters are meta tensors of its shard's shape; after, each local shard equals the
corresponding slice of an independent one-rank build with the same seed (built in this process,
outside the ranks), under tensor parallel, FSDP2 and both, for the GPT and other families."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from b200lab.core.registry import complete
from support import free_port
from tiny_models import TINY_MOE

pytestmark = pytest.mark.e2e  # spawns gloo ranks

MODELS = {
    "gpt": {
        "_target_": "b200lab.models.gpt.family.GPTFamily",
        "name": "t",
        "n_layers": 2,
        "d_model": 32,
        "n_heads": 4,
        "n_kv_heads": 2,
        "d_ff": 64,
        "vocab_size": 50,
        "norm": "layernorm",
        "bias": True,
    },
    "moe": TINY_MOE,
    "vit": {
        "_target_": "b200lab.models.vit.ViTFamily",
        "name": "t",
        "image_size": 8,
        "patch_size": 4,
        "n_layers": 2,
        "d_model": 16,
        "n_heads": 2,
        "d_ff": 32,
        "n_classes": 5,
    },
    "dit": {
        "_target_": "b200lab.models.dit.DiTFamily",
        "name": "t",
        "latent_size": 8,
        "latent_channels": 4,
        "patch_size": 2,
        "n_layers": 2,
        "d_model": 16,
        "n_heads": 2,
        "d_ff": 32,
        "n_classes": 5,
    },
}
MESHES = {"tp": (2, 1, False), "fsdp": (1, 2, True), "tp_fsdp": (2, 2, True)}  # tp, dp, fsdp


def job_cfg(family: str, layout: str | None, seed: int, precision: str):
    tp, dp, fsdp = MESHES[layout] if layout else (1, 1, False)
    parallelism = (
        {"_target_": "b200lab.parallel.mesh.MeshParallel", "name": layout, "tp": tp, "dp": dp, "fsdp": fsdp}
        if layout
        else {"_target_": "b200lab.parallel.data_parallel.DataParallel", "name": "single"}
    )
    recipe = {"name": "fp32"} if precision == "fp32" else {"name": "bf16", "compute_dtype": "bfloat16"}
    return OmegaConf.create(
        {
            "model": complete("model", MODELS[family]),
            "precision": complete("precision", {"_target_": "b200lab.precision.autocast.AutocastPrecision", **recipe}),
            "attention": complete("attention", {"_target_": "b200lab.attention.base.MathAttention", "name": "math"}),
            "parallelism": complete("parallelism", parallelism),
            "compile": {"name": "none", "mode": None, "fullgraph": False},
            "seq": {"name": "t", "len": 8, "batch": 2},
            "run": {"seed": seed},
        }
    )


def one_rank_build(family: str, seed: int, precision: str) -> dict:
    """The plain model's weights from a one-rank build (this process, no process group)."""
    from b200lab.core.registry import instantiate
    from b200lab.workloads.base import RankContext, build_model

    cfg = job_cfg(family, None, seed, precision)
    device = torch.device("cpu")
    strategy = instantiate("parallelism", cfg.parallelism, 0, 1, device)
    built = build_model(RankContext(cfg=cfg, device=device, strategy=strategy), training=True, compile_model=False)
    return {name: p.detach().clone() for name, p in built.model.named_parameters()}


def expected_local(name: str, full: torch.Tensor, param, cfg) -> torch.Tensor:
    """This rank's slice of ``full``, worked out here: the GPT's qkv rows in the tensor-parallel
    order, then torch.chunk along each mesh dimension's shard dim at this rank's coordinate."""
    from torch.distributed.tensor import Shard

    from b200lab.models.gpt.parallel import interleave_order

    if not hasattr(param, "device_mesh"):
        return full  # replicated: not a DTensor
    tp = dict(zip(param.device_mesh.mesh_dim_names, param.device_mesh.shape)).get("tp", 1)
    if tp > 1 and name.endswith(("qkv.weight", "qkv.bias")):
        full = full[interleave_order(cfg.n_heads, cfg.n_kv_heads or cfg.n_heads, cfg.d_model // cfg.n_heads, tp)]
    coordinate = param.device_mesh.get_coordinate()
    for mesh_dim, placement in enumerate(param.placements):
        if type(placement) is Shard:
            chunks = torch.chunk(full, param.device_mesh.size(mesh_dim), dim=placement.dim)
            index = coordinate[mesh_dim]  # a dim shorter than the mesh leaves the last ranks empty
            full = chunks[index] if index < len(chunks) else full.narrow(placement.dim, 0, 0)
        elif not placement.is_replicate():  # FSDP2 over TP-split rows (_StridedShard): checked by full_tensor
            return None
    return full


def _rank_main(rank: int, world: int, port: int, cases: list, out: dict) -> None:
    import torch.distributed as dist

    from b200lab.core.registry import instantiate
    from b200lab.models.materialise import local
    from b200lab.workloads.base import RankContext, build_model, split_meta_model

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for family, layout, seed, precision, reference in cases:
            cfg = job_cfg(family, layout, seed, precision)
            device = torch.device("cpu")
            strategy = instantiate("parallelism", cfg.parallelism, rank, world, device)
            strategy.setup()
            ctx = RankContext(cfg=cfg, device=device, strategy=strategy, rank=rank, world_size=world)
            precision_impl = instantiate("precision", cfg.precision, "cpu", True)
            attention = instantiate("attention", cfg.attention, "cpu")
            meta = split_meta_model(ctx, precision_impl, attention, training=True)
            before = {
                name: (local(p).is_meta, tuple(local(p).shape), tuple(p.shape)) for name, p in meta.named_parameters()
            }
            built = build_model(ctx, training=True, compile_model=False)
            checks = {}
            for name, p in built.model.named_parameters():
                ref = reference[name].to(p.dtype)
                want = expected_local(name, ref, p, cfg.model)
                full = p.full_tensor() if hasattr(p, "full_tensor") else p
                if layout != "fsdp" and name.endswith(("qkv.weight", "qkv.bias")):
                    from b200lab.models.gpt.parallel import plain

                    full = plain(name, full, cfg.model, strategy.tensor_parallel)
                checks[name] = {
                    "local_shape": tuple(local(p).shape),
                    "local_matches": None if want is None else torch.equal(local(p), want),
                    "full_matches": torch.equal(full, ref),
                    "local": local(p).detach().clone(),
                }
            out[(family, layout, precision, rank)] = {
                "before": before,
                "checks": checks,
                "effective": dict(strategy.effective),
            }
    finally:
        dist.destroy_process_group()


def _run(world: int, cases: list) -> dict:
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_rank_main, args=(world, free_port(), cases, out), nprocs=world, join=True)
    return dict(out)


def _check(out: dict, family: str, layout: str, precision: str, world: int, reference: dict) -> None:
    shards = {}
    for rank in range(world):
        result = out[(family, layout, precision, rank)]
        assert result["effective"]["build"] == "meta", result["effective"]
        assert set(result["checks"]) == set(reference)
        for name, (is_meta, local_shape, global_shape) in result["before"].items():
            check = result["checks"][name]
            assert is_meta, f"{name}: materialised before the plan split it"
            assert global_shape == tuple(reference[name].shape), name
            assert local_shape == check["local_shape"], name
            assert check["full_matches"], f"{family} {layout} rank {rank}: {name} differs from the one-rank build"
            assert check["local_matches"] in (True, None), f"{family} {layout} rank {rank}: {name} shard"
            shards.setdefault(name, []).append(check["local"])
    split = [n for n, s in shards.items() if s[0].shape != reference[n].shape]
    assert split, f"{family} {layout}: no parameter was split"
    # the ranks hold different slices of a random weight (a shard is not the whole weight twice)
    assert any(not torch.equal(shards[n][0], shards[n][1]) for n in split if reference[n].std() > 0)


@pytest.mark.parametrize(
    ("layout", "world", "families"),
    [("tp", 2, ("gpt",)), ("fsdp", 2, ("gpt", "moe", "vit", "dit")), ("tp_fsdp", 4, ("gpt",))],
)
def test_ranks_hold_meta_shards_then_the_one_rank_weights(layout, world, families):
    seed = int(torch.seed() % 10_000)
    precisions = ("fp32", "bf16") if layout == "fsdp" else ("fp32",)
    cases, references = [], {}
    for family in families:
        for precision in precisions:
            references[(family, precision)] = one_rank_build(family, seed, precision)
            cases.append((family, layout, seed, precision, references[(family, precision)]))
    out = _run(world, cases)
    for family in families:
        for precision in precisions:
            _check(out, family, layout, precision, world, references[(family, precision)])


def test_a_parallel_run_records_its_build_and_meta_is_refused_where_it_cannot_work(tmp_path, store):
    from support import FAST, results_files, run_cli, runs

    proc = run_cli(["parallelism=fsdp", "parallelism.build=meta", "precision=fp8_weight_only"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert "parallelism.build=meta with precision=fp8_weight_only: this recipe replaces nn.Linear" in proc.stderr
    assert "Traceback" not in proc.output and runs(store["MLFLOW_TRACKING_URI"]) == []

    proc = run_cli(["-m", "workload=forward", "parallelism=tp", "parallelism.build=auto,full", *FAST], tmp_path, store)
    assert proc.returncode == 0, proc.output
    built = {r["config"]["parallelism"]["build"]: r["effective"]["parallelism"] for r in results_files(tmp_path)}
    assert built["auto"]["build"] == "meta" and "build_reason" not in built["auto"]
    assert built["full"]["build"] == "full"
