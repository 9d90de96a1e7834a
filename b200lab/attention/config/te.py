"""``attention=te``: Transformer Engine's DotProductAttention (b200lab/attention/te.py)."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.attention.config.base import AttentionConfig
from b200lab.core.component import CheckContext

TE_INSTALL = "pip install 'b200lab[fp8]' (transformer-engine[pytorch])"


@dataclass
class TEAttentionConfig(AttentionConfig):
    target = "b200lab.attention.te.TEAttention"
    supports_documents = False
    causal_only = "Transformer Engine's attention is wired causal-only (b200lab/attention/te.py)"
    no_decode = "Transformer Engine's DotProductAttention here runs whole causal sequences only"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        from b200lab.precision.availability import te_version

        problems = super().validate(cfg, ctx)
        if ctx.device != "cuda":
            problems.append(
                f"attention=te needs a CUDA GPU (Transformer Engine has no CPU kernels) and this job runs on "
                f"{ctx.device}; use attention=sdpa"
            )
        elif te_version() is None:
            problems.append(f"attention=te needs Transformer Engine, which is not installed: {TE_INSTALL}")
        return problems
