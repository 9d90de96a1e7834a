"""A dense GPT a reader can hold in their head.

Pre-norm (RMSNorm) blocks: x + attn(norm(x)), then x + mlp(norm(x)); a GELU MLP of width d_ff;
no biases; rotary positions by default (``pos: learned`` adds a position table and caps the
sequence at ``max_seq_len``); an untied output head unless ``tie_embeddings``. Attention goes
through the configured backend, always causal.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def rotary_tables(T: int, head_dim: int, base: float, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float64), inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)  # (T, head_dim/2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pairs: str = "half") -> torch.Tensor:
    """x: (B, T, H, D); rotates each pair of dims by its position's angle, in float32 (float64 for
    a float64 model). ``interleaved`` pairs dims (2i, 2i+1), ``half`` pairs (i, i + D/2): the same
    rotation applied to a fixed permutation of the head dims."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    cos, sin = cos[:, None, :], sin[:, None, :]
    if pairs == "half":
        x0, x1 = xf.chunk(2, dim=-1)
        return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).type_as(x)
    x0, x1 = xf.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


class Block(nn.Module):
    def __init__(self, cfg, attention):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.rope_pairs = cfg.rope_pairs
        self.norm_attn = nn.RMSNorm(d, eps=cfg.norm_eps)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.norm_mlp = nn.RMSNorm(d, eps=cfg.norm_eps)
        self.up = nn.Linear(d, cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, d, bias=False)
        self.attention = attention

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(self.norm_attn(x)).view(B, T, 3, self.n_heads, d // self.n_heads).unbind(2)
        if rope is not None:
            q, k = apply_rotary(q, *rope, self.rope_pairs), apply_rotary(k, *rope, self.rope_pairs)
        y = self.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.out(y.transpose(1, 2).reshape(B, T, d))
        return x + self.down(F.gelu(self.up(self.norm_mlp(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, cfg, attention):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg, attention) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.register_buffer("rope_cos", None, persistent=False)
        self.register_buffer("rope_sin", None, persistent=False)
        self.reset_parameters()

    def prepare(self, seq_len: int) -> None:
        """Precompute the rotary tables for sequences up to ``seq_len``."""
        if self.pos_embed is None:
            w = self.embed.weight
            dtype = torch.promote_types(w.dtype, torch.float32)
            self.rope_cos, self.rope_sin = rotary_tables(seq_len, self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_base, w.device, dtype)

    def reset_parameters(self) -> None:
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # GPT-2's scaled init for the projections that write into the residual stream
                scale = (2 * self.cfg.n_layers) ** -0.5 if name.endswith(("out.weight", "down.weight")) else 1.0
                nn.init.normal_(p, mean=0.0, std=std * scale)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.embed(idx)
        rope = None
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(T, device=idx.device))
        elif self.rope_cos is not None and self.rope_cos.shape[0] >= T:
            rope = (self.rope_cos[:T], self.rope_sin[:T])
        else:  # not prepared for this length: compute on the fly (slower, same result)
            dtype = torch.promote_types(self.embed.weight.dtype, torch.float32)
            rope = rotary_tables(T, self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_base, idx.device, dtype)
        for block in self.blocks:
            x = block(x, rope)
        return self.head(self.norm(x))
