"""Transformer Engine's DotProductAttention (``attention=te``): TE picks among its fused cuDNN
attention, FlashAttention and an unfused path; the probe records the kernels a call launched.

Causal, optionally a sliding window (TE's ``window_size=(window - 1, 0)``); grouped-query
attention through ``num_gqa_groups``. Our calls are (B, H, T, D); TE takes (B, T, H, D), so q, k
and v are transposed on the way in and the output on the way out (a copy each way where TE needs
contiguous tensors: part of what this backend costs here).
"""

from __future__ import annotations

from b200lab.attention.base import (
    CAUSAL,
    AttentionBackend,
    AttentionUnsupported,
    AttnMask,
)
from b200lab.attention.config.te import TEAttentionConfig
from b200lab.attention.kernels import short, trial_kernels


def te_kernel_family(names: list[str]) -> str:
    """A short name for what TE ran, from the kernels' names (the full names go to ``launched``)."""
    joined = " ".join(names).lower()
    if "cudnn" in joined or "fused_attn" in joined:
        return "te-cudnn-fused-attention"
    if "flash" in joined:
        return "te-flash-attention"
    return "te-unfused" if names else "te DotProductAttention"


class TEAttention(AttentionBackend):
    Config = TEAttentionConfig

    def __init__(self, cfg, device: str):
        super().__init__(cfg, device)
        self.modules: dict = {}
        self.effective["kernel"] = "te DotProductAttention"

    def _module(self, heads: int, kv_heads: int, head_dim: int):
        key = (heads, kv_heads, head_dim)
        if key not in self.modules:
            from b200lab.precision.te_support import import_te

            te = import_te()
            window = (self.window - 1, 0) if self.window is not None else None
            self.modules[key] = te.DotProductAttention(
                heads,
                head_dim,
                num_gqa_groups=kv_heads,
                attention_dropout=0.0,
                qkv_format="bshd",
                attn_mask_type="causal",
                window_size=window,
            )
        return self.modules[key]

    def probe(self, q, k, v, mask: AttnMask = CAUSAL) -> None:
        names = trial_kernels(
            self.attend, q, k, v, self.configured(mask), self.training
        )  # TE picks its backend on the first call
        self.effective["launched"] = [short(n) for n in names]
        self.effective["kernel"] = te_kernel_family(names)

    def attend(self, q, k, v, mask: AttnMask):
        tq, tk = q.shape[-2], k.shape[-2]
        if tq != tk or mask.doc_ids is not None or mask.q_pos is not None or mask.k_pos is not None or not mask.causal:
            raise AttentionUnsupported(
                "attention=te runs causal (optionally windowed) self-attention over the whole "
                "sequence only; this call is a decode step or carries documents/positions. "
                "Use attention=sdpa or flex for it"
            )
        B, H, T, D = q.shape
        dpa = self._module(H, k.shape[1], D)
        # TE reads bshd tensors as laid out in memory (a transposed view would be read as garbage)
        q, k, v = (x.transpose(1, 2).contiguous() for x in (q, k, v))
        out = dpa(q, k, v)  # (B, T, H * D)
        return out.view(B, T, H, D).transpose(1, 2)
