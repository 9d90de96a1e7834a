"""precision=fp8_torchao: refused with the reason where torchao or an FP8 GPU is missing (exit 2
through the CLI); where both exist, torchao's Float8Linear replaces the GPT's projections, the
logits stay within e4m3's step of bf16's, and a training step runs on float32 masters."""

from __future__ import annotations

import copy

import pytest
import torch

from b200lab.core.registry import complete
from b200lab.precision.availability import torchao_problem
from b200lab.precision.torchao_fp8 import TorchaoFP8Precision
from support import FAST, INLINE, run_cli, runs

FP8_HERE = TorchaoFP8Precision.Config.available("cuda")[0] if torch.cuda.is_available() else False


def _recipe(device: str, training: bool, **fields) -> TorchaoFP8Precision:
    cfg = complete(
        "precision", {"_target_": "b200lab.precision.torchao_fp8.TorchaoFP8Precision", "name": "fp8_torchao", **fields}
    )
    return TorchaoFP8Precision(cfg, device, training)


def test_availability_names_what_is_missing():
    ok, why = TorchaoFP8Precision.Config.available("cpu")
    assert not ok
    problem = torchao_problem()
    assert why == (problem or "no CUDA GPU (device cpu): FP8 GEMMs need compute capability 8.9 or newer")
    if problem is not None:
        assert "pip install" in problem


@pytest.mark.e2e
@pytest.mark.skipif(FP8_HERE, reason="this machine can run torchao's FP8")
@pytest.mark.parametrize("workload", ["train", "forward"])
def test_without_torchao_or_an_fp8_gpu_the_run_exits_2_with_the_reason(tmp_path, store, workload):
    proc = run_cli(["precision=fp8_torchao", f"workload={workload}", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 2, proc.output
    reasons = [
        r for r in (torchao_problem(), "no CUDA GPU (device cpu)" if not torch.cuda.is_available() else None) if r
    ]
    assert reasons and all(f"precision=fp8_torchao: {r}" in proc.stderr for r in reasons)
    assert "Traceback" not in proc.output and runs(store["MLFLOW_TRACKING_URI"]) == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["precision.recipe=blockwise"], "precision.recipe='blockwise': choose one of tensorwise, rowwise"),
        (
            ["precision.recipe=rowwise", "workload=forward"],
            "precision.recipe=rowwise with workload=forward: torchao's rowwise float8 fails under torch.inference_mode",
        ),
    ],
)
def test_a_torchao_recipe_that_cannot_run_the_workload_is_refused(tmp_path, store, overrides, needle):
    proc = run_cli(["precision=fp8_torchao", *overrides, *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert needle in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == []


# ---- where torchao and an FP8 GPU exist -----------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(
    torch.cuda.is_available() and not FP8_HERE, reason="needs torchao >= 0.10 and compute capability >= 8.9"
)
@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_torchao_float8_converts_the_projections_and_trains(recipe):
    from torchao.float8.float8_linear import Float8Linear

    from b200lab.attention.sdpa import SdpaAttention
    from b200lab.models.gpt.model import GPT

    cfg = complete(
        "model",
        {
            "_target_": "b200lab.models.gpt.family.GPTFamily",
            "name": "t",
            "n_layers": 2,
            "d_model": 256,
            "n_heads": 4,
            "d_ff": 1024,
            "vocab_size": 512,
        },
    )
    attention = SdpaAttention(
        complete("attention", {"_target_": "b200lab.attention.sdpa.SdpaAttention", "name": "sdpa"}), "cuda"
    )
    prec = _recipe("cuda", training=True, recipe=recipe)
    torch.set_default_dtype(prec.param_dtype)
    try:
        with torch.device("cuda"):
            model = GPT(cfg, attention)
    finally:
        torch.set_default_dtype(torch.float32)
    reference = copy.deepcopy(model)
    model = prec.convert(model)
    model.prepare(64)
    reference.prepare(64)
    fp8 = [m for m in model.modules() if isinstance(m, Float8Linear)]
    assert len(fp8) == prec.effective["fp8_modules"] == 4 * cfg.n_layers + 1
    rec = prec.record()
    assert rec["peak_key"] == "fp8" and rec["extra_peak_keys"] == ["bf16"] and rec["recipe"] == recipe

    g = torch.Generator(device="cuda").manual_seed(torch.seed() % 2**31)
    idx = torch.randint(0, cfg.vocab_size, (4, 64), device="cuda", generator=g)
    with torch.no_grad():
        want, got = reference(idx).float(), model(idx).float()
    rel = ((got - want).norm() / want.norm()).item()
    assert 0 < rel < 2.0**-3, rel  # both operands rounded to e4m3 (2^-4 each at most) against bf16's 2^-9

    master = prec.master_weights(model)
    opt = torch.optim.AdamW(master.masters, lr=1e-3)
    logits = model(idx)
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), idx.flatten())
    loss.backward()
    master.accumulate()
    before = [p.detach().clone() for p in model.parameters()]
    master.step(opt.step)
    assert torch.isfinite(loss) and any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
