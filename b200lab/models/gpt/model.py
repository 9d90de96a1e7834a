"""A dense GPT a reader can hold in their head (its family, FLOPs and data: family.py).

Pre-norm blocks: x + attn(norm(x)), then x + mlp(norm(x)); a GELU MLP of width d_ff; RMSNorm and
no biases by default (``norm: layernorm`` with ``bias: true`` is GPT-2's block, so GPT-2 weights
load: b200lab/models/gpt/gpt2_weights.py); rotary positions by default (``pos: learned`` adds a
position table and caps the sequence at ``max_seq_len``); grouped-query attention when
``n_kv_heads`` < ``n_heads``; an untied output head unless ``tie_embeddings``.

One forward, ``forward(idx, positions, doc_ids, cache, last_only)``: without a cache it is the
causal training/prefill pass (``doc_ids`` keeps attention inside each packed document); with a
cache (the static one in b200lab/models/decoding.py, the paged one in b200lab/serving/paged.py)
the cache places the new keys in its own slots and says what each query sees, so the step
compiles and captures as a CUDA graph: fixed shapes, positions as a tensor, no Python int that
changes per step.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from b200lab.attention.base import AttnMask


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

    def forward(self, x: torch.Tensor, rope, mask: AttnMask, cache=None, where=None) -> torch.Tensor:
        """``cache``: a KV cache that places its own slots (b200lab/models/decoding.py); ``where``:
        what its ``begin`` returned for this forward."""
        B, T, _ = x.shape
        # n_heads/kv_heads are this rank's heads (all of them unless tensor parallel splits them)
        q, k, v = self.qkv(self.norm_attn(x)).split(
            [self.n_heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], -1
        )
        q, k, v = (
            q.view(B, T, self.n_heads, self.head_dim),
            k.view(B, T, self.kv_heads, self.head_dim),
            v.view(B, T, self.kv_heads, self.head_dim),
        )
        if rope is not None:
            q, k = apply_rotary(q, *rope, self.rope_pairs), apply_rotary(k, *rope, self.rope_pairs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.index, k, v, where)
        y = self.attention(q, k, v, mask)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, -1))
        return x + self.mlp(x)


def _save_matmuls_and_attention(ctx, op, *args, **kwargs):
    """Selective recomputation: keep what a matmul or an attention kernel produced, recompute
    the cheap rest (norms, rotary, GELU, residual adds)."""
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS() else CheckpointPolicy.PREFER_RECOMPUTE


@functools.lru_cache(maxsize=1)
def _SAVED_OPS() -> frozenset:
    aten = torch.ops.aten
    ops = [
        aten.mm.default,
        aten.addmm.default,
        aten.bmm.default,
        aten._scaled_mm.default,
        aten._scaled_dot_product_flash_attention.default,
        aten._scaled_dot_product_efficient_attention.default,
        aten._scaled_dot_product_cudnn_attention.default,
        aten._scaled_dot_product_flash_attention_for_cpu.default,
    ]
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
        for name, p in self.named_parameters():
            self.init_parameter(name, p)

    @torch.no_grad()
    def init_parameter(self, name: str, p: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Fill the whole parameter ``name``: N(0, 0.02) matrices, GPT-2's scaled init for the
        projections that write into the residual stream, zero biases, unit norm scales."""
        if p.dim() == 2:
            scale = (2 * self.cfg.n_layers) ** -0.5 if name.endswith(("out.weight", "down.weight")) else 1.0
            nn.init.normal_(p, mean=0.0, std=0.02 * scale, generator=generator)
        elif name.endswith("bias"):
            nn.init.zeros_(p)  # GPT-2's projection and norm biases start at zero
        elif p.dim() == 1:
            nn.init.ones_(p)  # a norm's scale
        else:
            raise ValueError(f"no initialisation for parameter {name} of shape {tuple(p.shape)}")

    def ensure_positions(self, max_len: int) -> None:
        if self.pos_embed is not None:
            if max_len > self.cfg.max_seq_len:
                raise ValueError(
                    f"a cache of {max_len} positions exceeds model.max_seq_len={self.cfg.max_seq_len} (learned "
                    "positions)"
                )
        elif self.rope_cos is None or self.rope_cos.shape[0] < max_len:
            self.prepare(max_len)

    def _rope(self, positions: torch.Tensor, device):
        end = int(positions.max()) + 1 if positions.numel() else 0
        if self.rope_cos is not None and self.rope_cos.shape[0] >= end:
            return self.rope_cos[positions], self.rope_sin[positions]
        dtype = torch.promote_types(
            self.embed.weight.dtype, torch.float32
        )  # not prepared this far: same values, slower
        cos, sin = rotary_tables(end, self.head_dim, self.cfg.rope_base, device, dtype)
        return cos[positions], sin[positions]

    def forward(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        cache=None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """idx (B, T) -> logits (B, T, V). ``positions`` (T,): the rotary/learned positions of these
        tokens (default 0..T-1); ``doc_ids`` (B, T): document of every position; ``cache``: a KV
        cache that places its own slots (:meth:`_forward_slots`; b200lab/models/decoding.py);
        ``last_only``: logits of the last position only (B, 1, V), as generation needs."""
        if cache is not None:
            return self._forward_slots(idx, positions, cache, last_only)
        T = idx.shape[1]
        x = self.embed(idx)
        rope = None
        if positions is None and self.pos_embed is None and self.rope_cos is not None and self.rope_cos.shape[0] >= T:
            rope = (self.rope_cos[:T], self.rope_sin[:T])  # the training/prefill path: no index tensor
        else:
            if positions is None:
                positions = torch.arange(T, device=idx.device)
            if self.pos_embed is not None:
                x = x + self.pos_embed(positions)
            else:
                rope = self._rope(positions, idx.device)
        # positions only rotate, so packed documents may restart their positions
        mask = AttnMask(doc_ids=doc_ids)
        recompute = self.cfg.checkpointing != "none" and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpointed(block, self.cfg.checkpointing, x, rope, mask) if recompute else block(x, rope, mask)
        if last_only:
            x = x[:, -1:]
        return self.head(self.norm(x))

    def _forward_slots(self, idx: torch.Tensor, positions: torch.Tensor | None, cache, last_only: bool) -> torch.Tensor:
        """The decode path: ``cache.begin`` gives the tokens' positions ((T,) or per row (B, T)),
        the mask over its slots and where to write; nothing here reads a Python int that changes
        from step to step, so the step compiles once. The rotary table must already cover the
        cache (``ensure_positions``, which the decoder's caches call)."""
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
            x = cache.last(x)  # each row's last token; a packed step's rows are its requests
        return self.head(self.norm(x))
