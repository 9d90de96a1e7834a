"""precision=fp8_weight_only: e4m3 quantisation against float64, the scaled GEMM against a float64
bound derived from e4m3's step, a converted GPT against the unconverted one, what a CPU run
records, checkpoints in the model's own names, and training refused through the CLI."""

from __future__ import annotations

import copy

import pytest
import torch

from b200lab.attention.sdpa import SdpaAttention
from b200lab.core.registry import complete
from b200lab.models.gpt.model import GPT
from b200lab.precision.availability import fp8_gemm_support
from b200lab.precision.fp8_layers import dequantize_rows, quantize_rows, scaled_linear
from b200lab.precision.weight_only import FP8WeightLinear, FP8WeightOnlyPrecision
from support import FAST, INLINE, results_files, run_cli, runs

E4M3_HALF_STEP = 2.0**-4  # e4m3 keeps 3 mantissa bits: relative step 2^-3, rounding error at most half of it
E4M3_HALF_SUBNORMAL = 2.0**-10  # below 2^-6 the step is 2^-9 (in units of the scale)
BF16_HALF_STEP = 2.0**-8


def _fresh_generator() -> torch.Generator:
    return torch.Generator().manual_seed(torch.seed() % 2**31)


def _reference_quantisation(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64: scale = row amax / 448 (1 for an all-zero row); q = e4m3 cast of w / scale."""
    w64 = w.to(torch.float64)
    amax = w64.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))
    return (w64 / scale[:, None]).to(torch.float8_e4m3fn), scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantise_and_dequantise_match_a_float64_reference(dtype):
    g = _fresh_generator()
    w = torch.randn(37, 80, generator=g) * torch.logspace(-3, 2, 37)[:, None]  # rows of very different size
    w[5] = 0.0  # a zero row must not divide by zero
    w = w.to(dtype)
    q, scale = quantize_rows(w)
    q_ref, scale_ref = _reference_quantisation(w)
    assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.shape == (37,)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))  # bit for bit
    assert torch.equal(scale, scale_ref.to(torch.float32))
    nonzero = [i for i in range(37) if i != 5]
    assert torch.all(q[nonzero].to(torch.float32).abs().amax(dim=1) == 448.0)  # each row's amax maps to e4m3's max
    assert scale[5] == 1.0 and torch.all(q[5].to(torch.float32) == 0)

    deq = dequantize_rows(q, scale, torch.float64)
    exact = q_ref.to(torch.float64) * scale_ref[:, None]
    assert torch.all((deq - exact).abs() <= 2.0**-23 * exact.abs())  # a float32 scale and a float32 product
    # and the rounding itself is e4m3's: half a step relative, or half a subnormal step absolute
    w64 = w.to(torch.float64)
    bound = E4M3_HALF_STEP * w64.abs() + E4M3_HALF_SUBNORMAL * scale_ref[:, None] + 2.0**-22 * w64.abs()
    assert torch.all((deq - w64).abs() <= bound)


def _cpu_scaled_mm() -> bool:
    try:
        a = torch.ones(16, 16).to(torch.float8_e4m3fn)
        torch._scaled_mm(a, a.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.bfloat16)
        return True
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


def _gemm_error_bound(x: torch.Tensor, w_deq: torch.Tensor, y_ref: torch.Tensor, per_row: bool) -> torch.Tensor:
    """|fp8 GEMM - exact| for e4m3 activations with amax scales and a bf16 result: each activation
    is off by at most 2^-4 of itself or 2^-10 of its scale, the output by half a bf16 step."""
    x64, w64 = x.to(torch.float64), w_deq.to(torch.float64)
    amax = x64.abs().amax(dim=-1, keepdim=True) if per_row else x64.abs().amax().expand(x64.shape[0], 1)
    x_err = E4M3_HALF_STEP * x64.abs() + E4M3_HALF_SUBNORMAL * amax / 448.0
    return x_err @ w64.abs().t() + BF16_HALF_STEP * y_ref.abs() + 1e-6


@pytest.mark.skipif(not _cpu_scaled_mm(), reason="this torch build has no CPU torch._scaled_mm with rowwise scales")
@pytest.mark.parametrize("per_row", [True, False])
def test_scaled_gemm_stays_within_the_e4m3_bound_of_a_float64_product(per_row):
    """The GEMM function the GPU path runs, on the CPU kernel: scales oriented and applied right."""
    g = _fresh_generator()
    m, k, n = 10, 64, 48  # a row count that is no multiple of 16
    x = (torch.randn(m, k, generator=g) * torch.logspace(-2, 1, m)[:, None]).to(torch.bfloat16)
    w = torch.randn(n, k, generator=g) * torch.logspace(-2, 0, n)[:, None]
    bias = torch.randn(n, generator=g).to(torch.bfloat16)
    q, scale = quantize_rows(w)
    w_deq = dequantize_rows(q, scale, torch.float64)
    y_ref = x.to(torch.float64) @ w_deq.t() + bias.to(torch.float64)
    y = scaled_linear(x, q, scale, bias, per_row=per_row)
    assert y.dtype == torch.bfloat16 and y.shape == (m, n)
    err = (y.to(torch.float64) - y_ref).abs()
    assert torch.all(err <= _gemm_error_bound(x, w_deq, y_ref, per_row))
    assert (err > 0).any()  # the activations really were quantised


def _gpt_cfg(**fields):
    base = dict(
        _target_="b200lab.models.gpt.family.GPTFamily",
        name="t",
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_ff=128,
        vocab_size=96,
        max_seq_len=32,
    )
    return complete("model", {**base, **fields})


def _recipe(device: str = "cpu", **fields) -> FP8WeightOnlyPrecision:
    cfg = complete(
        "precision",
        {"_target_": "b200lab.precision.weight_only.FP8WeightOnlyPrecision", "name": "fp8_weight_only", **fields},
    )
    return FP8WeightOnlyPrecision(cfg, device, training=False)


def _sdpa():
    return SdpaAttention(
        complete("attention", {"_target_": "b200lab.attention.sdpa.SdpaAttention", "name": "sdpa"}), "cpu"
    )


@pytest.mark.parametrize(
    "fields",
    [{}, {"norm": "layernorm", "bias": True, "pos": "learned", "tie_embeddings": True}],
    ids=["default", "gpt2-style"],
)
def test_a_converted_gpt_gives_logits_close_to_the_unconverted_one(fields):
    """Every weight moves by at most half an e4m3 step (2^-4 relative) with random sign, so each
    layer's output moves by about 2^-4/sqrt(3) ~ 0.036 of its size (RMS); over the chain of
    projections the logits stay well inside one full step, 2^-3, of their norm."""
    cfg = _gpt_cfg(**fields)
    model = GPT(cfg, _sdpa()).eval()
    with torch.no_grad():  # biases and norm gains away from their init, so they matter
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    reference = copy.deepcopy(model)
    recipe = _recipe()
    converted = recipe.convert(model)
    idx = torch.randint(0, cfg.vocab_size, (3, 20), generator=_fresh_generator())
    with torch.inference_mode():
        want, got = reference(idx), converted(idx)
    rel = ((got - want).norm() / want.norm()).item()
    assert 0 < rel < 2.0**-3, rel

    linears = [m for m in converted.modules() if isinstance(m, FP8WeightLinear)]
    tied = fields.get("tie_embeddings", False)
    assert len(linears) == recipe.effective["fp8_modules"] == 4 * cfg.n_layers + (0 if tied else 1)
    assert all(m.weight_fp8.dtype == torch.float8_e4m3fn and not m.fp8_gemm for m in linears)
    if tied:
        assert recipe.effective["high_precision"] == {"head": "weight tied to another module (the embedding)"}
        assert converted.head.weight is converted.embed.weight
    fp32_bytes = sum(4 * m.out_features * m.in_features for m in linears)
    fp8_bytes = sum(m.out_features * m.in_features + 4 * m.out_features for m in linears)
    assert recipe.effective["weight_bytes_saved"] == fp32_bytes - fp8_bytes > 0


def test_skip_keeps_named_layers_in_the_compute_dtype():
    model = GPT(_gpt_cfg(), _sdpa())
    recipe = _recipe(skip=["head", "blocks.0.qkv"])
    converted = recipe.convert(model)
    assert type(converted.head) is torch.nn.Linear and type(converted.blocks[0].qkv) is torch.nn.Linear
    assert isinstance(converted.blocks[1].qkv, FP8WeightLinear)
    assert recipe.effective["high_precision"] == {
        "head": "skipped by precision.skip",
        "blocks.0.qkv": "skipped by precision.skip",
    }
    assert recipe.effective["fp8_modules"] == 7


def test_on_cpu_the_record_says_dequantised_and_why():
    recipe = _recipe()
    recipe.convert(GPT(_gpt_cfg(), _sdpa()))
    rec = recipe.record()
    assert rec["gemm"].startswith("dequantised (no CUDA GPU (device cpu)")
    assert rec["compute_dtype"] == "float32" and rec["peak_key"] == "fp32" and rec["extra_peak_keys"] == []
    assert (
        "auto on cpu means float32" in rec["reason"]
        and "weights de-quantised to float32 before each matmul" in rec["reason"]
    )
    assert rec["fp8_gemm_modules"] == 0 and rec["fp8_modules"] == 9
    assert (
        FP8WeightOnlyPrecision.Config.available("cpu")
        == fp8_gemm_support("cpu")
        == (False, rec["gemm"][len("dequantised (") : -1])
    )

    asked = _recipe(gemm="dequantised")
    assert asked.record()["gemm"] == "dequantised (precision.gemm=dequantised)"


def test_the_plain_state_dict_loads_into_the_unconverted_model():
    cfg = _gpt_cfg(bias=True)
    recipe = _recipe()
    converted = recipe.convert(GPT(cfg, _sdpa())).eval()
    state = recipe.plain_state_dict(converted)
    plain = GPT(cfg, _sdpa()).eval()
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state, strict=True)
    idx = torch.randint(0, cfg.vocab_size, (2, 16), generator=_fresh_generator())
    with torch.inference_mode():
        assert torch.equal(plain(idx), converted(idx))  # the same de-quantised weights, the same ops


@pytest.mark.gpu
@pytest.mark.skipif(
    torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 9),
    reason="needs FP8 tensor cores (compute capability >= 8.9)",
)
def test_on_an_fp8_gpu_the_scaled_mm_path_matches_the_dequantised_one():
    g = torch.Generator(device="cuda").manual_seed(torch.seed() % 2**31)
    linear = torch.nn.Linear(256, 512, bias=True, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(512, 256, device="cuda", generator=g) * 0.05)
        linear.bias.copy_(torch.randn(512, device="cuda", generator=g) * 0.1)
    x = torch.randn(4, 33, 256, device="cuda", generator=g, dtype=torch.bfloat16)
    for per_row in (True, False):
        fp8 = FP8WeightLinear.from_linear(linear, fp8_gemm=True, per_row=per_row, fast_accum=False)
        deq = FP8WeightLinear.from_linear(linear, fp8_gemm=False)
        with torch.inference_mode():
            y_fp8, y_deq = fp8(x), deq(x)
        w = fp8.dequantized(torch.float64)
        y_ref = x.reshape(-1, 256).to(torch.float64) @ w.t() + linear.bias.to(torch.float64)
        bound = _gemm_error_bound(x.reshape(-1, 256), w, y_ref, per_row)
        assert torch.all((y_fp8.reshape(-1, 512).to(torch.float64) - y_ref).abs() <= bound)
        # the de-quantised path rounds only its bf16 weights and output: far inside the same bound
        assert torch.all((y_deq.reshape(-1, 512).to(torch.float64) - y_ref).abs() <= bound)

    recipe = _recipe("cuda")
    assert (
        recipe.record()["gemm"] == "fp8 _scaled_mm" and recipe.peak_key == "fp8" and recipe.extra_peak_keys == ("bf16",)
    )


# ---- through the CLI ------------------------------------------------------------------------------


@pytest.mark.e2e
def test_training_with_weight_only_fp8_is_refused_with_exit_2(tmp_path, store):
    proc = run_cli(["precision=fp8_weight_only", "workload=train", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert "precision=fp8_weight_only is an inference recipe" in proc.stderr and "workload=train trains" in proc.stderr
    assert "Traceback" not in proc.output and runs(store["MLFLOW_TRACKING_URI"]) == []


@pytest.mark.e2e
@pytest.mark.skipif(fp8_gemm_support("cuda")[0], reason="this machine runs FP8 GEMMs, so precision.gemm=fp8 is allowed")
def test_asking_for_the_fp8_gemm_where_it_cannot_run_exits_2(tmp_path, store):
    proc = run_cli(["precision=fp8_weight_only", "precision.gemm=fp8", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert "precision=fp8_weight_only precision.gemm=fp8: " in proc.stderr and "compute capability 8.9" in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == []


@pytest.mark.e2e
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU record; a GPU run records its own path")
def test_a_cpu_forward_run_records_the_dequantised_gemm(tmp_path, store):
    proc = run_cli(["precision=fp8_weight_only", "workload=forward", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    eff = res["effective"]["precision"]
    assert res["status"] == "ok" and res["metrics"]["tokens_per_s"] > 0
    assert eff["name"] == "fp8_weight_only" and eff["gemm"].startswith("dequantised (no CUDA GPU")
    assert eff["peak_key"] == "fp32" and eff["fp8_modules"] == 9 and eff["weight_bytes_saved"] > 0
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.data.tags["effective.precision"] == "float32"
