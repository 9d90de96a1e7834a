"""``model=vit_b16, vit_l16, vit_h14, vit_mini``: the vision transformer (b200lab/models/vit.py)."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.core.component import CheckContext
from b200lab.models.config.sample import SampleConfig


@dataclass
class ViTConfig(SampleConfig):
    family: str = "vit"
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    n_classes: int = 1000
    norm_eps: float = 1e-6

    target = "b200lab.models.vit.ViTFamily"
    token_unit = "image"
    label = "ViT"
    init_by_name = True
    seq_field = "image_size"
    seq_meaning = "the image side in pixels"
    seq_options = {224: "img224", 32: "img32"}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = cls.positive(
            cfg, "image_size", "patch_size", "in_channels", "n_layers", "d_model", "n_heads", "d_ff", "n_classes"
        )
        if problems:
            return problems
        if cfg.image_size % cfg.patch_size:
            problems.append(f"model.patch_size={cfg.patch_size} does not divide model.image_size={cfg.image_size}")
        if cfg.d_model % cfg.n_heads:
            problems.append(f"model.n_heads={cfg.n_heads} does not divide model.d_model={cfg.d_model}")
        return problems + super().validate(cfg, ctx)
