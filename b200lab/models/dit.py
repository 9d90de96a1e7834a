"""The diffusion transformer family (``model=dit_xl2``): DiT (Peebles & Xie, 2023), class-conditional.

The model follows facebookresearch/DiT's ``models.py``: latents (B, C, S, S) are patchified by a
Conv2d (kernel = stride = patch) and given fixed 2-D sine-cosine positions; the conditioning is
a timestep embedding (256 sinusoidal frequencies through Linear-SiLU-Linear) plus a class
embedding (a table of n_classes + 1 rows: the extra one is the "no class" a training step drops
to with probability ``class_dropout``, for classifier-free guidance); each block is adaLN-Zero:
SiLU-Linear(d, 6d) of the conditioning gives a shift, scale and gate for the attention and the
MLP halves around parameter-free LayerNorms, with the modulation and the final layer
zero-initialised; attention is non-causal through the configured backend; the final layer
(adaLN shift/scale, Linear to p x p x out channels) is unpatchified to (B, out, S, S). With
``learn_sigma`` the output has twice the input channels (noise and variance), as DiT-XL/2 and
diffusers' ``DiTTransformer2DModel(out_channels=8)``.

A training step is the denoising loss: latents x0 and noise, timesteps uniform in [0, 1000),
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (DiT's linear beta schedule, 1e-4 to 0.02), the
mean squared error between the predicted and the true noise. DiT adds a variational-bound term
for the variance channels; this family trains the noise channels only (the variance channels'
FLOPs are counted, their loss is not). A forward step is one denoising step: the model at one
timestep per sample. The block's norm is modulated before its projections, so precision=fp8
converts each Linear on its own (te.Linear), not a fused LayerNormLinear.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from b200lab.measure import flops as F_
from b200lab.models.config.dit import DiTConfig
from b200lab.models.sample_family import SampleFamily
from b200lab.models.vit import FULL

FREQ_DIM = 256  # sinusoidal timestep frequencies (DiT's frequency_embedding_size)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_frequencies(t: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) [cos, sin] of t at geometrically spaced frequencies (float32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_positions(d: int, grid: int) -> torch.Tensor:
    """DiT's fixed 2-D sine-cosine position embedding: (grid*grid, d), half the width per axis."""

    def one_axis(dim: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    h, w = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    return torch.cat([one_axis(d // 2, w), one_axis(d // 2, h)], dim=1).float()


class DiTMLP(nn.Module):
    def __init__(self, d: int, d_ff: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int, eps: float, attention):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.attention = attention
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=eps)
        self.mlp = DiTMLP(d, d_ff)
        self.modulation = nn.Linear(d, 6 * d)  # after a SiLU of the conditioning

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c).chunk(6, dim=1)
        h = modulate(self.norm1(x), shift_a, scale_a)
        q, k, v = self.qkv(h).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        y = self.attention(q, k, v, FULL)
        x = x + gate_a.unsqueeze(1) * self.out(y.transpose(1, 2).reshape(B, T, d))
        return x + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


ZERO_INIT = ("modulation.weight", "final.weight")  # adaLN-Zero: each block's and the final modulation, the output


class DiT(nn.Module):
    def __init__(self, cfg, attention):
        super().__init__()
        d, p = cfg.d_model, cfg.patch_size
        self.cfg, self.grid = cfg, cfg.latent_size // p
        self.out_channels = cfg.latent_channels * (2 if cfg.learn_sigma else 1)
        self.patch = nn.Conv2d(cfg.latent_channels, d, kernel_size=p, stride=p)
        self.register_buffer(
            "pos", sincos_positions(d, self.grid)[None].to(torch.get_default_dtype()), persistent=False
        )
        self.t_in, self.t_out = nn.Linear(FREQ_DIM, d), nn.Linear(d, d)
        self.classes = nn.Embedding(cfg.n_classes + 1, d)  # the last row is "no class"
        self.blocks = nn.ModuleList(
            DiTBlock(d, cfg.n_heads, cfg.d_ff, cfg.norm_eps, attention) for _ in range(cfg.n_layers)
        )
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.final_modulation = nn.Linear(d, 2 * d)
        self.final = nn.Linear(d, p * p * self.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            self.init_parameter(name, p)

    @torch.no_grad()
    def init_parameter(self, name: str, p: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """DiT's init: Xavier-uniform linears (the patch embedding as a linear), zero biases,
        N(0, 0.02) for the class table and the timestep MLP, and adaLN-Zero: every modulation and
        the final projection start at zero."""
        if name.endswith("bias") or name.endswith(ZERO_INIT):
            nn.init.zeros_(p)
        elif name in ("classes.weight", "t_in.weight", "t_out.weight"):
            nn.init.normal_(p, std=0.02, generator=generator)
        elif p.dim() >= 2:
            nn.init.xavier_uniform_(p.view(p.shape[0], -1), generator=generator)
        else:
            raise ValueError(f"no initialisation for parameter {name} of shape {tuple(p.shape)}")

    def condition(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """SiLU(timestep embedding + class embedding): what every modulation reads."""
        if self.training and self.cfg.class_dropout > 0:
            drop = torch.rand(y.shape, device=y.device) < self.cfg.class_dropout
            y = torch.where(drop, torch.full_like(y, self.cfg.n_classes), y)
        freqs = timestep_frequencies(t).to(self.t_in.weight.dtype)
        return F.silu(self.t_out(F.silu(self.t_in(freqs))) + self.classes(y))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, S) noisy latents, t (B,) timesteps, y (B,) classes -> (B, out, S, S)."""
        B, p, g = x.shape[0], self.cfg.patch_size, self.grid
        h = self.patch(x.to(self.patch.weight.dtype)).flatten(2).transpose(1, 2)  # (B, T, d)
        # the dtype the weights set (float32 under autocast, as before); under FSDP2 mixed precision the
        # gathered weights are bf16 while the buffer stays float32 with the float32 shards
        h = h + self.pos.to(torch.promote_types(h.dtype, self.patch.weight.dtype))
        c = self.condition(t, y)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=1)
        h = self.final(modulate(self.norm_final(h), shift, scale))  # (B, T, p*p*out)
        h = h.view(B, g, g, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(B, self.out_channels, g * p, g * p)


def linear_schedule(steps: int) -> torch.Tensor:
    """abar_t of DiT's (ADM's) linear beta schedule, 1e-4 to 0.02 over ``steps``, float64."""
    betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


class DiTFamily(SampleFamily):
    """Class-conditional latent diffusion; the loss is the noise-prediction MSE."""

    Config = DiTConfig

    def build(self, attention) -> nn.Module:
        return DiT(self.cfg, attention)

    def transformer_tokens(self) -> int:
        return (self.cfg.latent_size // self.cfg.patch_size) ** 2

    def attention_shapes(self, seq_len: int) -> tuple[int, int, int, int]:
        c = self.cfg
        return c.n_heads, c.n_heads, self.transformer_tokens(), c.d_model // c.n_heads

    attention_mask = FULL

    def flops_per_sample(self, seq_len: int, training: bool) -> int:
        c = self.cfg
        T, d, p = self.transformer_tokens(), c.d_model, c.patch_size
        out = c.latent_channels * (2 if c.learn_sigma else 1)
        forward = (
            F_.linear_flops(T, c.latent_channels * p * p, d)  # patch embedding
            + F_.linear_flops(1, FREQ_DIM, d)
            + F_.linear_flops(1, d, d)  # timestep MLP (once per sample)
            + c.n_layers * (F_.linear_flops(1, d, 6 * d) + F_.encoder_layer_flops(T, d, c.d_ff))
            + F_.linear_flops(1, d, 2 * d)
            + F_.linear_flops(T, d, p * p * out)
        )  # final modulation and projection
        return F_.training_multiple(forward, training)

    def synthetic_batch(self, batch: int, seq_len: int, generator: torch.Generator, device):
        """Noisy latents at random timesteps, their classes, and the noise to predict (the target)."""
        c = self.cfg
        shape = (batch, c.latent_channels, c.latent_size, c.latent_size)
        x0 = torch.randn(shape, generator=generator, device=device)
        noise = torch.randn(shape, generator=generator, device=device)
        t = torch.randint(0, c.diffusion_steps, (batch,), generator=generator, device=device)
        y = torch.randint(0, c.n_classes, (batch,), generator=generator, device=device)
        abar = linear_schedule(c.diffusion_steps).to(device)[t].float()[:, None, None, None]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        return {"x": x_t, "t": t, "y": y}, noise

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs[:, : targets.shape[1]].float(), targets.float())
