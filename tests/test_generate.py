"""workload=generate: the static KV cache and the decode step against full recomputation, the
sampler, the byte count behind hbm_bw_util, and the workload through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from b200lab.core.registry import complete
from b200lab.precision.weight_only import FP8WeightOnlyPrecision
from b200lab.serving import bandwidth
from b200lab.serving.decoder import StaticDecoder
from b200lab.serving.sampling import next_token
from support import INLINE, results_files, run_cli
from tiny_models import (
    assert_context_matters,
    decoder_of,
    greedy_by_recompute,
    tiny_gpt,
)


@pytest.mark.parametrize(
    "attention,fields",
    [
        ("sdpa", {}),
        ("sdpa", {"n_kv_heads": 2}),
        ("math", {"n_kv_heads": 2}),
        ("sdpa", {"pos": "learned", "max_seq_len": 32}),
    ],
)
def test_static_cache_decode_reproduces_the_full_recompute_logits(attention, fields):
    """Prefill 9 tokens into a 20-slot static cache, then decode 5 one at a time at a position
    tensor: float64 logits equal the full causal forward's at every position. (attention=flex
    decodes through the same path; its CPU kernel takes float32 only and costs 14 s to compile
    here, so CI leaves it out.)"""
    model = tiny_gpt(attention, **fields)
    idx = torch.randint(0, 97, (2, 14))
    with torch.no_grad():
        full = model(idx)
        decoder = decoder_of(model)
        cache = decoder.static_cache(2, 20, torch.float64)
        steps = [decoder.logits(idx[:, :9], cache=cache)]
        steps += [decoder.logits(idx[:, t : t + 1], positions=torch.tensor([t]), cache=cache) for t in range(9, 14)]
        last = decoder.logits(idx[:, :9], cache=decoder.static_cache(2, 20, torch.float64), last_only=True)
    assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-10
    assert last.shape == (2, 1, 97) and (last[:, 0] - full[:, 8]).abs().max() < 1e-10


def test_static_decoder_greedy_tokens_equal_recomputation_eager_and_compiled():
    """The workload's decoder (buffers updated in place, one position tensor) gives the logits
    and tokens of greedy decoding by full recomputation, with weights large enough that the
    tokens depend on the context; compiled, the decode step compiles once, takes the buffers it
    mutates as static inputs (compile=reduce-overhead's CUDA graphs skip a step that mutates a
    non-static input) and gives the same tokens at every position."""
    model = tiny_gpt("sdpa", n_kv_heads=2, std=1.0)
    prompts = torch.randint(0, 97, (3, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = greedy_by_recompute(model, prompts, 6)
        full = model(torch.cat([prompts, expected], dim=1))[:, 4:-1]  # the logits that chose each token
    assert_context_matters(model, torch.cat([prompts, expected], dim=1), 4)
    seen = []
    pick = lambda logits: seen.append(logits.clone()) or next_token(logits)  # noqa: E731
    eager = StaticDecoder(decoder_of(model), 3, 5, 6, 11, torch.float64, pick)
    assert torch.equal(eager.generate(prompts), expected)
    assert (torch.stack(seen, dim=1) - full).abs().max() < 1e-10
    assert torch.equal(
        eager.generate(prompts), expected
    )  # a second generation over the stale cache: the length mask hides it
    torch._dynamo.reset()
    compiled = StaticDecoder(decoder_of(model), 3, 5, 6, 11, torch.float64, next_token)
    static = {}

    def inductor_noting_static_inputs(gm, example_inputs):
        static.update(
            {
                id(t): getattr(t, "_dynamo_static_input_type", None)
                for t in example_inputs
                if isinstance(t, torch.Tensor)
            }
        )
        return torch._inductor.compile(gm, example_inputs)

    compiled.compile("default", fullgraph=True, own_graph=False)
    compiled.decode_fn = torch.compile(compiled._decode, backend=inductor_noting_static_inputs, fullgraph=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert torch.equal(compiled.generate(prompts), expected)
        assert torch.equal(compiled.generate(prompts), expected)
    assert all(static.get(id(t)) for t in (compiled.tok, compiled.pos, compiled.out)), static


def test_sampling_draws_within_top_k_and_repeats_with_the_seed():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(next_token(logits), logits.argmax(-1))
    top3 = logits.topk(3, dim=-1).indices
    draws = [next_token(logits, "sample", 1.5, 3, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(bool((d[:, None] == top3).any(-1).all()) for d in draws)
    assert len({tuple(d.tolist()) for d in draws}) > 1  # it samples
    again = next_token(logits, "sample", 1.5, 3, torch.Generator().manual_seed(0))
    assert torch.equal(again, draws[0])


def test_decode_bytes_count_weights_once_and_embedding_rows_only():
    model = tiny_gpt("sdpa", dtype=torch.float32, n_kv_heads=2)
    c = model.cfg
    per_layer = (32 * (4 + 2 + 2) * 8) + 32 * 32 + 2 * 32 * 64 + 2 * 32  # qkv, out, up + down, two RMSNorm weights
    expected = 4 * (c.n_layers * per_layer + 32 + 97 * 32 + 3 * 32)  # final norm, head, 3 embedding rows
    assert bandwidth.weight_bytes(model, batch=3) == expected
    tied = tiny_gpt("sdpa", dtype=torch.float32, tie_embeddings=True)
    assert (
        bandwidth.weight_bytes(tied, 3) == bandwidth.weight_bytes(tiny_gpt("sdpa", dtype=torch.float32), 3) - 4 * 3 * 32
    )
    # 2 layers x K and V x batch 3 x 2 heads x head dim 8 x 4 bytes, for 10 positions read and 1 written
    assert bandwidth.kv_bytes(2, 3, 2, 8, 4, position=9) == 2 * 2 * 3 * 2 * 8 * 4 * 11
    # under a sliding window of 4 the token at position 9 reads the last 4 keys; at position 2 all 3 it has
    assert bandwidth.kv_bytes(2, 3, 2, 8, 4, position=9, window=4) == 2 * 2 * 3 * 2 * 8 * 4 * (4 + 1)
    assert bandwidth.kv_bytes(2, 3, 2, 8, 4, position=2, window=4) == 2 * 2 * 3 * 2 * 8 * 4 * (3 + 1)


def test_decode_bytes_of_fp8_weights_count_their_buffers():
    """precision=fp8_weight_only keeps each converted layer's weight as buffers (e4m3 weight, a
    float32 scale per output row): they are read every step and count; the rotary tables
    (buffers too, not persistent) do not."""
    model = tiny_gpt("sdpa", dtype=torch.float32, n_kv_heads=2)
    recipe = FP8WeightOnlyPrecision(
        complete(
            "precision", {"_target_": "b200lab.precision.weight_only.FP8WeightOnlyPrecision", "name": "fp8_weight_only"}
        ),
        "cpu",
        training=False,
    )
    model = recipe.convert(model)
    assert model.rope_cos is not None
    linears = [(32, 64), (32, 32), (32, 64), (64, 32)]  # (in, out) of qkv (4 + 2 + 2 heads x 8), out, up, down
    fp8 = sum(i * o * 1 + o * 4 for i, o in linears)  # e4m3 weight + float32 scale per output row
    head = 32 * 97 + 97 * 4
    norms = 4 * (2 * 32 * 2 + 32)  # two per layer and the final one, float32
    assert bandwidth.weight_bytes(model, batch=3) == 2 * fp8 + head + norms + 4 * 3 * 32  # + 3 float32 embedding rows


def test_generation_bytes_by_hand_with_and_without_a_window():
    """One generation's decode steps: the weights once per step, the KV bytes at each position
    fed (prompt_len .. prompt_len + output_len - 2), each capped at the attention window."""
    plain, windowed = tiny_gpt("sdpa", dtype=torch.float32), tiny_gpt("sdpa", dtype=torch.float32, window=7)
    weights = bandwidth.weight_bytes(plain, 2)
    per_position = 2 * 2 * 2 * 4 * 8 * 4  # layers x K and V x batch 2 x 4 heads x head dim 8 x 4 bytes
    # prompt 5, output 5: decode steps at positions 5, 6, 7, 8 read 6, 7, 8, 9 keys (window 7: 6, 7, 7, 7) and write 1
    assert bandwidth.generation_bytes(decoder_of(plain), 2, 5, 5, 4) == 4 * weights + per_position * (7 + 8 + 9 + 10)
    assert bandwidth.generation_bytes(decoder_of(windowed), 2, 5, 5, 4) == 4 * weights + per_position * (7 + 8 + 8 + 8)


@pytest.mark.e2e
def test_generate_through_the_cli(tmp_path, store):
    """One point: metrics with their relationships, the bytes per decode step by hand, the copy
    bandwidth as given, the tokens."""
    proc = run_cli(
        [
            "workload=generate",
            INLINE,
            "seq=short",
            "seq.batch=2",
            "workload.options.output_len=6",
            "workload.steps=3",
            "workload.warmup_steps=1",
            "workload.options.copy_gbps=10",
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    (row,) = results_files(tmp_path / "outputs")
    m = row["metrics"]
    assert m["n_steps"] == 3 and m["tokens_per_step"] == 2 * 6
    for key in (
        "ttft_ms_p50",
        "ttft_ms_p99",
        "tpot_ms_p50",
        "tpot_ms_p99",
        "itl_ms_p50",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
    ):
        assert m[key] > 0, key
    assert m["decode_tokens_per_s"] == pytest.approx(2 / (m["tpot_ms_mean"] / 1e3), rel=1e-6)
    assert m["hbm_bw_util"] == pytest.approx(m["decode_gbps"] / 10, rel=1e-9) and m["copy_gbps"] == 10
    assert m["hbm_bw_util_min"] <= m["hbm_bw_util"] <= m["hbm_bw_util_max"]
    gen = row["effective"]["generate"]
    # model=tiny in float32: 2 layers, d_model 128, 4 heads of 32, d_ff 512, vocab 2048, untied head
    per_layer = 128 * 3 * 128 + 128 * 128 + 2 * 128 * 512 + 2 * 128  # qkv, out, up + down, two RMSNorm weights
    weights = 4 * (2 * per_layer + 128 + 2048 * 128 + 2 * 128)  # + final norm, head, 2 embedding rows
    kv = 2 * 2 * 2 * 4 * 32 * 4  # one position: layers x K and V x batch 2 x 4 heads x 32 x 4 bytes
    # 5 decode steps feed positions 128..132: each reads keys 0..p and writes p
    assert gen["cache_dtype"] == "float32" and gen["weight_bytes_per_step"] == weights
    assert m["decode_bytes_per_step"] == pytest.approx(
        (5 * weights + kv * sum(p + 2 for p in range(128, 133))) / 5, rel=1e-12
    )
    assert (
        gen["max_len"] == 128 + 6
        and gen["cuda_graph"] == "none"
        and row["effective"]["copy_bandwidth"]["source"].startswith("given")
    )
    tokens = np.loadtxt(next((tmp_path / "outputs").rglob("generated_tokens.txt")), dtype=int)
    assert tokens.shape == (2, 6) and (tokens >= 0).all() and (tokens < 2048).all()


@pytest.mark.e2e
def test_generate_refuses_what_cannot_decode(tmp_path, store):
    proc = run_cli(
        [
            "workload=generate",
            INLINE,
            "seq=short",
            "workload.options.output_len=1",
            "workload.options.max_len=100",
            "workload.options.sampling=beam",
            "workload.options.cuda_graph=true",
            "attention=te",
            "precision=fp8_mxfp8",
            "seq.batch=8",
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 2, proc.output
    for needle in (
        "workload.options.max_len=100 cannot hold prompt_len + output_len = 128 + 1 = 129 tokens",
        "workload.options.output_len=1: must be at least 2",
        "workload.options.sampling='beam': choose greedy or sample",
        "workload.options.cuda_graph=true needs a CUDA GPU and this job runs on cpu",
        "attention=te has no decode path for workload=generate",
        "precision=fp8_mxfp8: Transformer Engine's FP8 GEMMs need a multiple of 32 rows, and a decode step has "
        "seq.batch=8; "
        "use precision=fp8_weight_only",
    ):
        assert needle in proc.stderr, needle
    assert not (tmp_path / "outputs").exists() or not results_files(tmp_path / "outputs")


@pytest.mark.parametrize(
    "workload, precision, batch, refused",
    [
        ("generate", "fp8", 8, False),  # 8 rows a decode step: TE's delayed recipe runs it
        ("generate", "fp8_current", 12, True),  # 12 is not a multiple of 8
        ("generate", "fp8_mxfp8", 16, True),  # mxfp8 needs 32
        ("generate", "fp8_mxfp8", 32, False),
        ("serve", "fp8", 32, True),  # any running batch and prompt length
        ("serve", "fp8_auto", 32, False),  # fp8_auto takes its next path instead (below)
        ("generate", "bf16", 3, False),
    ],
)
def test_transformer_engine_decode_rows(workload, precision, batch, refused):
    """Transformer Engine FP8 in a decode workload: refused exactly where its row alignment cannot
    hold, with the alternatives named."""
    from b200lab.core.registry import config_class
    from support import compose

    cfg = compose([f"workload={workload}", f"precision={precision}", f"seq.batch={batch}", "seq=short"])
    rows = config_class("workload", cfg.workload._target_).decode_rows(cfg.workload, cfg)
    why = config_class("precision", cfg.precision._target_).decode_problem(cfg.precision, rows)
    problems = [why] if why else []
    assert bool(problems) == refused, problems
    if refused:
        assert problems[0].startswith(f"precision={precision}: Transformer Engine's FP8 GEMMs need a multiple of")
        assert "use precision=fp8_weight_only" in problems[0]


def test_fp8_auto_passes_transformer_engine_over_for_a_decode_step_and_says_why():
    """A decode workload tells fp8_auto why TE cannot run its steps (generate at an unaligned batch,
    serve always); fp8_auto then takes its next path with that reason first, and an aligned
    generate leaves it free to pick TE."""
    from b200lab.core.registry import config_class
    from b200lab.precision.config.fp8_auto import FP8AutoConfig
    from b200lab.precision.config.te_fp8 import TEFP8Config
    from support import compose

    def overrides(*extra):
        cfg = compose(["precision=fp8_auto", "seq=short", *extra])
        return config_class("workload", cfg.workload._target_).precision_overrides(cfg)

    assert overrides("workload=generate", "seq.batch=8") == {}
    assert overrides("workload=serve", "precision=bf16") == {}
    avoid = overrides("workload=serve")
    assert avoid["avoid_te"].startswith("Transformer Engine's FP8 GEMMs need a multiple of 8 rows")
    cfg = OmegaConf.merge(compose(["precision=fp8_auto"]).precision, avoid)
    config, passed = FP8AutoConfig.candidates(cfg, "cuda", training=False)
    assert passed[0] == f"transformer_engine: {avoid['avoid_te']}" and config is not TEFP8Config
