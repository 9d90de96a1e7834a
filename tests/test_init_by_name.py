"""Initial weights filled parameter by parameter from run.seed and the parameter's name: the
families' distributions (GPT-2's scaled residual projections, DiT's adaLN-Zero, the experts'),
values that depend on the seed and the name only, and parallelism.build refused where it cannot
work (in-process validation; the CLI's exit code is in tests/test_meta_build.py)."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from b200lab.core.registry import complete, instantiate
from b200lab.core.validation import ConfigError, validate
from b200lab.workloads.base import RankContext, build_model
from support import compose


def built_weights(model: dict, seed: int) -> dict:
    cfg = OmegaConf.create(
        {
            "model": complete("model", model),
            "precision": complete(
                "precision", {"_target_": "b200lab.precision.autocast.AutocastPrecision", "name": "fp32"}
            ),
            "attention": complete("attention", {"_target_": "b200lab.attention.base.MathAttention", "name": "math"}),
            "parallelism": complete(
                "parallelism", {"_target_": "b200lab.parallel.data_parallel.DataParallel", "name": "single"}
            ),
            "compile": {"name": "none", "mode": None, "fullgraph": False},
            "seq": {"name": "t", "len": 8, "batch": 2},
            "run": {"seed": seed},
        }
    )
    device = torch.device("cpu")
    strategy = instantiate("parallelism", cfg.parallelism, 0, 1, device)
    built = build_model(RankContext(cfg=cfg, device=device, strategy=strategy), training=False, compile_model=False)
    return {name: p.detach() for name, p in built.model.named_parameters()}


GPT = {
    "_target_": "b200lab.models.gpt.family.GPTFamily",
    "name": "t",
    "n_layers": 4,
    "d_model": 256,
    "n_heads": 4,
    "d_ff": 512,
    "vocab_size": 512,
    "norm": "layernorm",
    "bias": True,
}


def near(t: torch.Tensor, std: float) -> bool:
    return abs(float(t.float().std()) / std - 1) < 0.05 and abs(float(t.float().mean())) < 0.1 * std


def test_gpt_weights_keep_gpt2s_distributions_and_depend_on_seed_and_name_only():
    seed = int(torch.seed() % 10_000)
    w = built_weights(GPT, seed)
    residual = 0.02 / math.sqrt(2 * GPT["n_layers"])
    for name, p in w.items():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
        elif p.dim() == 1:
            assert torch.all(p == 1), name
        elif name.endswith(("out.weight", "down.weight")):
            assert near(p, residual), (name, float(p.std()))
        else:
            assert near(p, 0.02), (name, float(p.std()))
    again, other = built_weights(GPT, seed), built_weights(GPT, seed + 1)
    assert all(torch.equal(w[n], again[n]) for n in w)
    assert not torch.equal(w["blocks.0.qkv.weight"], other["blocks.0.qkv.weight"])
    # a parameter's values do not depend on what else the model holds or the order it is filled in
    deeper = built_weights({**GPT, "n_layers": 6}, seed)
    assert torch.equal(w["embed.weight"], deeper["embed.weight"])
    assert not torch.equal(w["blocks.0.qkv.weight"], w["blocks.1.qkv.weight"])


def test_dit_starts_adaln_zero_and_moe_experts_scaled():
    seed = int(torch.seed() % 10_000)
    dit = built_weights(
        {
            "_target_": "b200lab.models.dit.DiTFamily",
            "name": "t",
            "latent_size": 8,
            "patch_size": 2,
            "n_layers": 2,
            "d_model": 256,
            "n_heads": 4,
            "d_ff": 512,
            "n_classes": 1000,
        },
        seed,
    )
    for name, p in dit.items():
        if name.endswith(("modulation.weight", "final.weight", "bias")):
            assert torch.count_nonzero(p) == 0, name
        elif name in ("classes.weight", "t_in.weight", "t_out.weight"):
            assert near(p, 0.02), name
        else:  # Xavier-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), std a / sqrt(3)
            fan_out, fan_in = p.shape[0], p[0].numel()
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert float(p.abs().max()) <= bound * (1 + 1e-6) and near(p, bound / math.sqrt(3)), (
                name
            )  # float32 rounding
    moe = built_weights(
        {
            "_target_": "b200lab.models.moe.family.MoEFamily",
            "name": "t",
            "n_layers": 2,
            "d_model": 128,
            "n_heads": 2,
            "d_ff": 256,
            "vocab_size": 64,
            "n_experts": 8,
            "top_k": 2,
            "n_shared_experts": 1,
        },
        seed,
    )
    assert near(moe["blocks.0.mlp.experts.up"], 0.02)
    assert near(moe["blocks.0.mlp.experts.down"], 0.02 / 2)  # 0.02 / sqrt(2 x 2 layers)
    assert near(moe["blocks.0.mlp.shared.down.weight"], 0.02 / 2) and near(moe["blocks.1.mlp.router.weight"], 0.02)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["parallelism.build=meta", "precision=fp8_weight_only"],
            "parallelism.build=meta with precision=fp8_weight_only: this recipe replaces nn.Linear",
        ),
        (["parallelism.build=sideways"], "parallelism.build='sideways': choose one of auto, meta, full"),
    ],
)
def test_build_option_refuses_what_cannot_work_naming_the_keys(overrides, message):
    cfg = compose(["parallelism=fsdp", "model=tiny", *overrides])
    with pytest.raises(ConfigError) as refused:
        validate(cfg, "cpu")
    assert message in str(refused.value)


def test_build_defaults_to_auto_and_full_turns_it_off():
    assert validate(compose(["parallelism=tp", "model=tiny"]), "cpu").parallelism.build == "auto"
    assert (
        validate(compose(["parallelism=tp", "model=tiny", "parallelism.build=full"]), "cpu").parallelism.build == "full"
    )


def test_a_model_built_on_meta_runs_no_initialiser_and_imports_no_compiler():
    """Construction on meta skips each parameter's init (meta's normal_ would import torch._dynamo,
    about a second of every job's start) and materialising allocates without sympy; buffers and
    tensors that are not meta are still filled."""
    import subprocess
    import sys

    code = """
import sys, torch
from b200lab.models.materialise import materialise, parameters_on_meta
with parameters_on_meta():
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    model.register_buffer("scale", torch.randn(3))
    real = torch.empty(1000).normal_()
assert all(p.is_meta for p in model.parameters()) and not model.scale.is_meta and real.std() > 0.5
materialise(model, torch.device("cpu"), lambda name, full: full.uniform_(-1, 1), torch.float32)
assert all(not p.is_meta and p.abs().max() > 0.5 for p in model.parameters())
print(sorted(m for m in ("torch._dynamo", "sympy") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
