"""Numerical checks against independent references: float64 loops, hand-derived formulas."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from b200lab.attention.base import AttnMask, MathAttention
from b200lab.attention.sdpa import SdpaAttention
from b200lab.core.registry import complete
from b200lab.measure.step_stats import step_stats
from b200lab.models.gpt.model import GPT, apply_rotary, rotary_tables
from b200lab.records.aggregate import aggregate
from tiny_models import model_cfg, train_cfg


def backend(cls, **fields):
    return cls(
        complete("attention", {"_target_": f"{cls.__module__}.{cls.__name__}", "name": cls.__name__, **fields}), "cpu"
    )


def naive_causal_attention(q, k, v):
    """float64, one query at a time, softmax written out."""
    q, k, v = (t.double() for t in (q, k, v))
    B, H, T, D = q.shape
    out = torch.empty_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                s = torch.tensor(
                    [float(q[b, h, i] @ k[b, h, j]) / math.sqrt(D) for j in range(i + 1)], dtype=torch.float64
                )
                w = torch.exp(s - s.max())
                w = w / w.sum()
                out[b, h, i] = (w[:, None] * v[b, h, : i + 1]).sum(0)
    return out


@pytest.mark.parametrize("cls", [SdpaAttention, MathAttention])
def test_attention_matches_float64_loop(cls):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q, k, v = (torch.randn(2, 3, 17, 8, generator=g) for _ in range(3))
    attn = backend(cls)
    out = attn(q, k, v)
    ref = naive_causal_attention(q, k, v)
    rel = (out.double() - ref).norm() / ref.norm()
    assert rel < 1e-5, rel


def test_attention_is_causal():
    q, k, v = (torch.randn(1, 2, 9, 4) for _ in range(3))
    attn = backend(SdpaAttention)
    base = attn(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[..., 5:, :] += 10 * torch.randn_like(k2[..., 5:, :])
    v2[..., 5:, :] += 10 * torch.randn_like(v2[..., 5:, :])
    changed = attn(q, k2, v2)
    assert torch.allclose(base[..., :5, :], changed[..., :5, :], atol=1e-6)
    assert not torch.allclose(base[..., 5:, :], changed[..., 5:, :])


@pytest.mark.parametrize("tie,pos", [(False, "rope"), (True, "learned")])
def test_gpt_parameter_count_matches_formula(tie, pos):
    L, d, f, V, S = 3, 48, 96, 101, 64
    model = GPT(model_cfg(tie_embeddings=tie, pos=pos), backend(SdpaAttention))
    per_block = 3 * d * d + d * d + 2 * d * f + 2 * d  # qkv, out, up+down, two norms
    expected = V * d + L * per_block + d + (0 if tie else V * d) + (S * d if pos == "learned" else 0)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_gpt_forward_shape_and_causality():
    model = GPT(model_cfg(), backend(SdpaAttention)).eval()
    idx = torch.randint(0, 101, (2, 20))
    out = model(idx)
    assert out.shape == (2, 20, 101) and torch.isfinite(out).all()
    idx2 = idx.clone()
    idx2[:, 12:] = torch.randint(0, 101, (2, 8))
    assert torch.allclose(model(idx2)[:, :12], out[:, :12], atol=1e-5)


@pytest.mark.parametrize("pairs", ["interleaved", "half"])
def test_rotary_is_a_rotation(pairs):
    x = torch.randn(2, 11, 3, 16)
    cos, sin = rotary_tables(11, 16, 10000.0, "cpu")
    y = apply_rotary(x, cos, sin, pairs)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(y[:, 0], x[:, 0])  # position 0: angle 0
    # relative: <R_m q, R_n k> depends only on m - n
    q, k = torch.randn(16), torch.randn(16)
    cos, sin = rotary_tables(12, 16, 10000.0, "cpu")
    rot = lambda v, p: apply_rotary(v.view(1, 1, 1, 16).expand(1, 12, 1, 16), cos, sin, pairs)[0, p, 0]
    assert torch.allclose(rot(q, 7) @ rot(k, 4), rot(q, 5) @ rot(k, 2), atol=1e-5)


def test_rotary_pair_layouts_are_one_rotation_up_to_a_permutation():
    """Pair i at dims (i, i + D/2) in ``half`` is pair i at dims (2i, 2i+1) in ``interleaved``;
    checked against a float64 rotation written per pair."""
    T, D = 9, 8
    x = torch.randn(1, T, 2, D, dtype=torch.float64)
    cos, sin = rotary_tables(T, D, 10000.0, "cpu", torch.float64)
    half = apply_rotary(x, cos, sin, "half")
    perm = torch.tensor([j for i in range(D // 2) for j in (i, i + D // 2)])  # interleaved position -> half dim
    inter = apply_rotary(x[..., perm], cos, sin, "interleaved")
    assert torch.allclose(inter, half[..., perm], atol=1e-12)
    for t in range(T):
        for i in range(D // 2):
            theta = t / 10000.0 ** (2 * i / D)
            a, b = x[0, t, :, i], x[0, t, :, i + D // 2]
            assert torch.allclose(half[0, t, :, i], a * math.cos(theta) - b * math.sin(theta), atol=1e-12)
            assert torch.allclose(half[0, t, :, i + D // 2], a * math.sin(theta) + b * math.cos(theta), atol=1e-12)


def test_step_stats_match_numpy_and_hand_values():
    rng = np.random.default_rng()
    samples = list(rng.uniform(5, 50, size=37))
    s = step_stats(samples)
    assert s["n_steps"] == 37
    assert s["step_ms_mean"] == pytest.approx(sum(samples) / 37)
    srt = sorted(samples)
    assert s["step_ms_p50"] == pytest.approx(srt[18])  # odd count: the middle sample
    # p90 by linear interpolation between order statistics at rank 0.9 * (n - 1) = 32.4
    assert s["step_ms_p90"] == pytest.approx(srt[32] + 0.4 * (srt[33] - srt[32]))
    mean = sum(samples) / 37
    assert s["step_ms_std"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in samples) / 36))


def _rank(rank, shard, tokens, steps, span, **metrics):
    return {
        "rank": rank,
        "world_size": 2,
        "metric_rules": {"loss": "mean"},
        "status": "ok",
        "error": None,
        "data_shard": shard,
        "tokens_per_step": tokens,
        "step_ms": steps,
        "warmup_ms": [50.0],
        "span_s": span,
        "metrics": metrics,
        "effective": {},
        "env": {},
    }


def test_aggregate_counts_distinct_shards_once_and_takes_the_slowest_rank():
    a = _rank(0, 0, 1000, [10.0, 12.0, 11.0], 0.040, peak_rss_gb=1.0, loss=2.0)
    b = _rank(1, 1, 1000, [11.0, 10.0, 13.0], 0.041, peak_rss_gb=1.5, loss=4.0)
    agg = aggregate([a, b])["metrics"]
    assert agg["tokens_per_step"] == 2000
    assert agg["tokens_per_s"] == pytest.approx(2000 * 3 / 0.041)
    assert agg["tokens_per_s_per_gpu"] == pytest.approx(agg["tokens_per_s"] / 2)
    assert agg["step_ms_p50"] == pytest.approx(12.0)  # per-step max: [11, 12, 13]
    assert agg["peak_rss_gb"] == 1.5 and agg["loss"] == 3.0
    assert agg["peak_rss_gb_rank0"] == 1.0 and agg["peak_rss_gb_rank1"] == 1.5  # every rank's own, not only the max
    a["energy"] = {"energy_j": 3.0, "avg_power_w": 30.0, "energy_method": "nvml counter"}
    b["energy"] = {"energy_j": 5.0, "avg_power_w": 50.0, "energy_method": "nvml counter"}
    agg = aggregate([a, b])["metrics"]
    assert agg["energy_j"] == 8.0 and (agg["energy_j_rank0"], agg["energy_j_rank1"]) == (3.0, 5.0)


def test_aggregate_does_not_double_count_replicated_ranks():
    a = _rank(0, 0, 1000, [10.0, 10.0], 0.020)
    b = _rank(1, 0, 1000, [10.0, 10.0], 0.020)  # same shard: the same tokens
    agg = aggregate([a, b])["metrics"]
    assert agg["tokens_per_s"] == pytest.approx(1000 * 2 / 0.020)


def test_aggregate_job_status_is_the_worst_rank():
    a = _rank(0, 0, 10, [1.0], 0.001)
    b = dict(_rank(1, 1, 10, [], 0.0), status="oom", error="CUDA out of memory")
    out = aggregate([a, b])
    assert out["status"] == "oom" and "rank 1: CUDA out of memory" in out["error"]


def _rank_context(cfg):
    from b200lab.parallel.data_parallel import DataParallel
    from b200lab.workloads.base import RankContext

    device = torch.device("cpu")
    return RankContext(cfg=cfg, device=device, strategy=DataParallel(cfg.parallelism, 0, 1, device))


def test_gradient_accumulation_equals_one_full_batch_step():
    """Train with grad_accum=2 must update the weights exactly as one AdamW step on the mean loss
    of the whole batch (float64 reference, independent code path)."""
    import copy

    import torch.nn.functional as F

    from b200lab.workloads.train import Train

    cfg = train_cfg({"name": "fp64", "compute_dtype": "float64"}, grad_accum=2)
    torch.set_default_dtype(torch.float64)
    try:
        work = Train(cfg.workload, _rank_context(cfg))
        work.setup()
        assert work.master is None
        reference = copy.deepcopy(work.model)
        inputs, targets = torch.cat(work.inputs), torch.cat(work.targets)
        assert inputs.shape == (6, 12) and work.tokens_per_step == 72
        opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
        loss = F.cross_entropy(reference(inputs).flatten(0, 1), targets.flatten())
        loss.backward()
        opt.step()
        work.step()
    finally:
        torch.set_default_dtype(torch.float32)
    for (name, p), q in zip(work.model.named_parameters(), reference.parameters()):
        assert p.dtype == torch.float64 and (p - q).abs().max() < 1e-12, (name, float((p - q).abs().max()))
    assert float(work.losses[-1]) == pytest.approx(float(loss), rel=1e-9)


@pytest.mark.parametrize("accum_dtype", ["float32", "bfloat16"])
def test_bf16_training_steps_float32_master_weights(accum_dtype):
    """bf16 weights, float32 masters: the optimizer sees the sum of the micro-batches' bf16
    gradients (float32 accumulation: exact to float32 against a float64 sum; bf16 accumulation:
    visibly rounded), applies AdamW to the masters (hand-written float64 AdamW as reference) and
    the model ends up holding the masters rounded to bf16."""
    import copy

    import torch.nn.functional as F

    from b200lab.workloads.train import Train

    accum = 4
    cfg = train_cfg({"name": "bf16", "compute_dtype": "bfloat16", "grad_accum_dtype": accum_dtype}, grad_accum=accum)
    work = Train(cfg.workload, _rank_context(cfg))
    work.setup()
    assert {p.dtype for p in work.model.parameters()} == {torch.bfloat16}
    assert {m.dtype for m in work.optimizer.param_groups[0]["params"]} == {torch.float32}
    before = [m.detach().double() for m in work.master.masters]

    replica = copy.deepcopy(work.model)
    expected = [torch.zeros_like(p, dtype=torch.float64) for p in replica.parameters()]
    for x, y in zip(work.inputs, work.targets):
        replica.zero_grad(set_to_none=True)
        (F.cross_entropy(replica(x).float().flatten(0, 1), y.flatten()) / accum).backward()
        for e, p in zip(expected, replica.parameters()):
            e += p.grad.double()

    seen = []
    work.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append([m.grad.clone() for m in opt.param_groups[0]["params"]])
    )
    work.step()
    [grads] = seen
    assert {g.dtype for g in grads} == {torch.float32}
    worst = max(float((g.double() - e).abs().max() / e.abs().max()) for g, e in zip(grads, expected))
    if accum_dtype == "float32":
        assert worst < 1e-6, worst
    else:
        assert worst > 1e-4, f"bf16 accumulation should show bf16 rounding, got {worst}"

    lr, wd, b1, b2, eps = 1e-2, 0.1, 0.9, 0.999, 1e-8
    for w0, g, m, p in zip(before, grads, work.master.masters, work.model.parameters()):
        g = g.double()
        m_hat, v_hat = (1 - b1) * g / (1 - b1), (1 - b2) * g * g / (1 - b2)
        reference = w0 * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps)
        assert m.dtype == torch.float32 and float((m.double() - reference).abs().max()) < 1e-6
        assert torch.equal(p, m.to(torch.bfloat16)) and p.grad is None
    assert (
        torch.cat([(m.double() - w0).flatten() for m, w0 in zip(work.master.masters, before)]).abs() > 1e-3
    ).float().mean() > 0.9


def test_aggregate_reports_the_spread_across_trials():
    a = _rank(0, 0, 100, [10.0, 12.0, 20.0, 22.0], 0.064)
    b = _rank(1, 1, 100, [11.0, 11.0, 21.0, 21.0], 0.065)
    a.update(trial_steps=[2, 2], trial_spans=[0.022, 0.042])
    b.update(trial_steps=[2, 2], trial_spans=[0.023, 0.042])
    m = aggregate([a, b])["metrics"]
    # trial 1: per-step max [11, 12] -> p50 11.5, 200 tokens x 2 / 0.023 s; trial 2: [21, 22] -> 21.5, 400 / 0.042
    assert m["trials"] == 2
    assert (m["trial_step_ms_p50_min"], m["trial_step_ms_p50_max"]) == (11.5, 21.5)
    assert m["trial_tokens_per_s_max"] == pytest.approx(400 / 0.023) and m["trial_tokens_per_s_min"] == pytest.approx(
        400 / 0.042
    )
    assert m["trial_tokens_per_s_std"] == pytest.approx(math.sqrt(2) * (400 / 0.023 - 400 / 0.042) / 2)


def test_headline_of_three_trials_is_the_median_trial_not_the_pooled_or_best_one():
    rng = random.Random()
    spans = [rng.uniform(0.02, 0.06) for _ in range(3)]
    steps = [rng.uniform(5.0, 25.0) for _ in range(6)]
    rank = _rank(0, 0, 100, steps, sum(spans))
    rank.update(
        world_size=1,
        trial_steps=[2, 2, 2],
        trial_spans=spans,
        flops_per_step=3e12,
        env={"gpu": "NVIDIA H100 80GB HBM3"},
    )
    rank["effective"] = {**rank.get("effective", {}), "precision": {"peak_key": "bf16"}}
    m = aggregate([rank])["metrics"]
    rates = sorted(100 * 2 / s for s in spans)  # the naive way: sort three values
    assert m["trial_tokens_per_s_median"] == pytest.approx(rates[1])
    assert m["trial_tokens_per_s_p10"] == pytest.approx(rates[0] + 0.2 * (rates[1] - rates[0]))  # linear, rank 0.2
    assert m["trial_tokens_per_s_p90"] == pytest.approx(rates[1] + 0.8 * (rates[2] - rates[1]))
    p50s = sorted((steps[2 * k] + steps[2 * k + 1]) / 2 for k in range(3))
    assert m["trial_step_ms_p50_median"] == pytest.approx(p50s[1])
    # MFU of the median trial: 3 TFLOP per step at its rate, over the H100's dense bf16 peak
    median_tflops = 3e12 * rates[1] / 100 / 1e12
    assert m["mfu_trial_median"] == pytest.approx(median_tflops / m["peak_tflops"])
    assert m["mfu_trial_median"] != pytest.approx(m["mfu"])  # pooled over 6 steps / summed spans differs


@pytest.mark.parametrize("compiled", [False, True])
def test_master_gradient_sum_is_float32_exact(compiled):
    """Three bf16 micro-batch gradients summed into float32 masters (eager, or through inductor's
    generated kernels) against a float64 sum; the step writes the masters back rounded to bf16."""
    from b200lab.precision.master import MasterWeights

    shapes = [(64, 32), (7,), (3, 5, 11)]
    params = [torch.nn.Parameter(torch.randn(s, dtype=torch.bfloat16)) for s in shapes]
    master = MasterWeights(params, torch.float32, torch.float32, compile=compiled)
    expected = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    for _ in range(3):
        for p, e in zip(params, expected):
            p.grad = torch.randn_like(p) * 10 ** float(torch.randint(-3, 3, ()))
            e += p.grad.double()
        master.accumulate()
        assert all(p.grad is None for p in params)
    for m, e in zip(master.masters, expected):
        assert m.grad.dtype == torch.float32
        assert float((m.grad.double() - e).abs().max()) <= 2**-22 * float(e.abs().max())

    def sgd():
        for m in master.masters:
            m.sub_(0.5 * m.grad)

    before = [m.clone() for m in master.masters]
    master.step(sgd)
    for p, m, b in zip(params, master.masters, before):
        assert torch.equal(m, b - 0.5 * m.grad) and torch.equal(p, m.to(torch.bfloat16))


def test_master_weights_count_an_unused_parameter_as_zero_gradient():
    from b200lab.precision.master import MasterWeights

    used, unused = (torch.nn.Parameter(torch.randn(5, dtype=torch.bfloat16)) for _ in range(2))
    master = MasterWeights([used, unused], torch.float32, torch.float32)
    g = torch.randn(5, dtype=torch.bfloat16)
    for step in range(2):
        used.grad = g.clone()
        if step == 1:
            unused.grad = g.clone()
        master.accumulate()
    assert torch.equal(master.masters[0].grad, 2 * g.float())
    assert torch.equal(master.masters[1].grad, g.float())


def naive_attention(q, k, v, allowed):
    """float64 loop with an explicit predicate allowed(b, i, j) and K/V heads shared by groups
    of query heads (grouped-query attention written out)."""
    q, k, v = (t.double() for t in (q, k, v))
    B, H, Tq, D = q.shape
    group = H // k.shape[1]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            kh = h // group
            for i in range(Tq):
                js = [j for j in range(k.shape[2]) if allowed(b, i, j)]
                s = torch.tensor([float(q[b, h, i] @ k[b, kh, j]) / math.sqrt(D) for j in js], dtype=torch.float64)
                w = torch.exp(s - s.max())
                out[b, h, i] = ((w / w.sum())[:, None] * v[b, kh, js]).sum(0)
    return out


@pytest.mark.parametrize("cls", [SdpaAttention, MathAttention])
def test_masked_grouped_attention_matches_a_float64_loop(cls):
    """Sliding window + packed documents + 2 K/V heads for 6 query heads."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    B, T, D, window = 2, 19, 8, 5
    q = torch.randn(B, 6, T, D, generator=g)
    k, v = torch.randn(B, 2, T, D, generator=g), torch.randn(B, 2, T, D, generator=g)
    docs = torch.sort(torch.randint(0, 4, (B, T), generator=g), dim=1).values
    out = backend(cls)(q, k, v, AttnMask(window=window, doc_ids=docs))
    ref = naive_attention(q, k, v, lambda b, i, j: j <= i and i - j < window and docs[b, i] == docs[b, j])
    assert (out.double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize("cls", [SdpaAttention, MathAttention])
def test_decode_queries_see_the_cache_up_to_their_position(cls):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.randn(1, 4, 3, 8, generator=g)  # 3 new queries against 11 keys: positions 8, 9, 10
    k, v = torch.randn(1, 4, 11, 8, generator=g), torch.randn(1, 4, 11, 8, generator=g)
    out = backend(cls)(q, k, v, AttnMask())
    ref = naive_attention(q, k, v, lambda b, i, j: j <= 8 + i)
    assert (out.double() - ref).abs().max() < 1e-5


def test_sdpa_records_the_kernel_its_dispatcher_chose():
    attn = backend(SdpaAttention)
    q = torch.randn(1, 2, 16, 8)
    attn.probe(q, q, q)
    assert attn.effective["kernel"] == "sdpa-flash"  # PyTorch's CPU flash kernel
    math_only = backend(SdpaAttention, backends=["math"])
    math_only(q, q, q)
    assert math_only.effective["kernel"] == "sdpa-math" and math_only.effective["allowed"] == ["math"]
    masked = backend(SdpaAttention)
    masked(q, q, q, AttnMask(window=4))
    assert masked.effective["kernel"].endswith("-masked")
    attn(q[:, :, -1:], q, q)  # a decode call after the causal probe is recorded by its kind
    assert set(attn.effective["kernels"]) == {"causal", "decode"} and attn.effective["kernels"]["decode"].endswith(
        "-masked"
    )


def test_document_ids_keep_attention_inside_each_document():
    model = GPT(model_cfg(), backend(MathAttention)).eval()
    idx = torch.randint(0, 101, (1, 16))
    docs = torch.tensor([[0] * 7 + [1] * 9])
    alone = model(idx[:, 7:], positions=torch.arange(9))  # document 1 on its own, positions restarting at 0
    packed = model(idx, positions=torch.cat([torch.arange(7), torch.arange(9)]), doc_ids=docs)
    assert (packed[:, 7:] - alone).abs().max() < 1e-4
    assert (model(idx)[:, 7:] - alone).abs().max() > 1e-3  # without doc ids the first document leaks in


def test_a_malformed_rank_report_is_named_not_a_key_error():
    good = _rank(0, 0, 100, [10.0, 11.0], 0.021)
    out = aggregate([good, {k: v for k, v in _rank(1, 1, 100, [10.0], 0.01).items() if k != "data_shard"}])
    assert out["status"] == "error" and out["error"].startswith("rank report 1: missing data_shard")
    assert out["metrics"]["n_steps"] == 2  # the readable rank is still aggregated
    out = aggregate([dict(good, step_ms="fast")])
    assert out["status"] == "error" and out["error"] == "rank report 0: step_ms='fast' is not list"


def test_a_strategys_flops_share_and_shard_keep_peers_from_double_counting():
    """Two tensor-parallel-like peers: one data shard, each doing half of one replica's FLOPs.
    The job's tokens are one batch's and its FLOPs one replica's, spread over two GPUs."""
    from b200lab.parallel.base import ParallelStrategy
    from b200lab.workloads.base import RankContext, model_flops_per_step

    class HalfPeers(ParallelStrategy):
        def data_shard(self):
            return 0

        def flops_share(self):
            return 0.5

    cfg = OmegaConf.create(
        {
            "model": model_cfg(),
            "seq": {"name": "t", "len": 32, "batch": 2},
            "run": {"seed": 1},
            "parallelism": {"name": "half_peers", "nproc": 2},
        }
    )
    device = torch.device("cpu")
    per_rank = [
        model_flops_per_step(
            RankContext(
                cfg=cfg, device=device, strategy=HalfPeers(cfg.parallelism, r, 2, device), rank=r, world_size=2
            ),
            2,
            True,
        )
        for r in (0, 1)
    ]
    from b200lab.models.gpt.family import GPTFamily

    replica = 2 * GPTFamily(cfg.model).flops_per_sample(32, True)
    assert per_rank == [replica // 2, replica // 2]
    ranks = [dict(_rank(r, 0, 64, [10.0, 10.0], 0.02), flops_per_step=f) for r, f in enumerate(per_rank)]
    m = aggregate(ranks)["metrics"]
    assert m["tokens_per_step"] == 64
    assert m["tflops"] == pytest.approx(replica * 2 / 0.02 / 2 / 1e12)


@pytest.mark.parametrize("cls", [SdpaAttention, MathAttention])
def test_absolute_positions_with_documents_in_a_rolling_window(cls):
    """Keys at absolute positions 100..107 (a rolling cache), the last 2 slots are the queries;
    documents are per slot, causality and the window compare positions."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.randn(1, 2, 2, 8, generator=g)
    k, v = torch.randn(1, 2, 8, 8, generator=g), torch.randn(1, 2, 8, 8, generator=g)
    k_pos, q_pos = torch.arange(100, 108), torch.arange(106, 108)
    docs = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    out = backend(cls)(q, k, v, AttnMask(window=4, doc_ids=docs, q_pos=q_pos, k_pos=k_pos))
    ref = naive_attention(q, k, v, lambda b, i, j: 0 <= int(q_pos[i] - k_pos[j]) < 4 and docs[b, 6 + i] == docs[b, j])
    assert (out.double() - ref).abs().max() < 1e-5
