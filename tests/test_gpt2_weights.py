"""GPT-2-format weights: a tiny random Hugging Face directory written here loads into our GPT, whose
logits match a float64 GPT-2 forward written straight from GPT-2's equations; the model=gpt2
preset is GPT-2 small; what the loader refuses, it names."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from b200lab.attention.sdpa import SdpaAttention
from b200lab.core.registry import complete
from b200lab.models.gpt.family import GPTFamily
from b200lab.models.gpt.model import GPT
from support import check_context, compose

safetensors_torch = pytest.importorskip(
    "safetensors.torch", reason="the GPT-2 loader reads safetensors (pip install safetensors)"
)

from b200lab.models.gpt.gpt2_weights import GPT2WeightsError, is_gpt2_dir, load_gpt2_dir  # noqa: E402

HF = dict(n_embd=32, n_layer=2, n_head=4, n_positions=24, vocab_size=67, layer_norm_epsilon=1e-5)


def _hf_tensors(g: torch.Generator, cfg: dict = HF) -> dict[str, torch.Tensor]:
    """GPT-2's tensors under Hugging Face's names; Conv1D weights are (in, out)."""
    d, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    f = cfg.get("n_inner") or 4 * d

    def r(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    t = {"wte.weight": r(V, d, scale=0.3), "wpe.weight": r(P, d, scale=0.3), "ln_f.weight": 1 + r(d), "ln_f.bias": r(d)}
    for i in range(cfg["n_layer"]):
        t.update(
            {
                f"h.{i}.ln_1.weight": 1 + r(d),
                f"h.{i}.ln_1.bias": r(d),
                f"h.{i}.attn.c_attn.weight": r(d, 3 * d, scale=0.3),
                f"h.{i}.attn.c_attn.bias": r(3 * d),
                f"h.{i}.attn.c_proj.weight": r(d, d),
                f"h.{i}.attn.c_proj.bias": r(d),
                f"h.{i}.ln_2.weight": 1 + r(d),
                f"h.{i}.ln_2.bias": r(d),
                f"h.{i}.mlp.c_fc.weight": r(d, f, scale=0.3),
                f"h.{i}.mlp.c_fc.bias": r(f),
                f"h.{i}.mlp.c_proj.weight": r(f, d),
                f"h.{i}.mlp.c_proj.bias": r(d),
            }
        )
    return t


def _write(path, tensors: dict, config: dict = HF, prefix: str = "") -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "activation_function": "gelu_new", **config}))
    safetensors_torch.save_file(
        {prefix + k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors")
    )


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gpt2_forward(t: dict, cfg: dict, idx: torch.Tensor, head: torch.Tensor | None = None) -> torch.Tensor:
    """GPT-2 in float64 from its equations: token + position embeddings; per layer
    x += c_proj(causal softmax attention(c_attn(ln_1(x)))), x += c_proj(gelu_tanh(c_fc(ln_2(x))));
    logits = ln_f(x) @ wte^T (the tied head), Conv1D as x @ W + b."""
    t = {k: v.to(torch.float64) for k, v in t.items()}
    B, T = idx.shape
    d, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd = d // H
    x = t["wte.weight"][idx] + t["wpe.weight"][:T]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        h = _layer_norm(x, t[p + "ln_1.weight"], t[p + "ln_1.bias"], eps)
        q, k, v = (h @ t[p + "attn.c_attn.weight"] + t[p + "attn.c_attn.bias"]).split(d, dim=-1)
        q, k, v = (z.view(B, T, H, hd).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        x = x + y @ t[p + "attn.c_proj.weight"] + t[p + "attn.c_proj.bias"]
        h = _layer_norm(x, t[p + "ln_2.weight"], t[p + "ln_2.bias"], eps)
        x = (
            x
            + _gelu_tanh(h @ t[p + "mlp.c_fc.weight"] + t[p + "mlp.c_fc.bias"]) @ t[p + "mlp.c_proj.weight"]
            + t[p + "mlp.c_proj.bias"]
        )
    x = _layer_norm(x, t["ln_f.weight"], t["ln_f.bias"], eps)
    return x @ (t["wte.weight"] if head is None else head.to(torch.float64)).t()


def _our_gpt(fields: dict) -> GPT:
    cfg = complete("model", {"_target_": "b200lab.models.gpt.family.GPTFamily", "name": "gpt2_dir", **fields})
    attention = SdpaAttention(
        complete("attention", {"_target_": "b200lab.attention.sdpa.SdpaAttention", "name": "sdpa"}), "cpu"
    )
    return GPT(cfg, attention).to(torch.float64).eval()


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(torch.seed() % 2**31)


@pytest.mark.parametrize(
    "prefix,extras", [("", False), ("transformer.", True)], ids=["hub names", "GPT2LMHeadModel names"]
)
def test_gpt2_weights_load_and_match_a_float64_gpt2_forward(tmp_path, prefix, extras):
    g = _generator()
    tensors = _hf_tensors(g)
    if extras:  # the causal-mask buffers older transformers saved, and a stored head (a tied model ignores it)
        for i in range(HF["n_layer"]):
            tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, HF["n_positions"], HF["n_positions"]))
        tensors["lm_head.weight"] = torch.randn(HF["vocab_size"], HF["n_embd"], generator=g)
    _write(tmp_path / "gpt2", tensors, prefix=prefix)
    assert is_gpt2_dir(tmp_path / "gpt2") and not is_gpt2_dir(tmp_path)

    fields, state = load_gpt2_dir(tmp_path / "gpt2")
    assert fields == {
        "n_layers": 2,
        "d_model": 32,
        "n_heads": 4,
        "d_ff": 128,
        "vocab_size": 67,
        "pos": "learned",
        "max_seq_len": 24,
        "norm": "layernorm",
        "bias": True,
        "tie_embeddings": True,
        "norm_eps": 1e-5,
    }
    model = _our_gpt(fields)
    model.load_state_dict(state, strict=True)
    idx = torch.randint(0, HF["vocab_size"], (3, HF["n_positions"]), generator=g)
    with torch.no_grad():
        got = model(idx)
    want = gpt2_forward(tensors, HF, idx)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), (got - want).abs().max()
    assert want.std() > 0.1  # the weights shape the logits: not a near-constant output


def test_tie_word_embeddings_false_reads_the_separate_lm_head(tmp_path):
    g = _generator()
    tensors = _hf_tensors(g)
    head = torch.randn(HF["vocab_size"], HF["n_embd"], generator=g) * 0.3
    _write(tmp_path / "m", {**tensors, "lm_head.weight": head}, {**HF, "tie_word_embeddings": False})
    fields, state = load_gpt2_dir(tmp_path / "m")
    assert fields["tie_embeddings"] is False
    model = _our_gpt(fields)
    model.load_state_dict(state, strict=True)
    idx = torch.randint(0, HF["vocab_size"], (2, 10), generator=g)
    with torch.no_grad():
        assert torch.allclose(model(idx), gpt2_forward(tensors, HF, idx, head=head), rtol=1e-10, atol=1e-10)


def _break(kind: str, path, tensors: dict) -> str:
    """Write a directory with one thing wrong; return the message the loader must give."""
    config = dict(HF)
    if kind == "no config":
        _write(path, tensors)
        (path / "config.json").unlink()
        return "no config.json"
    if kind == "not gpt-2":
        config.pop("n_head")
        _write(path, tensors, config)
        return "missing n_head (not a GPT-2 config)"
    if kind == "exact gelu":
        _write(path, tensors, {**config, "activation_function": "gelu"})
        return "activation_function='gelu'; our GPT's MLP is GELU(tanh)"
    if kind == "missing tensor":
        _write(path, {k: v for k, v in tensors.items() if k != "h.1.mlp.c_fc.bias"})
        return "tensor 'h.1.mlp.c_fc.bias' (or transformer.h.1.mlp.c_fc.bias) is missing"
    if kind == "extra layer":
        _write(path, {**tensors, "h.2.ln_1.weight": tensors["h.0.ln_1.weight"].clone()})
        return "tensors this GPT-2 mapping does not know: h.2.ln_1.weight"
    if kind == "wrong width":
        _write(path, tensors, {**config, "n_inner": 96})
        return "blocks.0.mlp.up.weight has shape (128, 32), config.json implies (96, 32)"
    if kind == "untied without a head":
        _write(path, tensors, {**config, "tie_word_embeddings": False})
        return "tensor 'lm_head.weight' (or transformer.lm_head.weight) is missing"
    if kind == "pickle only":
        _write(path, tensors)
        (path / "model.safetensors").rename(path / "pytorch_model.bin")
        return "no model.safetensors (or model.safetensors.index.json); pickled pytorch_model.bin files are not read"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "no config",
        "not gpt-2",
        "exact gelu",
        "missing tensor",
        "extra layer",
        "wrong width",
        "untied without a head",
        "pickle only",
    ],
)
def test_what_the_loader_cannot_map_is_named(tmp_path, kind):
    message = _break(kind, tmp_path / "bad", _hf_tensors(_generator()))
    with pytest.raises(GPT2WeightsError) as info:
        load_gpt2_dir(tmp_path / "bad")
    assert message in str(info.value) and str(tmp_path / "bad") in str(info.value)


def test_without_safetensors_the_error_says_what_to_install(tmp_path, monkeypatch):
    _write(tmp_path / "m", _hf_tensors(_generator()))
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if the package were not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(GPT2WeightsError, match=r"needs the safetensors package \(pip install safetensors"):
        load_gpt2_dir(tmp_path / "m")


def test_the_gpt2_preset_is_gpt2_small():
    """Parameters from GPT-2's equations: embeddings, per layer two LayerNorms (2 x 2d), c_attn
    (3d^2 + 3d), c_proj (d^2 + d), c_fc (4d^2 + 4d), mlp c_proj (4d^2 + d); ln_f; tied head."""
    from support import compose

    cfg = compose(["model=gpt2"]).model
    with torch.device("meta"):
        model = GPT(cfg, None)
    d, L, V, P = 768, 12, 50257, 1024
    expected = V * d + P * d + L * (4 * d + 12 * d * d + 9 * d) + 2 * d
    assert sum(p.numel() for p in model.parameters()) == expected
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.vocab_size, cfg.max_seq_len) == (
        L,
        d,
        12,
        4 * d,
        V,
        P,
    )
    assert model.head.weight is model.embed.weight and isinstance(model.norm, torch.nn.LayerNorm)


def test_default_gpt_is_unchanged_rmsnorm_and_no_biases():
    cfg = complete("model", {"_target_": "b200lab.models.gpt.family.GPTFamily", "name": "t"})
    model = GPT(cfg, None)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.RMSNorm, torch.nn.LayerNorm))]
    assert norms and all(type(m) is torch.nn.RMSNorm for m in norms)


def test_an_unknown_norm_is_refused_by_name():
    cfg = complete("model", {"_target_": "b200lab.models.gpt.family.GPTFamily", "name": "t", "norm": "batchnorm"})
    job = compose(["seq.len=16"])
    assert "model.norm='batchnorm': choose rmsnorm or layernorm" in GPTFamily.Config.validate(cfg, check_context(job))
