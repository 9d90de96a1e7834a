"""The mixture-of-experts family on CPU: routing, dispatch, capacity dropping, the grouped and loop
paths against each other and against a float64 per-token reference, router losses, load
metrics, FLOPs, compilation, and the refusals of bad configurations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from b200lab.core.machine import ConfigError
from b200lab.core.registry import instantiate
from b200lab.core.validation import validate
from b200lab.models.gpt.family import GPTFamily
from b200lab.models.moe import stats as moe_stats
from b200lab.models.moe.family import MoEFamily
from b200lab.models.moe.layer import (
    GROUPED_MM,
    MoELayer,
    capacity_for,
    plan_dispatch,
    route,
)
from support import compose

needs_grouped_mm = pytest.mark.skipif(GROUPED_MM is None, reason="this torch has no torch._grouped_mm")
needs_cuda = pytest.mark.gpu


def layer(impl="grouped", capacity=None, score="softmax", shared=0, top_k=2, n_experts=4, d=16, f=24, bias=None):
    m = MoELayer(d, n_experts, top_k, f, shared, score, capacity_factor=capacity, impl=impl, selection_bias=bias)
    m.reset_parameters(std=0.3)  # wide enough that routing is far from uniform
    return m.train()


def grads(m, x, g):
    y = m(x)
    return y, torch.autograd.grad([y, m.stats.aux_loss], [x, *m.parameters()], [g, torch.ones_like(m.stats.aux_loss)])


CASES = [
    dict(),
    dict(capacity=1.0),
    dict(capacity=0.5, shared=1),
    dict(score="sigmoid", top_k=3),
    dict(top_k=1, capacity=1.25),
]


@needs_grouped_mm
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "dropless")
def test_grouped_and_loop_paths_agree_in_forward_and_gradients(case):
    m = layer(**case)
    x = torch.randn(3, 11, 16, requires_grad=True)
    g = torch.randn(3, 11, 16)
    y_grouped, g_grouped = grads(m, x, g)
    assert m.ran == ("grouped", torch.float32)
    m.impl = "loop"
    y_loop, g_loop = grads(m, x, g)
    assert m.ran == ("loop", torch.float32)
    assert y_grouped.abs().max() > 0.1
    torch.testing.assert_close(y_grouped, y_loop, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_grouped, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def reference(m: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """Token by token in float64, with the capacity rule applied by hand: per expert, first
    choices before second choices, then token order; the first C assignments are kept."""
    h = F.rms_norm(x.double().reshape(-1, x.shape[-1]), (x.shape[-1],), m.norm.weight.double(), m.norm.eps)
    logits = h @ m.router.weight.double().t()
    scores = logits.softmax(-1) if m.score == "softmax" else logits.sigmoid()
    T, k = h.shape[0], m.top_k
    capacity = capacity_for(T, k, m.n_experts, m.capacity_factor)
    choices = [sorted(range(m.n_experts), key=lambda e: -float(scores[t, e]))[:k] for t in range(T)]
    taken = [0] * m.n_experts
    kept = set()
    for slot in range(k):
        for t in range(T):
            e = choices[t][slot]
            if capacity is None or taken[e] < capacity:
                taken[e] += 1
                kept.add((t, slot))
    up, down = m.experts.up.double(), m.experts.down.double()
    out = torch.zeros_like(h)
    for t in range(T):
        total = sum(float(scores[t, e]) for e in choices[t])
        for slot, e in enumerate(choices[t]):
            if (t, slot) in kept:
                out[t] += float(scores[t, e]) / total * (down[e] @ F.gelu(up[e] @ h[t], approximate="tanh"))
    if m.shared is not None:
        out += F.gelu(h @ m.shared.up.weight.double().t(), approximate="tanh") @ m.shared.down.weight.double().t()
    return out.view(x.shape)


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "dropless")
def test_the_layer_in_float64_matches_a_token_by_token_reference(case):
    m = layer(**case).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    y = m(x)
    assert m.ran[0] == "loop"  # no float64 grouped GEMM: the loop runs and says so
    torch.testing.assert_close(y, reference(m, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_routing_weights_sum_to_one_and_follow_the_scores(score):
    logits = torch.randn(64, 8) * 3
    bias = torch.randn(8)
    for selection_bias in (None, bias):
        experts, weights, scores = route(logits, 3, score, selection_bias)
        torch.testing.assert_close(weights.sum(-1), torch.ones(64), rtol=0, atol=1e-6)
        assert (weights > 0).all() and all(len(set(row.tolist())) == 3 for row in experts)
        choice = scores if selection_bias is None else scores + bias
        torch.testing.assert_close(scores, logits.softmax(-1) if score == "softmax" else logits.sigmoid())
        assert torch.equal(experts, choice.argsort(-1, descending=True)[:, :3])
        picked = scores.gather(-1, experts)
        torch.testing.assert_close(weights, picked / picked.sum(-1, keepdim=True))


def test_capacity_drops_exactly_the_assignments_it_reports():
    T, k, E = 40, 2, 4
    experts = torch.stack([torch.randperm(E)[:k] for _ in range(T)])
    experts[:12] = torch.tensor([0, 1])  # crowd experts 0 and 1 so they overflow
    capacity = capacity_for(T, k, E, 0.75)
    assert capacity == 15  # ceil(0.75 * 40 * 2 / 4)
    plan = plan_dispatch(experts, E, capacity)
    taken, expected = [0] * E, torch.zeros(T, k, dtype=torch.bool)
    for slot in range(k):
        for t in range(T):
            e = int(experts[t, slot])
            if taken[e] < capacity:
                taken[e] += 1
                expected[t, slot] = True
    routed = torch.bincount(experts.flatten(), minlength=E)
    assert torch.equal(plan.routed, routed) and routed.max() > capacity
    assert torch.equal(plan.kept, routed.clamp(max=capacity))
    assert torch.equal(plan.kept_mask.view(T, k), expected)
    assert int(plan.routed.sum() - plan.kept.sum()) == int((~expected).sum()) > 0
    # the buffer: kept rows first, grouped by expert, then the dropped ones
    assert sorted(plan.row_assignment.tolist()) == list(range(T * k))
    assert torch.equal(plan.assignment_row[plan.row_assignment], torch.arange(T * k))
    n_kept = int(plan.kept.sum())
    row_expert = experts.flatten()[plan.row_assignment]
    starts = [0, *plan.offs.tolist()]
    for e in range(E):
        assert (row_expert[starts[e] : starts[e + 1]] == e).all()
    assert torch.equal(plan.row_valid, torch.arange(T * k) < n_kept)
    assert not plan.kept_mask[plan.row_assignment[n_kept:]].any()


def test_a_token_whose_experts_are_all_full_gets_nothing_from_them():
    m = layer(capacity=1.0, top_k=1, bias=[0.0, -1e4, -1e4, -1e4])  # every token picks expert 0; it keeps 3 of 12
    x = torch.randn(1, 12, 16)
    y = m(x)
    assert capacity_for(12, 1, 4, 1.0) == 3  # ceil(1.0 * 12 * 1 / 4)
    assert m.stats.routed.tolist() == [12, 0, 0, 0] and m.stats.kept.tolist() == [3, 0, 0, 0]
    assert (y[0, :3].abs().sum(-1) > 0).all() and torch.equal(y[0, 3:], torch.zeros(9, 16))  # token order decides


DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=needs_cuda)]


@needs_grouped_mm
@pytest.mark.parametrize("device", DEVICES)
def test_an_expert_that_receives_no_token_gets_zero_gradients_and_the_others_do_not(device):
    """On a GPU in bf16 this is the CUTLASS grouped GEMM's weight gradient of an empty group."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    m = layer(bias=[0.0, 0.0, 0.0, -1e4]).to(device, dtype)
    x = torch.randn(2, 10, 16, device=device, dtype=dtype, requires_grad=True)
    m(x).float().square().sum().backward()
    assert m.ran == ("grouped", dtype) and m.stats.routed[3] == 0
    assert torch.equal(m.experts.up.grad[3], torch.zeros_like(m.experts.up.grad[3]))
    assert torch.equal(m.experts.down.grad[3], torch.zeros_like(m.experts.down.grad[3]))
    assert all(m.experts.up.grad[e].abs().sum() > 0 for e in range(3))


def crafted_stats():
    """Two layers, four experts, routing counted by hand: layer 0 routed [6, 0, 3, 3] and kept
    [4, 0, 3, 3] (capacity 4); layer 1 routed [3, 3, 3, 3], all kept; over two steps."""
    step = {
        "routed": torch.tensor([[3, 0, 2, 1], [2, 1, 1, 2]]),
        "kept": torch.tensor([[2, 0, 2, 1], [2, 1, 1, 2]]),
        "aux_loss": torch.tensor(2.2),
        "z_loss": torch.tensor(0.4),
    }
    other = {
        "routed": torch.tensor([[3, 0, 1, 2], [1, 2, 2, 1]]),
        "kept": torch.tensor([[2, 0, 1, 2], [1, 2, 2, 1]]),
        "aux_loss": torch.tensor(2.6),
        "z_loss": torch.tensor(0.8),
    }
    return [step, other]


def test_load_metrics_match_a_hand_count_on_a_crafted_routing(tmp_path):
    m = moe_stats.summarize(crafted_stats())
    entropy_0 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)) / math.log(4)  # shares 6/12, 0, 3/12, 3/12
    assert m["moe_load_max_over_mean"] == pytest.approx((6 / 3 + 3 / 3) / 2)
    assert m["moe_load_max_over_mean_worst"] == pytest.approx(2.0)
    assert m["moe_load_entropy"] == pytest.approx((entropy_0 + 1.0) / 2)
    assert m["moe_dropped_frac"] == pytest.approx(2 / 24)
    assert m["moe_idle_experts"] == 1
    assert m["moe_aux_loss"] == pytest.approx((2.2 + 2.6) / 2 / 2) and m["moe_z_loss"] == pytest.approx(0.6 / 2)
    paths = moe_stats.write_artifacts(crafted_stats(), tmp_path, {"expert_path": "grouped"})
    assert [p.name for p in paths] == ["moe_expert_load.csv", "moe_expert_load.png", "moe_routing.json"]
    rows = (tmp_path / "moe_expert_load.csv").read_text().splitlines()
    assert rows[0] == "layer,expert,routed,kept,share_of_layer,load_over_mean" and rows[1].startswith("0,0,6,4,0.5")
    assert (tmp_path / "moe_expert_load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def family(**overrides):
    cfg = validate(
        compose(["model=moe_tiny", "attention=math", *(f"model.{k}={v}" for k, v in overrides.items())]), "cpu"
    )
    return MoEFamily(cfg.model), instantiate("attention", cfg.attention, "cpu")


@pytest.mark.parametrize("shared", [0, 1])
def test_flops_count_the_active_parameters_as_derived_by_hand(shared):
    fam, _ = family(n_shared_experts=shared)
    L, d, V, E, k, f, T = 2, 128, 2048, 4, 2, 128, 128  # moe_tiny: d_ff 256 / top_k 2 = 128 per expert
    attention = 4 * d * d  # Q, K, V and the output projection
    mlp = d * E + k * 2 * d * f + shared * 2 * d * f  # router + the k experts a token visits + the shared expert
    n = L * (attention + mlp) + V * d  # + the output head
    forward = 2 * n + 2 * L * d * (T + 1)  # + causal attention scores and values
    assert fam.flops_per_sample(T, training=False) == T * forward
    assert fam.flops_per_sample(T, training=True) == 3 * T * forward


def test_the_loss_carries_the_router_losses_from_the_models_output():
    fam, attention = family(z_loss_coef=0.001)
    model = fam.build(attention)
    fam.prepare(model, 16)
    captured = []
    for block in model.blocks:
        block.mlp.register_forward_hook(lambda mod, inputs, out: captured.append((mod, inputs[0])))
    idx, targets = fam.synthetic_batch(2, 16, torch.Generator().manual_seed(1), "cpu")
    out = model.train()(idx)
    aux = z = 0.0
    for mod, x in captured:  # each layer's router losses, recomputed in float64
        h = F.rms_norm(x.detach().double().reshape(-1, 128), (128,), mod.norm.weight.detach().double(), mod.norm.eps)
        logits = h @ mod.router.weight.detach().double().t()
        probs, experts = logits.softmax(-1), logits.softmax(-1).topk(2, -1).indices
        frac = torch.bincount(experts.flatten(), minlength=4).double() / experts.numel()
        aux += 4 * float((frac * probs.mean(0)).sum())
        z += float(torch.logsumexp(logits, -1).square().mean())
    assert float(out.aux_loss.detach()) == pytest.approx(aux, rel=1e-5) and float(out.z_loss.detach()) == pytest.approx(
        z, rel=1e-5
    )
    ce = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten())
    assert float(fam.loss(out, targets).detach()) == pytest.approx(
        float(ce.detach()) + 0.01 * aux + 0.001 * z, rel=1e-5
    )
    stats = fam.forward_stats(out)
    assert stats["routed"].shape == (2, 4) and int(stats["routed"].sum()) == 2 * 2 * 16 * 2
    evaluated = model.eval()(idx)
    assert float(evaluated.aux_loss) == 0.0 and float(fam.loss(evaluated, targets)) == pytest.approx(
        float(ce), rel=1e-5
    )
    assert fam.effective["expert_path"] == "grouped" and fam.effective["d_ff_expert"] == 128


@needs_grouped_mm
@pytest.mark.parametrize("capacity", [None, 1.0])
def test_the_layer_compiles_as_one_graph_and_matches_eager(capacity):
    """fullgraph=True fails on any host sync or data-dependent shape (nonzero, item, tolist).
    On this CPU build torch.compile traces torch._grouped_mm in bfloat16 only."""
    m = layer(capacity=capacity).to(torch.bfloat16)
    x = torch.randn(2, 16, 16, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(2, 16, 16, dtype=torch.bfloat16)
    eager_y, eager_grads = grads(m, x, g)
    compiled = torch.compile(m, fullgraph=True)
    y = compiled(x)
    compiled_grads = torch.autograd.grad(
        [y, m.stats.aux_loss], [x, *m.parameters()], [g, torch.ones_like(m.stats.aux_loss)]
    )
    assert m.ran == ("grouped", torch.bfloat16)
    torch.testing.assert_close(y, eager_y, rtol=2e-2, atol=2e-2)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)


@needs_grouped_mm
def test_autocast_runs_the_grouped_gemms_in_the_autocast_dtype():
    m = layer()
    x = torch.randn(2, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert m.ran == ("grouped", torch.bfloat16) and y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), m(x), rtol=5e-2, atol=5e-2)


@needs_cuda
@needs_grouped_mm
def test_on_a_gpu_the_bf16_layer_runs_forward_and_backward_without_a_host_sync():
    m = layer(capacity=1.0, d=64, f=128).cuda().to(torch.bfloat16)
    x = torch.randn(4, 64, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(x)
    grads(m, x, g)  # warm-up (kernel selection, allocator)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y, _ = grads(m, x, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    m.impl = "loop"
    torch.testing.assert_close(y, m(x), rtol=3e-2, atol=3e-2)


@needs_cuda
@needs_grouped_mm
def test_on_a_gpu_the_bf16_layer_is_captured_in_a_cuda_graph():
    m = layer(d=64, f=128).cuda().to(torch.bfloat16).eval()
    x = torch.randn(2, 32, 64, device="cuda", dtype=torch.bfloat16)
    eager = m(x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        m(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = m(x)
    graph.replay()
    torch.testing.assert_close(captured, eager)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["model.top_k=5"], "model.top_k=5 exceeds model.n_experts=4"),
        (["model.top_k=3"], "model.d_ff=256 is not divisible by model.top_k=3: set model.d_ff_expert"),
        (["model.n_experts=0"], "model.n_experts=0: must be a positive integer"),
        (["model.router=relu"], "model.router='relu': choose softmax or sigmoid"),
        (["model.expert_impl=scatter"], "model.expert_impl='scatter': choose grouped or loop"),
        (["model.capacity_factor=0"], "model.capacity_factor=0.0: must be > 0 (null: dropless)"),
        (["model.aux_loss_coef=-1"], "model.aux_loss_coef=-1.0: must be >= 0"),
        (["model.selection_bias=[0,1]"], "model.selection_bias has 2 values; model.n_experts=4 needs one per expert"),
        (
            ["model.d_ff_expert=100"],
            "model.d_ff_expert=100 is not a multiple of 8: the grouped GEMM needs 16-byte rows",
        ),
        (["model.n_shared_experts=-1"], "model.n_shared_experts=-1: must be >= 0"),
        (["model.bias=true"], "model.bias=true: the MoE family has no biases"),
        (
            ["workload=moe_layer", "workload.options.top_k=9"],
            "workload.options.top_k=9 exceeds workload.options.n_experts=8",
        ),
        (
            ["workload=moe_layer", "workload.options.d_ff_expert=1004"],
            "workload.options.d_ff_expert=1004 is not a multiple of 8",
        ),
        (
            ["workload=moe_layer", "workload.options.compile=true", "workload.options.dtype=fp32"],
            "torch.compile traces the grouped GEMM in bf16 only",
        ),
        (
            ["workload=moe_layer", "workload.options.dtype=int8"],
            "workload.options.dtype='int8': choose bf16, fp16, fp32",
        ),
    ],
)
def test_bad_moe_configurations_name_the_keys(overrides, needle):
    with pytest.raises(ConfigError) as err:
        validate(compose(["model=moe_tiny", *overrides]), "cpu")
    assert needle in str(err.value)


def test_a_non_aligned_width_runs_on_the_loop_path():
    validate(compose(["model=moe_tiny", "model.d_ff_expert=100", "model.expert_impl=loop"]), "cpu")


@pytest.mark.parametrize("seq", ["12k", "16k"])
@pytest.mark.parametrize("precision", ["bf16", "bf16_autocast", "fp32"])
def test_the_headline_points_compose_and_validate(seq, precision):
    cfg = validate(compose(["model=moe", f"seq={seq}", f"precision={precision}"]), "cpu")
    fam = MoEFamily(cfg.model)
    assert (fam.d_ff_expert, cfg.model.n_experts, cfg.model.top_k) == (4096, 8, 2)
    dense = GPTFamily(validate(compose(["model=gpt_1b"]), "cpu").model)
    assert fam.matmul_params() - dense.matmul_params() == 24 * 2048 * 8  # the same active parameters but the routers'
