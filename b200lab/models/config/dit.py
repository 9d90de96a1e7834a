"""``model=dit_xl2, dit_mini``: the diffusion transformer (b200lab/models/dit.py)."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.core.component import CheckContext
from b200lab.models.config.sample import SampleConfig


@dataclass
class DiTConfig(SampleConfig):
    family: str = "dit"
    latent_size: int = 32
    latent_channels: int = 4
    patch_size: int = 2
    n_layers: int = 28
    d_model: int = 1152
    n_heads: int = 16
    d_ff: int = 4608
    n_classes: int = 1000
    learn_sigma: bool = True  # the output carries a variance per channel too (2 x latent_channels)
    class_dropout: float = 0.1  # training: the share of labels replaced by the "no class" row
    diffusion_steps: int = 1000
    norm_eps: float = 1e-6

    target = "b200lab.models.dit.DiTFamily"
    label = "DiT"
    init_by_name = True
    seq_field = "latent_size"
    seq_meaning = "the latent side (latent pixels)"
    seq_options = {32: "latent32", 8: "latent8"}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = cls.positive(
            cfg,
            "latent_size",
            "latent_channels",
            "patch_size",
            "n_layers",
            "d_model",
            "n_heads",
            "d_ff",
            "n_classes",
            "diffusion_steps",
        )
        if problems:
            return problems
        if cfg.latent_size % cfg.patch_size:
            problems.append(f"model.patch_size={cfg.patch_size} does not divide model.latent_size={cfg.latent_size}")
        if cfg.d_model % cfg.n_heads:
            problems.append(f"model.n_heads={cfg.n_heads} does not divide model.d_model={cfg.d_model}")
        if cfg.d_model % 4:
            problems.append(f"model.d_model={cfg.d_model}: the 2-D sine-cosine positions need a multiple of 4")
        if not 0 <= cfg.class_dropout < 1:
            problems.append(f"model.class_dropout={cfg.class_dropout}: must be in [0, 1)")
        return problems + super().validate(cfg, ctx)
