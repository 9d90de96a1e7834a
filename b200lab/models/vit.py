"""The vision transformer family (``model=vit_b16``, ``vit_l16``, ``vit_h14``): images as the unit.

The model is timm's ``VisionTransformer`` at its classic settings (``vit_base_patch16_224`` and
friends have the same shapes and parameter counts): a Conv2d patch embedding (kernel = stride =
patch), a class token, learned position embeddings, pre-norm blocks (LayerNorm, fused QKV with
biases, non-causal attention through the configured backend, output projection, LayerNorm + GELU
MLP), a final LayerNorm and a linear classifier on the class token. The MLP is the GPT's
(b200lab/models/gpt/model.py ``MLP``, tanh GELU; timm's default is the exact erf GELU, the same cost),
and the family declares its fusable patterns (``fp8_patterns``: the attention input's norm and
qkv, the MLP), so precision=fp8 converts a ViT as it converts the GPT (LayerNormLinear,
LayerNormMLP, te.Linear; the 1000-class head is not a multiple of 16 and stays bf16, said in
``effective.precision.high_precision``).

Data: random images (normal noise, never all zero) and labels that are a fixed function of the
image (the arg-max of a fixed random linear map of its mean patch), so a few CPU steps show the
loss falling. FLOPs: docs/measurement.md, "Vision, diffusion and recommender families".
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from b200lab.attention.base import AttnMask
from b200lab.measure import flops as F_
from b200lab.models.config.vit import ViTConfig
from b200lab.models.gpt.model import MLP
from b200lab.models.patterns import NormLinear, NormMLP
from b200lab.models.sample_family import SampleFamily

FULL = AttnMask(causal=False)  # every token sees every token
TASK_SEED = 20260  # the fixed map from images to labels (not the run's seed: the task is the same in every run)


class EncoderBlock(nn.Module):
    """x + out(attention(qkv(norm(x)))), then x + mlp(x); attention over all tokens."""

    def __init__(self, d: int, heads: int, d_ff: int, eps: float, attention):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.norm_attn = nn.LayerNorm(d, eps=eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.attention = attention
        self.mlp = MLP(d, d_ff, eps, norm="layernorm", bias=True)

    def forward(self, x: torch.Tensor, mask: AttnMask = FULL) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(self.norm_attn(x)).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        y = self.attention(q, k, v, mask)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(x)


@torch.no_grad()
def init_parameter(name: str, p: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """Normal(0, 0.02) weights, zero biases, unit norm scales (timm's ViT init, less the truncation)."""
    if name.endswith("bias"):
        nn.init.zeros_(p)
    elif p.dim() == 1:
        nn.init.ones_(p)
    else:
        nn.init.normal_(p, std=0.02, generator=generator)


class ViT(nn.Module):
    def __init__(self, cfg, attention):
        super().__init__()
        d, grid = cfg.d_model, cfg.image_size // cfg.patch_size
        self.patch = nn.Conv2d(cfg.in_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls = nn.Parameter(torch.empty(1, 1, d))
        self.pos = nn.Parameter(torch.empty(1, grid * grid + 1, d))
        self.blocks = nn.ModuleList(
            EncoderBlock(d, cfg.n_heads, cfg.d_ff, cfg.norm_eps, attention) for _ in range(cfg.n_layers)
        )
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.head = nn.Linear(d, cfg.n_classes)
        for name, p in self.named_parameters():
            init_parameter(name, p)

    def init_parameter(self, name: str, p: torch.Tensor, generator: torch.Generator | None = None) -> None:
        init_parameter(name, p, generator)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> class logits (B, n_classes)."""
        x = self.patch(images.to(self.patch.weight.dtype)).flatten(2).transpose(1, 2)  # (B, patches, d)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def image_task_labels(images: torch.Tensor, patch: int, n_classes: int) -> torch.Tensor:
    """The synthetic task: the arg-max of a fixed random linear map of the image's mean patch."""
    B, C = images.shape[:2]
    mean_patch = images.unfold(2, patch, patch).unfold(3, patch, patch).mean(dim=(2, 3)).reshape(B, C * patch * patch)
    g = torch.Generator(device="cpu").manual_seed(TASK_SEED)
    projection = torch.randn(C * patch * patch, n_classes, generator=g).to(images.device, mean_patch.dtype)
    return (mean_patch @ projection).argmax(dim=1)


class ViTFamily(SampleFamily):
    """Image classification; cross-entropy on the class logits."""

    Config = ViTConfig

    def build(self, attention) -> nn.Module:
        return ViT(self.cfg, attention)

    def fp8_patterns(self) -> dict:
        """Each block's attention input (its LayerNorm feeding qkv) and its MLP fuse, as the GPT's do."""
        return {EncoderBlock: NormLinear("norm_attn", "qkv"), MLP: NormMLP()}

    def transformer_tokens(self) -> int:
        return (self.cfg.image_size // self.cfg.patch_size) ** 2 + 1  # patches and the class token

    def attention_shapes(self, seq_len: int) -> tuple[int, int, int, int]:
        c = self.cfg
        return c.n_heads, c.n_heads, self.transformer_tokens(), c.d_model // c.n_heads

    attention_mask = FULL  # the mask the setup probe should ask about

    def flops_per_sample(self, seq_len: int, training: bool) -> int:
        c = self.cfg
        T = self.transformer_tokens()
        forward = (
            F_.linear_flops(T - 1, c.in_channels * c.patch_size**2, c.d_model)  # the patch embedding (a strided conv)
            + c.n_layers * F_.encoder_layer_flops(T, c.d_model, c.d_ff)
            + F_.linear_flops(1, c.d_model, c.n_classes)
        )  # the head reads the class token only
        return F_.training_multiple(forward, training)

    def synthetic_batch(self, batch: int, seq_len: int, generator: torch.Generator, device):
        c = self.cfg
        images = torch.randn(batch, c.in_channels, c.image_size, c.image_size, generator=generator, device=device)
        return images, image_task_labels(images, c.patch_size, c.n_classes)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)
