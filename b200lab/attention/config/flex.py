"""``attention=flex``, ``flex_sliding``, ``flex_document``: FlexAttention (b200lab/attention/flex.py)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, ClassVar

from b200lab.attention.config.base import AttentionConfig
from b200lab.core.component import CheckContext

FLEX_BACKENDS = ("auto", "triton", "flash")
FLASH_INSTALL = "pip install 'b200lab[flash]' (the flash-attn-4 package)"


def flash_importable() -> bool:
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except ImportError:
        return False


@dataclass
class FlexConfig(AttentionConfig):
    reads_pages: ClassVar[bool] = True  # a mask_mod over the pool's slots (b200lab/attention/flex.py)
    flex_backend: str = "auto"  # auto | triton | flash
    block_size: int = 128  # tokens per block-mask tile (queries and keys)
    kernel_options: dict[str, Any] = field(
        default_factory=dict
    )  # passed to flex_attention, e.g. BLOCK_M, num_warps, USE_TMA

    target = "b200lab.attention.flex.FlexAttention"
    no_cpu_backward = "PyTorch's FlexAttention has no backward pass there"
    # torch 2.13's inductor: "A subgraph argument other than striding has been modified" on the block
    # mask the serve step builds from its per-row document ids
    serve_compile_problem = (
        "the compiled serve step fails in inductor on the FlexAttention block mask it builds each step "
        "from the rows' cache windows"
    )

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if cfg.flex_backend not in FLEX_BACKENDS:
            return problems + [f"attention.flex_backend={cfg.flex_backend!r}: choose {', '.join(FLEX_BACKENDS)}"]
        if cfg.block_size < 16 or cfg.block_size % 16:
            problems.append(f"attention.block_size={cfg.block_size}: must be a positive multiple of 16")
        if ctx.device != "cuda":
            if ctx.training:
                problems.append(
                    f"attention={cfg.name} cannot train on {ctx.device}: PyTorch's FlexAttention has no "
                    "backward pass there. Use attention=sdpa, or run on a GPU"
                )
            if cfg.flex_backend == "flash":
                problems.append(
                    f"attention.flex_backend=flash needs a CUDA GPU (Hopper or newer) and this job runs on "
                    f"{ctx.device}; use attention.flex_backend=auto"
                )
        elif cfg.flex_backend == "flash" and not flash_importable():
            problems.append(
                f"attention.flex_backend=flash needs FlashAttention-4, which is not installed: {FLASH_INSTALL}; "
                "or use attention.flex_backend=auto (Triton where flash is missing)"
            )
        return problems
