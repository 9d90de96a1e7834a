"""``attention=sdpa`` and the kernel-held options ``sdpa_flash``, ``sdpa_cudnn``, ``sdpa_efficient``."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.attention.config.base import AttentionConfig
from b200lab.core.component import CheckContext

SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
GPU_ONLY = {
    "efficient": "memory-efficient attention",
    "cudnn": "cuDNN attention",
}  # PyTorch's CPU build has flash and math
FLASH_MAX_HEAD_DIM = 256  # PyTorch's FlashAttention-2 kernels (head dims up to 256, multiples of 8)


def head_dim_of(cfg) -> int | None:
    """The attention head dim the job's model (or attention workload) will call with, if known."""
    options = cfg.workload.get("options") or {}
    if "head_dim" in options:
        return int(options["head_dim"])
    model = cfg.get("model") or {}
    if model.get("d_model") and model.get("n_heads"):
        return int(model["d_model"]) // int(model["n_heads"])
    return None


@dataclass
class SdpaConfig(AttentionConfig):
    backends: list[str] = field(default_factory=list)  # allowed SDPA kernels; empty: PyTorch chooses

    target = "b200lab.attention.sdpa.SdpaAttention"
    neutral = True

    @classmethod
    def is_neutral(cls, cfg) -> bool:
        return super().is_neutral(cfg) and not cfg.get("backends")

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        bad = [b for b in cfg.backends if b not in SDPA_BACKENDS]
        if bad:
            return problems + [
                f"attention.backends={list(cfg.backends)}: unknown {bad}; choose from {', '.join(SDPA_BACKENDS)}"
            ]
        if len(cfg.backends) == 1:
            only = cfg.backends[0]
            if ctx.device != "cuda" and only in GPU_ONLY:
                problems.append(
                    f"attention={cfg.name}: {GPU_ONLY[only]} needs a CUDA GPU and this job runs on {ctx.device}; "
                    "use attention=sdpa to let PyTorch choose a kernel"
                )
            head_dim = head_dim_of(ctx.cfg)
            if (
                only == "flash"
                and ctx.device == "cuda"
                and head_dim
                and (head_dim > FLASH_MAX_HEAD_DIM or head_dim % 8)
            ):
                problems.append(
                    f"attention={cfg.name}: FlashAttention takes head dims up to {FLASH_MAX_HEAD_DIM} in "
                    f"multiples of 8; this model's is {head_dim}. Use attention=sdpa to let PyTorch choose"
                )
        return problems
