"""A dense GPT a reader can hold in their head, and its family (fields, FLOPs, data, loss).

Pre-norm blocks: x + attn(norm(x)), then x + mlp(norm(x)); a GELU MLP of width d_ff; RMSNorm and
no biases by default (``norm: layernorm`` with ``bias: true`` is GPT-2's block, so GPT-2 weights
load: b200lab/models/gpt2_weights.py); rotary positions by default (``pos: learned`` adds a
position table and caps the sequence at ``max_seq_len``); grouped-query attention when
``n_kv_heads`` < ``n_heads``; an untied output head unless ``tie_embeddings``.
``forward(idx, positions, doc_ids, cache)``: with no extras it is the causal training/prefill
pass; ``positions`` with a :class:`KVCache` is a decode step (queries at those positions, keys
from the cache); ``doc_ids`` keeps attention inside each packed document. A cache that places its
own slots (:class:`StaticKVCache` here, the paged cache in b200lab/serving/) takes the decode path
that compiles and captures as a CUDA graph: fixed shapes, positions as a tensor, no Python int that
changes per step.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from b200lab.attention import AttnMask
from b200lab.components import CheckContext
from b200lab.measure import flops as F_
from b200lab.models.base import ModelConfig, ModelFamily


def rotary_tables(T: int, head_dim: int, base: float, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float64), inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)  # (T, head_dim/2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pairs: str = "half") -> torch.Tensor:
    """x: (B, T, H, D); rotates each pair of dims by its position's angle, in float32 (float64 for
    a float64 model). ``interleaved`` pairs dims (2i, 2i+1), ``half`` pairs (i, i + D/2): the same
    rotation applied to a fixed permutation of the head dims."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # (T, 1, D/2), or (B, T, 1, D/2) for per-row positions
    if pairs == "half":
        x0, x1 = xf.chunk(2, dim=-1)
        return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).type_as(x)
    x0, x1 = xf.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


class KVCache:
    """Keys and values of every layer for up to ``max_len`` positions; ``length`` are filled."""

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (batch, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


@dataclasses.dataclass
class CacheMask(AttnMask):
    """An :class:`AttnMask` whose dense form is built once per forward and shared by every layer
    (a static cache's length mask: the same for all of them)."""

    def dense(self, tq: int, tk: int, device) -> torch.Tensor:
        key = ("dense", tq, tk, self.window, self.causal)
        if key not in self.memo:
            self.memo[key] = super().dense(tq, tk, device)
        return self.memo[key]


class StaticKVCache:
    """Keys and values of every layer in fixed ``(batch, kv_heads, max_len, head_dim)`` buffers,
    written at a position tensor (``index_copy_``), so a decode step has the same shapes and
    addresses at every position: it compiles once and replays as a CUDA graph.

    ``forward(idx, cache=c)`` (no positions) is a prefill from slot 0: it writes slots 0..T-1 and
    attends over its own keys (the plain causal kernel). ``forward(idx, positions, cache=c)``
    writes at ``positions`` and attends over all ``max_len`` slots with a length mask (a key is
    seen when its slot <= the query's position; later slots hold stale or zero values and are
    masked), so keep ``max_len`` tight: every step reads the whole buffer."""

    places_slots = True

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (batch, kv_heads, max_len, head_dim)
        self.max_len = max_len
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.slots = torch.arange(max_len, device=device)
        if torch.device(device).type == "cuda":  # torch.compile's CUDA graphs keep these in place (no copy per replay)
            for t in (*self.k, *self.v, self.slots):
                torch._dynamo.mark_static_address(t)

    def begin(self, idx: torch.Tensor, positions: Optional[torch.Tensor]):
        """(positions of these tokens, the mask, what ``update`` needs) for one forward."""
        if positions is None:
            positions = self.slots[:idx.shape[1]]
            return positions, AttnMask(), (positions, True)
        return positions, CacheMask(q_pos=positions, k_pos=self.slots), (positions, False)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, where) -> tuple[torch.Tensor, torch.Tensor]:
        positions, fresh = where
        self.k[layer].index_copy_(2, positions, k)
        self.v[layer].index_copy_(2, positions, v)
        return (k, v) if fresh else (self.k[layer], self.v[layer])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))


NORMS = ("rmsnorm", "layernorm")


def make_norm(kind: str, d_model: int, eps: float, bias: bool = False) -> nn.Module:
    """RMSNorm, or LayerNorm (with a bias when ``bias``, as GPT-2)."""
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias)
    return nn.RMSNorm(d_model, eps=eps)


class MLP(nn.Module):
    """The block's second half: the norm, then the GELU MLP. The part a mixture of experts replaces."""

    def __init__(self, d_model: int, d_ff: int, eps: float, norm: str = "rmsnorm", bias: bool = False):
        super().__init__()
        self.norm = make_norm(norm, d_model, eps, bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(self.norm(x)), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg, attention, index: int, mlp: nn.Module):
        super().__init__()
        d = cfg.d_model
        self.index = index
        self.n_heads, self.kv_heads = cfg.n_heads, cfg.n_kv_heads or cfg.n_heads
        self.head_dim = d // cfg.n_heads
        self.rope_pairs = cfg.rope_pairs
        self.norm_attn = make_norm(cfg.norm, d, cfg.norm_eps, cfg.bias)
        self.qkv = nn.Linear(d, (self.n_heads + 2 * self.kv_heads) * self.head_dim, bias=cfg.bias)
        self.out = nn.Linear(d, d, bias=cfg.bias)
        self.attention = attention
        self.mlp = mlp

    def forward(self, x: torch.Tensor, rope, mask: AttnMask, cache=None, start=0) -> torch.Tensor:
        """``start``: where ``cache`` writes these keys: the first slot for a :class:`KVCache`, what
        ``begin`` returned for a cache that places its own slots."""
        B, T, _ = x.shape
        # n_heads/kv_heads are this rank's heads (all of them unless tensor parallel splits them)
        q, k, v = self.qkv(self.norm_attn(x)).split([self.n_heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], -1)
        q, k, v = q.view(B, T, self.n_heads, self.head_dim), k.view(B, T, self.kv_heads, self.head_dim), v.view(B, T, self.kv_heads, self.head_dim)
        if rope is not None:
            q, k = apply_rotary(q, *rope, self.rope_pairs), apply_rotary(k, *rope, self.rope_pairs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.index, k, v, start)
        y = self.attention(q, k, v, mask)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, -1))
        return x + self.mlp(x)


CHECKPOINTING = ("none", "full", "selective")


def _save_matmuls_and_attention(ctx, op, *args, **kwargs):
    """Selective recomputation: keep what a matmul or an attention kernel produced, recompute
    the cheap rest (norms, rotary, GELU, residual adds)."""
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS() else CheckpointPolicy.PREFER_RECOMPUTE


@functools.lru_cache(maxsize=1)
def _SAVED_OPS() -> frozenset:
    aten = torch.ops.aten
    ops = [aten.mm.default, aten.addmm.default, aten.bmm.default, aten._scaled_mm.default,
           aten._scaled_dot_product_flash_attention.default, aten._scaled_dot_product_efficient_attention.default,
           aten._scaled_dot_product_cudnn_attention.default, aten._scaled_dot_product_flash_attention_for_cpu.default]
    flex = getattr(torch.ops.higher_order, "flex_attention", None)
    return frozenset(ops + ([flex] if flex is not None else []))


def checkpointed(block: nn.Module, mode: str, x: torch.Tensor, rope, mask: AttnMask) -> torch.Tensor:
    """The block under activation checkpointing: ``full`` keeps only its input and recomputes the
    block in backward; ``selective`` also keeps matmul and attention outputs."""
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

    extra = {}
    if mode == "selective":
        extra["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _save_matmuls_and_attention)
    return checkpoint(block, x, rope, mask, use_reentrant=False, **extra)


class GPT(nn.Module):
    """``make_mlp(layer index)`` builds each block's MLP (default: the dense :class:`MLP`)."""

    def __init__(self, cfg, attention, make_mlp=None):
        super().__init__()
        make_mlp = make_mlp or (lambda index: MLP(cfg.d_model, cfg.d_ff, cfg.norm_eps, cfg.norm, cfg.bias))
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg, attention, i, make_mlp(i)) for i in range(cfg.n_layers))
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.register_buffer("rope_cos", None, persistent=False)
        self.register_buffer("rope_sin", None, persistent=False)
        self.reset_parameters()

    @property
    def head_dim(self) -> int:
        return self.cfg.d_model // self.cfg.n_heads

    def prepare(self, seq_len: int) -> None:
        """Precompute the rotary tables for sequences up to ``seq_len``."""
        if self.pos_embed is None:
            w = self.embed.weight
            dtype = torch.promote_types(w.dtype, torch.float32)
            self.rope_cos, self.rope_sin = rotary_tables(seq_len, self.head_dim, self.cfg.rope_base, w.device, dtype)

    def reset_parameters(self) -> None:
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # GPT-2's scaled init for the projections that write into the residual stream
                scale = (2 * self.cfg.n_layers) ** -0.5 if name.endswith(("out.weight", "down.weight")) else 1.0
                nn.init.normal_(p, mean=0.0, std=std * scale)
            elif name.endswith("bias"):
                nn.init.zeros_(p)  # GPT-2's projection and norm biases start at zero

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        w = self.embed.weight
        return KVCache(self.cfg.n_layers, batch, self.blocks[0].kv_heads, max_len, self.head_dim, w.dtype, w.device)

    def new_static_cache(self, batch: int, max_len: int, dtype=None) -> StaticKVCache:
        """A :class:`StaticKVCache` of this rank's K/V heads (tensor parallel splits them); the
        rotary table is extended to ``max_len`` so a decode step indexes it without a host sync."""
        w = self.embed.weight
        self.ensure_positions(max_len)
        return StaticKVCache(self.cfg.n_layers, batch, self.blocks[0].kv_heads, max_len, self.head_dim, dtype or w.dtype, w.device)

    def ensure_positions(self, max_len: int) -> None:
        if self.pos_embed is not None:
            if max_len > self.cfg.max_seq_len:
                raise ValueError(f"a cache of {max_len} positions exceeds model.max_seq_len={self.cfg.max_seq_len} (learned positions)")
        elif self.rope_cos is None or self.rope_cos.shape[0] < max_len:
            self.prepare(max_len)

    def _rope(self, positions: torch.Tensor, device):
        end = int(positions.max()) + 1 if positions.numel() else 0
        if self.rope_cos is not None and self.rope_cos.shape[0] >= end:
            return self.rope_cos[positions], self.rope_sin[positions]
        dtype = torch.promote_types(self.embed.weight.dtype, torch.float32)  # not prepared this far: same values, slower
        cos, sin = rotary_tables(end, self.head_dim, self.cfg.rope_base, device, dtype)
        return cos[positions], sin[positions]

    def forward(self, idx: torch.Tensor, positions: Optional[torch.Tensor] = None, doc_ids: Optional[torch.Tensor] = None,
                cache=None, last_only: bool = False) -> torch.Tensor:
        """idx (B, T) -> logits (B, T, V). ``positions`` (T,): the rotary/learned positions of these
        tokens (default: continuing the cache from 0); ``doc_ids`` (B, cached + T): document of
        every key slot; ``cache``: keys/values of earlier slots, extended in place (a
        :class:`KVCache`, or a cache that places its own slots: :meth:`_forward_slots`).
        ``last_only``: logits of the last position only (B, 1, V), as generation needs."""
        if cache is not None and getattr(cache, "places_slots", False):
            return self._forward_slots(idx, positions, cache, last_only)
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        x = self.embed(idx)
        rope = None
        if positions is None and self.pos_embed is None and not start and self.rope_cos is not None and self.rope_cos.shape[0] >= T:
            rope = (self.rope_cos[:T], self.rope_sin[:T])  # the training/prefill path: no index tensor
        else:
            if positions is None:
                positions = torch.arange(start, start + T, device=idx.device)
            if self.pos_embed is not None:
                x = x + self.pos_embed(positions)
            else:
                rope = self._rope(positions, idx.device)
        # the mask works on cache slots (queries are the last T of start + T keys); positions
        # only rotate, so packed documents may restart their positions
        mask = AttnMask(doc_ids=doc_ids)
        recompute = self.cfg.checkpointing != "none" and self.training and torch.is_grad_enabled() and cache is None
        for block in self.blocks:
            x = checkpointed(block, self.cfg.checkpointing, x, rope, mask) if recompute else block(x, rope, mask, cache, start)
        if cache is not None:
            cache.length = start + T
        if last_only:
            x = x[:, -1:]
        return self.head(self.norm(x))

    def _forward_slots(self, idx: torch.Tensor, positions: Optional[torch.Tensor], cache, last_only: bool) -> torch.Tensor:
        """The decode path: ``cache.begin`` gives the tokens' positions ((T,) or per row (B, T)),
        the mask over its slots and where to write; nothing here reads a Python int that changes
        from step to step, so the step compiles once. The rotary table must already cover the
        cache (``new_static_cache`` / ``ensure_positions``)."""
        positions, mask, where = cache.begin(idx, positions)
        x = self.embed(idx)
        rope = None
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions)
        else:
            rope = (self.rope_cos[positions], self.rope_sin[positions])
        for block in self.blocks:
            x = block(x, rope, mask, cache, where)
        if last_only:
            x = x[:, -1:]
        return self.head(self.norm(x))


@dataclass
class GPTConfig(ModelConfig):
    family: str = "gpt"
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: Optional[int] = None  # None: n_heads (multi-head); fewer: grouped-query attention
    d_ff: int = 512
    vocab_size: int = 50304
    pos: str = "rope"  # rope | learned
    max_seq_len: int = 131072  # only binding for learned positions
    tie_embeddings: bool = False
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    rope_pairs: str = "half"  # half: dims (i, i + D/2) rotate together, as GPT-NeoX/Llama; interleaved: (2i, 2i+1)
    norm: str = "rmsnorm"  # rmsnorm | layernorm (GPT-2)
    bias: bool = False  # biases in the projections (and LayerNorm), as GPT-2; the head never has one
    checkpointing: str = "none"  # none | full | selective: activation checkpointing of each block in training

    HINTS: ClassVar[dict] = {k: "the dense GPT has no experts; mixture-of-experts is its own model family (model=moe, its own issue)"
                             for k in ("n_experts", "top_k", "d_ff_expert")}


class GPTFamily(ModelFamily):
    """Decoder-only language model on token ids; next-token cross-entropy."""

    Config = GPTConfig

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = cls.positive(cfg, "n_layers", "d_model", "n_heads", "d_ff", "vocab_size", "max_seq_len")
        if cfg.n_kv_heads is not None:
            problems += cls.positive(cfg, "n_kv_heads")
            if cfg.n_kv_heads >= 1 and cfg.n_heads % cfg.n_kv_heads:
                problems.append(f"model.n_kv_heads={cfg.n_kv_heads} does not divide model.n_heads={cfg.n_heads}")
        if cfg.d_model >= 1 and cfg.n_heads >= 1:
            if cfg.d_model % cfg.n_heads:
                problems.append(f"model.n_heads={cfg.n_heads} does not divide model.d_model={cfg.d_model} "
                                f"(head dim would be {cfg.d_model / cfg.n_heads:g})")
            elif cfg.pos == "rope" and (cfg.d_model // cfg.n_heads) % 2:
                problems.append(f"model.pos=rope needs an even head dim; d_model/n_heads = {cfg.d_model // cfg.n_heads}")
        if cfg.rope_pairs not in ("interleaved", "half"):
            problems.append(f"model.rope_pairs={cfg.rope_pairs!r}: choose interleaved or half")
        if cfg.norm not in NORMS:
            problems.append(f"model.norm={cfg.norm!r}: choose {' or '.join(NORMS)}")
        if cfg.pos not in ("rope", "learned"):
            problems.append(f"model.pos={cfg.pos!r}: choose rope or learned")
        problems += cls._checkpointing_problems(cfg, ctx)
        seq_len = ctx.cfg.seq.len
        if cfg.pos == "learned" and seq_len > cfg.max_seq_len:
            problems.append(f"seq.len={seq_len} exceeds model.max_seq_len={cfg.max_seq_len} (model.pos=learned has no "
                            "position embeddings past it)")
        return problems

    @staticmethod
    def _checkpointing_problems(cfg, ctx: CheckContext) -> list[str]:
        if cfg.checkpointing not in CHECKPOINTING:
            return [f"model.checkpointing={cfg.checkpointing!r}: choose {', '.join(CHECKPOINTING)}"]
        target = str((ctx.cfg.get("precision") or {}).get("_target_", ""))
        if cfg.checkpointing != "none" and any(t in target for t in ("te_fp8", "fp8_auto")):
            return [f"model.checkpointing={cfg.checkpointing} with precision={ctx.cfg.precision.name}: recomputing a "
                    "Transformer Engine FP8 block outside its autocast region would rerun it in another precision; "
                    "use model.checkpointing=none with FP8 (TE's own checkpoint is not wired yet)"]
        return []

    def build(self, attention) -> nn.Module:
        return GPT(self.cfg, attention)

    def prepare(self, model: nn.Module, seq_len: int) -> None:
        model.prepare(seq_len)

    def attention_shapes(self, seq_len: int) -> tuple[int, int, int, int]:
        """(query heads, K/V heads, sequence, head dim) of one attention call."""
        c = self.cfg
        return c.n_heads, c.n_kv_heads or c.n_heads, seq_len, c.d_model // c.n_heads

    def matmul_params(self) -> int:
        c = self.cfg
        per_layer = F_.attention_proj_params(c.d_model, c.n_heads, c.n_kv_heads or c.n_heads) + F_.mlp_params(c.d_model, c.d_ff)
        return c.n_layers * per_layer + c.vocab_size * c.d_model

    attention_window: Optional[int] = None  # set from attention.window: attention FLOPs count the pairs a window keeps

    def flops_per_sample(self, seq_len: int, training: bool) -> int:
        forward = (seq_len * 2 * self.matmul_params()
                   + F_.causal_attention_flops(self.cfg.n_layers, self.cfg.d_model, seq_len, self.attention_window))
        return F_.training_multiple(forward, training)

    def synthetic_batch(self, batch: int, seq_len: int, generator: torch.Generator, device):
        """Uniform random token ids (never all zeros); targets are the inputs shifted by one."""
        data = torch.randint(0, self.cfg.vocab_size, (batch, seq_len + 1), device=device, generator=generator)
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = outputs.to(torch.promote_types(outputs.dtype, torch.float32))  # the loss in fp32 at least
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
