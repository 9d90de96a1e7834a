"""A tiny vision transformer on random images: a model family from outside b200lab."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from b200lab.attention.base import AttnMask
from b200lab.measure import flops
from b200lab.models.base import ModelFamily
from b200lab.models.config.base import ModelConfig


@dataclass
class ViTConfig(ModelConfig):
    family: str = "vit"
    image_size: int = 32
    patch_size: int = 8
    channels: int = 3
    n_classes: int = 10
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 128

    token_unit = "patch"

    @classmethod
    def validate(cls, cfg, ctx):
        problems = cls.positive(
            cfg, "image_size", "patch_size", "channels", "n_classes", "n_layers", "d_model", "n_heads", "d_ff"
        )
        if not problems and cfg.image_size % cfg.patch_size:
            problems.append(f"model.patch_size={cfg.patch_size} does not divide model.image_size={cfg.image_size}")
        return problems


class ViT(nn.Module):
    def __init__(self, cfg, attention):
        super().__init__()
        self.cfg, self.attention = cfg, attention
        self.patch = nn.Linear(cfg.channels * cfg.patch_size**2, cfg.d_model)
        self.pos = nn.Parameter(torch.randn((cfg.image_size // cfg.patch_size) ** 2, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm1": nn.LayerNorm(cfg.d_model),
                    "qkv": nn.Linear(cfg.d_model, 3 * cfg.d_model),
                    "out": nn.Linear(cfg.d_model, cfg.d_model),
                    "norm2": nn.LayerNorm(cfg.d_model),
                    "up": nn.Linear(cfg.d_model, cfg.d_ff),
                    "down": nn.Linear(cfg.d_ff, cfg.d_model),
                }
            )
            for _ in range(cfg.n_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def forward(self, images):
        p = self.cfg.patch_size
        x = (
            images.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)
        )  # (B, patches, C p p)
        x = self.patch(x) + self.pos
        B, T, d = x.shape
        h = self.cfg.n_heads
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["norm1"](x)).view(B, T, 3, h, d // h).permute(2, 0, 3, 1, 4)
            y = self.attention(q, k, v, AttnMask(causal=False))
            x = x + blk["out"](y.transpose(1, 2).reshape(B, T, d))
            x = x + blk["down"](F.gelu(blk["up"](blk["norm2"](x))))
        return self.head(self.norm(x).mean(dim=1))


class TinyViT(ModelFamily):
    Config = ViTConfig

    def build(self, attention):
        return ViT(self.cfg, attention)

    def tokens_per_sample(self, seq_len):
        return (self.cfg.image_size // self.cfg.patch_size) ** 2

    def flops_per_sample(self, seq_len, training):
        c = self.cfg
        T = self.tokens_per_sample(seq_len)
        per_token = 2 * (
            c.channels * c.patch_size**2 * c.d_model
            + c.n_layers * (4 * c.d_model**2 + flops.mlp_params(c.d_model, c.d_ff))
        )
        per_token += flops.full_attention_flops_per_token(c.n_layers, c.d_model, T)
        return flops.training_multiple(T * per_token + 2 * c.d_model * c.n_classes, training)

    def synthetic_batch(self, batch, seq_len, generator, device):
        c = self.cfg
        images = torch.randn(batch, c.channels, c.image_size, c.image_size, generator=generator, device=device)
        return images, torch.randint(0, c.n_classes, (batch,), generator=generator, device=device)

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs.float(), targets)
