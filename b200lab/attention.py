"""Attention backends behind one call: ``backend(q, k, v, mask) -> out``.

Shapes: q (B, Hq, Tq, D); k and v (B, Hkv, Tk, D) with Hq a multiple of Hkv (grouped-query
attention). ``mask`` (:class:`AttnMask`) says which keys a query may see: causal, a sliding
window, document ids, and the absolute positions of queries and keys, so a decode step
(Tq = 1 against a KV cache of Tk keys) is the same call. A backend that cannot do what a mask
asks raises; ``effective`` records the kernel that ran and a reason for any difference from the
request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F

from b200lab.components import CheckContext, ComponentConfig


@dataclass
class AttnMask:
    causal: bool = True
    window: Optional[int] = None  # a query sees keys at most window - 1 positions back
    doc_ids: Optional[torch.Tensor] = None  # (B, Tk) document of each key slot; the queries are the last Tq slots
    q_pos: Optional[torch.Tensor] = None  # (Tq,) query positions for causal/window; default: the last Tq key positions
    k_pos: Optional[torch.Tensor] = None  # (Tk,) key positions (e.g. absolute, in a rolling cache); default: 0 .. Tk-1

    def restricted(self) -> bool:
        """A window, documents or explicit positions: more than the plain causal/full pattern."""
        return self.window is not None or self.doc_ids is not None or self.q_pos is not None or self.k_pos is not None

    def plain_causal(self, tq: int, tk: int) -> bool:
        return self.causal and not self.restricted() and tq == tk

    def positions(self, tq: int, tk: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        k_pos = self.k_pos if self.k_pos is not None else torch.arange(tk, device=device)
        q_pos = self.q_pos if self.q_pos is not None else k_pos[tk - tq:]
        return q_pos, k_pos

    def dense(self, tq: int, tk: int, device) -> torch.Tensor:
        """Boolean (B or 1, 1, Tq, Tk): True where the query may attend to the key."""
        q_pos, k_pos = self.positions(tq, tk, device)
        allowed = torch.ones(tq, tk, dtype=torch.bool, device=device)
        delta = q_pos[:, None] - k_pos[None, :]
        if self.causal:
            allowed &= delta >= 0
        if self.window is not None:
            allowed &= delta < self.window
        allowed = allowed[None, None]
        if self.doc_ids is not None:
            q_doc = self.doc_ids[:, tk - tq:]
            allowed = allowed & (q_doc[:, None, :, None] == self.doc_ids[:, None, None, :])
        return allowed


CAUSAL = AttnMask()


@dataclass
class AttentionConfig(ComponentConfig):
    pass


class AttentionBackend:
    Config = AttentionConfig

    def __init__(self, cfg, device: str):
        self.cfg = cfg
        self.requested = cfg.name
        self.device = device
        self.effective = {"name": cfg.name, "kernel": None, "reason": None}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        return []

    def probe(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask = CAUSAL) -> None:
        """Record in ``effective`` the kernel a call with these shapes runs (called once, eagerly,
        before timing, so a compiled model still reports it)."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask = CAUSAL) -> torch.Tensor:
        raise NotImplementedError


def expand_kv(q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Repeat grouped K/V heads to the query heads."""
    groups = q.shape[1] // kv.shape[1]
    return kv if groups == 1 else kv.repeat_interleave(groups, dim=1)


SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")


@dataclass
class SdpaConfig(AttentionConfig):
    backends: List[str] = field(default_factory=list)  # allowed SDPA kernels; empty: PyTorch chooses


class SdpaAttention(AttentionBackend):
    """PyTorch's SDPA. The kernel is PyTorch's choice among ``backends`` (all when empty), read
    from its own dispatcher (``torch._fused_sdp_choice``) for the run's shapes."""

    Config = SdpaConfig

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        bad = [b for b in cfg.backends if b not in SDPA_BACKENDS]
        return [f"attention.backends={list(cfg.backends)}: unknown {bad}; choose from {', '.join(SDPA_BACKENDS)}"] if bad else []

    def __init__(self, cfg, device: str):
        super().__init__(cfg, device)
        self.allowed = self._allowed(cfg.backends)
        self.effective["allowed"] = list(cfg.backends) or "all"

    @staticmethod
    def _allowed(names) -> Optional[list]:
        if not names:
            return None
        from torch.nn.attention import SDPBackend

        enum = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
        return [enum[n] for n in names]

    def _context(self):
        import contextlib

        if self.allowed is None:
            return contextlib.nullcontext()
        from torch.nn.attention import sdpa_kernel

        return sdpa_kernel(self.allowed)

    def _args(self, q, k, v, mask: AttnMask):
        tq, tk = q.shape[-2], k.shape[-2]
        if mask.plain_causal(tq, tk):
            return dict(attn_mask=None, is_causal=True)
        if not mask.causal and mask.window is None and mask.doc_ids is None:
            return dict(attn_mask=None, is_causal=False)
        return dict(attn_mask=mask.dense(tq, tk, q.device), is_causal=False)

    def probe(self, q, k, v, mask: AttnMask = CAUSAL) -> None:
        from torch.nn.attention import SDPBackend

        names = {SDPBackend.FLASH_ATTENTION: "flash", SDPBackend.EFFICIENT_ATTENTION: "efficient",
                 SDPBackend.CUDNN_ATTENTION: "cudnn", SDPBackend.MATH: "math"}
        args = self._args(q, k, v, mask)
        gqa = q.shape[1] != k.shape[1]
        with self._context():
            choice = torch._fused_sdp_choice(q, k, v, args["attn_mask"], 0.0, args["is_causal"], enable_gqa=gqa)
        kernel = next((n for b, n in names.items() if b.value == choice), f"backend #{choice}")
        kernel = f"sdpa-{kernel}" + ("-masked" if args["attn_mask"] is not None else "")
        self.effective.setdefault("kernels", {})[self._kind(q, k, mask)] = kernel
        if self.effective["kernel"] is None:
            self.effective["kernel"] = kernel

    @staticmethod
    def _kind(q, k, mask: AttnMask) -> str:
        """What a call is, for the record of kernels by kind: causal, masked, decode or full."""
        if q.shape[-2] != k.shape[-2]:
            return "decode"
        if mask.restricted():
            return "masked"
        return "causal" if mask.causal else "full"

    def __call__(self, q, k, v, mask: AttnMask = CAUSAL):
        if not torch.compiler.is_compiling() and self._kind(q, k, mask) not in self.effective.get("kernels", {}):
            self.probe(q, k, v, mask)  # eager calls of a new kind are recorded too (a compiled model: the setup probe)
        with self._context():
            return F.scaled_dot_product_attention(q, k, v, **self._args(q, k, v, mask), enable_gqa=q.shape[1] != k.shape[1])


class MathAttention(AttentionBackend):
    """Explicit scores, any mask, an fp32 (fp64 for fp64 inputs) softmax: the readable reference."""

    def __init__(self, cfg, device: str):
        super().__init__(cfg, device)
        self.effective["kernel"] = "math (explicit matmul + mask + softmax)"

    def __call__(self, q, k, v, mask: AttnMask = CAUSAL):
        k, v = expand_kv(q, k), expand_kv(q, v)
        tq, tk = q.shape[-2], k.shape[-2]
        scores = (q @ k.transpose(-2, -1)).to(torch.promote_types(q.dtype, torch.float32)) * (1.0 / math.sqrt(q.shape[-1]))
        scores = scores.masked_fill(~mask.dense(tq, tk, q.device), float("-inf"))
        return scores.softmax(dim=-1).to(v.dtype) @ v
