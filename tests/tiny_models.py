"""Small models, corpora and references the numerical tests share: a tiny GPT in float64, its
decode contract, greedy decoding by full recomputation, a corpus folder, the naive perplexity."""

from __future__ import annotations

import math
import random

import torch
from omegaconf import OmegaConf

from b200lab.attention.base import MathAttention
from b200lab.attention.flex import FlexAttention
from b200lab.attention.sdpa import SdpaAttention
from b200lab.core.registry import complete
from b200lab.models.config.gpt import GPTConfig
from b200lab.models.gpt.family import GPTFamily
from b200lab.models.gpt.model import GPT

BACKENDS = {"sdpa": SdpaAttention, "math": MathAttention, "flex": FlexAttention}
# a two-layer mixture of experts small enough for spawned gloo ranks (model section, before completion)
TINY_MOE = {
    "_target_": "b200lab.models.moe.family.MoEFamily",
    "name": "t",
    "n_layers": 2,
    "d_model": 16,
    "n_heads": 2,
    "d_ff": 32,
    "vocab_size": 50,
    "n_experts": 4,
    "top_k": 2,
    "n_shared_experts": 1,
}


def decoder_of(model):
    """The GPT family's decode contract for a model built outside a workload."""
    return GPTFamily(model.cfg).decoder(model)


def tiny_gpt(
    attention: str = "sdpa", dtype=torch.float64, std: float | None = None, window: int | None = None, **fields
) -> GPT:
    """A 2-layer GPT with fresh random weights, in ``dtype``. ``std``: every weight redrawn from
    N(0, std^2). At the init's 0.02 the next greedy token hardly depends on anything but the
    current one, so a check of tokens alone misses cache and position bugs; at 1.0 rotating the
    decoded token one position late changed every request's tokens of the continuous-batching
    trace (at 0.3, none)."""
    cfg = OmegaConf.structured(
        GPTConfig(
            _target_="b200lab.models.gpt.family.GPTFamily",
            name="t",
            n_layers=2,
            d_model=32,
            n_heads=4,
            d_ff=64,
            vocab_size=97,
            **fields,
        )
    )
    acfg = OmegaConf.merge(
        OmegaConf.structured(BACKENDS[attention].Config), {"name": attention, "_target_": "x", "window": window}
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = GPT(cfg, BACKENDS[attention](acfg, "cpu")).eval()
    finally:
        torch.set_default_dtype(default)
    if std is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, std, generator=torch.Generator().manual_seed(p.numel()))
    model.prepare(16)
    return model


def greedy_by_recompute(model, prompts: torch.Tensor, n: int) -> torch.Tensor:
    """The reference: the whole sequence through the model for every new token."""
    seq = prompts
    for _ in range(n):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, prompts.shape[1] :]


def assert_context_matters(model, seq: torch.Tensor, start: int) -> None:
    """The greedy token after each position from ``start`` on differs, at least a third of the
    time, from the one the same token alone would give: a decode step that loses the cache or
    shifts a position changes the tokens, so comparing tokens can catch it."""
    with torch.no_grad():
        logits = model(seq)[:, start:-1]
        alone = torch.cat([model(seq[:, t : t + 1]) for t in range(start, seq.shape[1] - 1)], dim=1)
    differ = (logits.argmax(-1) != alone.argmax(-1)).float().mean().item()
    assert differ >= 1 / 3, f"only {differ:.0%} of the next tokens depend on the context"


def write_corpus(root, n_docs=6, size=(200, 400)):
    """Files of fresh random printable text (never empty), with names in no particular order."""
    rng = random.Random()
    texts = {}
    for i in rng.sample(range(100), n_docs):
        name = f"sub{i % 3}/doc{i:02d}.txt"
        texts[name] = "".join(rng.choice("abcdefgh ijklmnop\nqrstuvwxyzé€") for _ in range(rng.randint(*size)))
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(texts[name], encoding="utf-8")
    return texts


def naive_nll(model: GPT, stream: list[int], length: int, stride: int) -> float:
    """Mean NLL of every target j = 1..n of the stream, each predicted by its own forward pass from
    the tokens since the documented context start (first stride-aligned position at most
    ``length`` tokens back, or the last full window's start), in float64."""
    n = len(stream) - 1
    total = 0.0
    for j in range(1, n + 1):
        start = min(stride * math.ceil(max(0, j - length) / stride), n - length)
        context = torch.tensor([stream[start:j]])
        assert 1 <= context.shape[1] <= length
        with torch.no_grad():
            logp = torch.log_softmax(model(context)[0, -1].double(), dim=-1)
        total -= float(logp[stream[j]])
    return total / n


def train_cfg(precision: dict, grad_accum: int):
    return OmegaConf.create(
        {
            "model": model_cfg(n_layers=2, d_model=16, n_heads=2, d_ff=32, vocab_size=50),
            "precision": complete(
                "precision", {"_target_": "b200lab.precision.autocast.AutocastPrecision", **precision}
            ),
            "attention": complete("attention", {"_target_": "b200lab.attention.base.MathAttention", "name": "math"}),
            "parallelism": complete(
                "parallelism", {"_target_": "b200lab.parallel.data_parallel.DataParallel", "name": "single"}
            ),
            "compile": {"name": "none", "mode": None, "fullgraph": False},
            "seq": {"name": "t", "len": 12, "batch": 3},
            "run": {"seed": int(torch.seed() % 10_000)},
            "workload": complete(
                "workload",
                {
                    "_target_": "b200lab.workloads.train.Train",
                    "name": "train",
                    "options": {"lr": 1e-2, "grad_accum": grad_accum},
                },
            ),
        }
    )


def model_cfg(**kw):
    base = dict(
        _target_="b200lab.models.gpt.family.GPTFamily",
        name="t",
        n_layers=3,
        d_model=48,
        n_heads=6,
        d_ff=96,
        vocab_size=101,
        max_seq_len=64,
        rope_pairs="interleaved",
    )
    base.update(kw)
    return complete("model", base)


def burst_trace(
    seed: int, n: int, qps: float, prompt_len: int, output_len: int, spread: float, max_prompt: int, max_output: int
):
    """``n`` requests for the tiny models (vocabulary 97): Poisson arrivals at ``qps`` (high: they
    overlap), uniform prompt and output lengths of ``spread`` around their means."""
    from b200lab.serving.loadgen import make_trace

    return make_trace(
        seed,
        n,
        1e9,
        qps=qps,
        process="poisson",
        burstiness=1.0,
        prompt_len=prompt_len,
        prompt_dist="uniform",
        output_len=output_len,
        output_dist="uniform",
        spread=spread,
        max_prompt=max_prompt,
        max_output=max_output,
        vocab_size=97,
    )
