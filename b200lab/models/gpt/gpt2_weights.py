"""Pre-trained GPT-2 weights from a local Hugging Face directory, in our GPT's names.

A directory holds ``config.json`` (``n_embd``, ``n_layer``, ``n_head``, ``n_positions``,
``vocab_size``, ``layer_norm_epsilon``, optional ``n_inner``) and ``model.safetensors`` (or shards
listed in ``model.safetensors.index.json``). Tensor names may carry the ``transformer.`` prefix
(a saved ``GPT2LMHeadModel``) or not (the hub's ``gpt2`` files). Pickled ``pytorch_model.bin``
files are not read: loading them can run code.

GPT-2's ``Conv1D`` stores weights as (in, out), so every projection is transposed; ``c_attn``
produces q, k, v in that order, head by head, which is our fused ``qkv`` layout as it is. The
model is our GPT with ``norm=layernorm``, ``bias=true``, ``pos=learned`` and a head tied to the
token embedding, unless ``config.json`` says ``tie_word_embeddings: false`` (then ``lm_head.weight``
is the head). As in Hugging Face, a tied model ignores a stored ``lm_head.weight``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# our name under blocks.{i}. <- GPT-2's under h.{i}.; Conv1D weights are transposed
BLOCK_NAMES = {
    "norm_attn.weight": "ln_1.weight",
    "norm_attn.bias": "ln_1.bias",
    "qkv.weight": "attn.c_attn.weight",
    "qkv.bias": "attn.c_attn.bias",
    "out.weight": "attn.c_proj.weight",
    "out.bias": "attn.c_proj.bias",
    "mlp.norm.weight": "ln_2.weight",
    "mlp.norm.bias": "ln_2.bias",
    "mlp.up.weight": "mlp.c_fc.weight",
    "mlp.up.bias": "mlp.c_fc.bias",
    "mlp.down.weight": "mlp.c_proj.weight",
    "mlp.down.bias": "mlp.c_proj.bias",
}
CONV1D = ("qkv.weight", "out.weight", "mlp.up.weight", "mlp.down.weight")
TOP_NAMES = {
    "embed.weight": "wte.weight",
    "pos_embed.weight": "wpe.weight",
    "norm.weight": "ln_f.weight",
    "norm.bias": "ln_f.bias",
}
# the causal-mask buffers older transformers versions saved with the weights
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


class GPT2WeightsError(ValueError):
    """A directory that does not hold GPT-2 weights this loader can map; the message says why."""


def is_gpt2_dir(path) -> bool:
    """Whether ``path`` is a directory with a ``config.json`` and safetensors weights."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors"))


def model_fields(config: dict, path: Path) -> dict:
    """Our GPTConfig fields from GPT-2's config.json; refuses variants our GPT does not compute."""
    missing = [k for k in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size") if k not in config]
    if missing:
        raise GPT2WeightsError(f"{path / 'config.json'}: missing {', '.join(missing)} (not a GPT-2 config)")
    if config.get("model_type", "gpt2") != "gpt2":
        raise GPT2WeightsError(f"{path / 'config.json'}: model_type={config['model_type']!r}, this loader reads gpt2")
    act = config.get("activation_function", "gelu_new")
    if act not in TANH_GELUS:
        raise GPT2WeightsError(
            f"{path / 'config.json'}: activation_function={act!r}; "
            f"our GPT's MLP is GELU(tanh) ({', '.join(TANH_GELUS)})"
        )
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(key):
            raise GPT2WeightsError(f"{path / 'config.json'}: {key}=true changes attention; our GPT does not")
    if config.get("scale_attn_weights") is False:
        raise GPT2WeightsError(
            f"{path / 'config.json'}: scale_attn_weights=false; our attention scales by 1/sqrt(head dim)"
        )
    d = int(config["n_embd"])
    return {
        "n_layers": int(config["n_layer"]),
        "d_model": d,
        "n_heads": int(config["n_head"]),
        "d_ff": int(config.get("n_inner") or 4 * d),
        "vocab_size": int(config["vocab_size"]),
        "pos": "learned",
        "max_seq_len": int(config["n_positions"]),
        "norm": "layernorm",
        "bias": True,
        "tie_embeddings": bool(config.get("tie_word_embeddings", True)),
        "norm_eps": float(config.get("layer_norm_epsilon", 1e-5)),
    }


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise GPT2WeightsError(
            f"{path}: reading GPT-2 weights needs the safetensors package "
            "(pip install safetensors, or pip install 'b200lab[gpt2]')"
        ) from None
    index = path / "model.safetensors.index.json"
    if (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    elif index.is_file():
        files = [path / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    else:
        raise GPT2WeightsError(
            f"{path}: no model.safetensors (or model.safetensors.index.json); "
            "pickled pytorch_model.bin files are not read, convert them to safetensors"
        )
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


def load_gpt2_dir(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(our GPTConfig fields, state dict in our GPT's parameter names) from a GPT-2 directory
    (the fields are :func:`model_fields` of its config.json).

    The state dict loads strictly into ``GPT(cfg)`` built with those fields (``head.weight`` is
    the token embedding when tied, as the tied model's own state dict has it). Raises
    GPT2WeightsError naming the file and the problem."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise GPT2WeightsError(f"{path}: no config.json (expected a Hugging Face GPT-2 directory)")
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise GPT2WeightsError(f"{path / 'config.json'}: not JSON ({exc})") from None
    fields = model_fields(config, path)
    raw = {k.removeprefix("transformer."): v for k, v in _read_safetensors(path).items()}

    state: dict[str, torch.Tensor] = {}

    def take(ours: str, theirs: str, transpose: bool = False) -> None:
        if theirs not in raw:
            raise GPT2WeightsError(f"{path}: tensor {theirs!r} (or transformer.{theirs}) is missing")
        t = raw.pop(theirs)
        state[ours] = t.t().contiguous() if transpose else t

    for ours, theirs in TOP_NAMES.items():
        take(ours, theirs)
    for i in range(fields["n_layers"]):
        for ours, theirs in BLOCK_NAMES.items():
            take(f"blocks.{i}.{ours}", f"h.{i}.{theirs}", transpose=ours in CONV1D)
    if fields["tie_embeddings"]:
        raw.pop("lm_head.weight", None)
        state["head.weight"] = state["embed.weight"]
    else:
        take("head.weight", "lm_head.weight")
    leftover = sorted(k for k in raw if not k.endswith(IGNORED_SUFFIXES))
    if leftover:
        raise GPT2WeightsError(
            f"{path}: tensors this GPT-2 mapping does not know: {', '.join(leftover[:5])}"
            + (f" and {len(leftover) - 5} more" if len(leftover) > 5 else "")
        )
    _check_shapes(fields, state, path)
    return fields, state


def _check_shapes(fields: dict, state: dict[str, torch.Tensor], path: Path) -> None:
    d, f, V = fields["d_model"], fields["d_ff"], fields["vocab_size"]
    expected = {"embed.weight": (V, d), "pos_embed.weight": (fields["max_seq_len"], d), "head.weight": (V, d)}
    for i in range(fields["n_layers"]):
        expected.update(
            {
                f"blocks.{i}.qkv.weight": (3 * d, d),
                f"blocks.{i}.out.weight": (d, d),
                f"blocks.{i}.mlp.up.weight": (f, d),
                f"blocks.{i}.mlp.down.weight": (d, f),
            }
        )
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise GPT2WeightsError(f"{path}: {name} has shape {tuple(state[name].shape)}, config.json implies {shape}")
