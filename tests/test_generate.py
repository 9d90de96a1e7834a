"""workload=generate: the static KV cache and the decode step against full recomputation, the
sampler, the byte count behind hbm_bw_util, and the workload through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from b200lab.attention import FlexAttention, MathAttention, SdpaAttention
from b200lab.models.gpt import GPT, GPTConfig
from b200lab.serving import bandwidth
from b200lab.serving.decoder import StaticDecoder
from b200lab.serving.sampling import next_token

from conftest import INLINE, results_files, run_cli

BACKENDS = {"sdpa": SdpaAttention, "math": MathAttention, "flex": FlexAttention}


def tiny_gpt(attention: str = "sdpa", dtype=torch.float64, **fields) -> GPT:
    """A 2-layer GPT with fresh random weights, in ``dtype``."""
    cfg = OmegaConf.structured(GPTConfig(_target_="b200lab.models.gpt.GPTFamily", name="t", n_layers=2, d_model=32, n_heads=4,
                                         d_ff=64, vocab_size=97, **fields))
    acfg = OmegaConf.merge(OmegaConf.structured(BACKENDS[attention].Config), {"name": attention, "_target_": "x"})
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = GPT(cfg, BACKENDS[attention](acfg, "cpu")).eval()
    finally:
        torch.set_default_dtype(default)
    model.prepare(16)
    return model


def greedy_by_recompute(model, prompts: torch.Tensor, n: int) -> torch.Tensor:
    """The reference: the whole sequence through the model for every new token."""
    seq = prompts
    for _ in range(n):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, prompts.shape[1]:]


@pytest.mark.parametrize("attention,fields", [("sdpa", {}), ("sdpa", {"n_kv_heads": 2}), ("math", {"n_kv_heads": 2}),
                                              ("sdpa", {"pos": "learned", "max_seq_len": 32})])
def test_static_cache_decode_reproduces_the_full_recompute_logits(attention, fields):
    """Prefill 9 tokens into a 20-slot static cache, then decode 5 one at a time at a position
    tensor: float64 logits equal the full causal forward's at every position. (attention=flex
    decodes through the same path; its CPU kernel takes float32 only and costs 14 s to compile
    here, so CI leaves it out.)"""
    model = tiny_gpt(attention, **fields)
    idx = torch.randint(0, 97, (2, 14))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_static_cache(2, 20)
        steps = [model(idx[:, :9], cache=cache)]
        steps += [model(idx[:, t:t + 1], positions=torch.tensor([t]), cache=cache) for t in range(9, 14)]
        last = model(idx[:, :9], cache=model.new_static_cache(2, 20), last_only=True)
    assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-10
    assert last.shape == (2, 1, 97) and (last[:, 0] - full[:, 8]).abs().max() < 1e-10


def test_static_decoder_greedy_tokens_equal_recomputation_eager_and_compiled():
    """The workload's decoder (buffers updated in place, one position tensor) gives the tokens
    of greedy decoding by full recomputation; compiled, the decode step compiles once and gives
    the same tokens at every position."""
    model = tiny_gpt("sdpa", n_kv_heads=2)
    prompts = torch.randint(0, 97, (3, 5))
    with torch.no_grad():
        expected = greedy_by_recompute(model, prompts, 6)
    pick = lambda logits: next_token(logits)  # noqa: E731
    eager = StaticDecoder(model, 3, 5, 6, 11, torch.float64, pick)
    assert torch.equal(eager.generate(prompts), expected)
    assert torch.equal(eager.generate(prompts), expected)  # a second generation over the stale cache: the length mask hides it
    torch._dynamo.reset()
    compiled = StaticDecoder(model, 3, 5, 6, 11, torch.float64, pick)
    compiled.compile("default", fullgraph=True, own_graph=False)
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert torch.equal(compiled.generate(prompts), expected)
        assert torch.equal(compiled.generate(prompts), expected)


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
    assert bandwidth.weight_bytes(tied, 3) == bandwidth.weight_bytes(tiny_gpt("sdpa", dtype=torch.float32), 3) - 4 * 3 * 32
    # 2 layers x K and V x batch 3 x 2 heads x head dim 8 x 4 bytes, for 10 positions read and 1 written
    assert bandwidth.kv_bytes(2, 3, 2, 8, 4, position=9) == 2 * 2 * 3 * 2 * 8 * 4 * 11


@pytest.mark.e2e
def test_generate_through_the_cli(tmp_path, store):
    """One point: metrics with their relationships, the copy bandwidth as given, the tokens."""
    proc = run_cli(["workload=generate", INLINE, "seq=short", "seq.batch=2", "workload.options.output_len=6", "workload.steps=3",
                    "workload.warmup_steps=1", "workload.options.copy_gbps=10"], tmp_path, store)
    assert proc.returncode == 0, proc.output
    (row,) = results_files(tmp_path / "outputs")
    m = row["metrics"]
    assert m["n_steps"] == 3 and m["tokens_per_step"] == 2 * 6
    for key in ("ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99", "itl_ms_p50", "prefill_tokens_per_s", "decode_tokens_per_s"):
        assert m[key] > 0, key
    assert m["decode_tokens_per_s"] == pytest.approx(2 / (m["tpot_ms_mean"] / 1e3), rel=1e-6)
    assert m["hbm_bw_util"] == pytest.approx(m["decode_gbps"] / 10, rel=1e-9) and m["copy_gbps"] == 10
    assert m["hbm_bw_util_min"] <= m["hbm_bw_util"] <= m["hbm_bw_util_max"]
    gen = row["effective"]["generate"]
    assert gen["max_len"] == 128 + 6 and gen["cuda_graph"] == "none" and row["effective"]["copy_bandwidth"]["source"].startswith("given")
    tokens = np.loadtxt(next((tmp_path / "outputs").rglob("generated_tokens.txt")), dtype=int)
    assert tokens.shape == (2, 6) and (tokens >= 0).all() and (tokens < 2048).all()


@pytest.mark.e2e
def test_generate_refuses_what_cannot_decode(tmp_path, store):
    proc = run_cli(["workload=generate", INLINE, "seq=short", "workload.options.output_len=64", "workload.options.max_len=100",
                    "workload.options.sampling=beam", "workload.options.cuda_graph=true", "attention=te"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    for needle in ("workload.options.max_len=100 cannot hold prompt_len + output_len = 128 + 64 = 192 tokens",
                   "workload.options.sampling='beam': choose greedy or sample",
                   "workload.options.cuda_graph=true needs a CUDA GPU and this job runs on cpu",
                   "attention=te has no decode path for workload=generate"):
        assert needle in proc.stderr, needle
    assert not (tmp_path / "outputs").exists() or not results_files(tmp_path / "outputs")
