"""PyTorch's scaled_dot_product_attention, free (``sdpa``) or held to one kernel (``sdpa_flash``,
``sdpa_cudnn``, ``sdpa_efficient``).

Free, PyTorch's dispatcher picks the kernel and ``effective`` records which, with the
dispatcher's own reason when it passed over FlashAttention (a CUDA device only). Held to one
kernel, a call it cannot take (device, dtype, head dim, mask) fails with the dispatcher's
reasons instead of quietly running another kernel.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F

from b200lab.attention.base import (
    CAUSAL,
    AttentionBackend,
    AttentionUnsupported,
    AttnMask,
)
from b200lab.attention.config.sdpa import SdpaConfig


def _sdpa_enum(name: str):
    from torch.nn.attention import SDPBackend

    return {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]


def dispatcher_reasons(q, k, v, attn_mask, is_causal: bool, kernel: str) -> str:
    """Why PyTorch's dispatcher would not take ``kernel`` for this call (its debug warnings)."""
    check = {
        "flash": torch.backends.cuda.can_use_flash_attention,
        "efficient": torch.backends.cuda.can_use_efficient_attention,
        "cudnn": getattr(torch.backends.cuda, "can_use_cudnn_attention", None),
    }.get(kernel)
    if check is None:
        return ""
    params = torch.backends.cuda.SDPAParams(q, k, v, attn_mask, 0.0, is_causal, q.shape[1] != k.shape[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usable = check(params, True)
    if usable:
        return ""
    return "; ".join(str(w.message).strip() for w in caught) or f"{kernel} is not usable for this call"


class SdpaAttention(AttentionBackend):
    """PyTorch's SDPA. The kernel is PyTorch's choice among ``backends`` (all when empty), read
    from its own dispatcher (``torch._fused_sdp_choice``) for the run's shapes."""

    Config = SdpaConfig

    def __init__(self, cfg, device: str):
        super().__init__(cfg, device)
        self.strict = cfg.backends[0] if len(cfg.backends) == 1 else None
        self.allowed = [_sdpa_enum(n) for n in cfg.backends] or None
        self.effective["allowed"] = list(cfg.backends) or "all"

    def _context(self):
        if self.allowed is None:
            return contextlib.nullcontext()
        from torch.nn.attention import sdpa_kernel

        return sdpa_kernel(self.allowed)

    @staticmethod
    def _args(q, k, v, mask: AttnMask):
        tq, tk = q.shape[-2], k.shape[-2]
        if mask.plain_causal(tq, tk):
            return dict(attn_mask=None, is_causal=True)
        if not mask.causal and mask.window is None and mask.doc_ids is None:
            return dict(attn_mask=None, is_causal=False)
        return dict(attn_mask=mask.dense(tq, tk, q.device), is_causal=False)

    def probe(self, q, k, v, mask: AttnMask = CAUSAL) -> None:
        from torch.nn.attention import SDPBackend

        mask = self.configured(mask)
        names = {
            SDPBackend.FLASH_ATTENTION: "flash",
            SDPBackend.EFFICIENT_ATTENTION: "efficient",
            SDPBackend.CUDNN_ATTENTION: "cudnn",
            SDPBackend.MATH: "math",
        }
        args = self._args(q, k, v, mask)
        gqa = q.shape[1] != k.shape[1]
        with self._context():
            try:
                choice = torch._fused_sdp_choice(q, k, v, args["attn_mask"], 0.0, args["is_causal"], enable_gqa=gqa)
            except RuntimeError as exc:
                why = (
                    dispatcher_reasons(q, k, v, args["attn_mask"], args["is_causal"], self.strict or "flash")
                    if q.is_cuda
                    else ""
                )
                raise AttentionUnsupported(
                    f"attention={self.requested} cannot run this call (q {tuple(q.shape)} {q.dtype} on {q.device.type}"
                    f"{', masked' if args['attn_mask'] is not None else ''}): {why or exc}. "
                    "Use attention=sdpa to let PyTorch choose a kernel"
                ) from None
        kernel = next((n for b, n in names.items() if b.value == choice), f"backend #{choice}")
        if self.allowed is None and kernel not in ("flash", "cudnn"):
            self.effective["reason"] = self._why_not_flash(q, k, v, args, kernel)
        kernel = f"sdpa-{kernel}" + ("-masked" if args["attn_mask"] is not None else "")
        self.effective.setdefault("kernels", {})[self._kind(q, k, mask)] = kernel
        if self.effective["kernel"] is None:
            self.effective["kernel"] = kernel

    @staticmethod
    def _why_not_flash(q, k, v, args, kernel: str) -> str:
        """The recorded reason for a fallback: PyTorch's own on CUDA; its CPU build gives none, so
        the call's layout is stated instead."""
        if q.is_cuda:
            reason = dispatcher_reasons(q, k, v, args["attn_mask"], args["is_causal"], "flash")
            return f"PyTorch chose {kernel}, not flash: {reason or 'no reason given'}"
        return (
            f"PyTorch chose {kernel}, not its CPU flash kernel, for q {tuple(q.shape)} {q.dtype} with strides "
            f"{tuple(q.stride())} (that kernel needs a contiguous head dim and no dropout)"
        )

    @staticmethod
    def _kind(q, k, mask: AttnMask) -> str:
        """What a call is, for the record of kernels by kind: causal, masked, decode or full."""
        if q.shape[-2] != k.shape[-2]:
            return "decode"
        if mask.restricted():
            return "masked"
        return "causal" if mask.causal else "full"

    def attend(self, q, k, v, mask: AttnMask):
        if not torch.compiler.is_compiling() and self._kind(q, k, mask) not in self.effective.get("kernels", {}):
            self.probe(q, k, v, mask)  # eager calls of a new kind are recorded too (a compiled model: the setup probe)
        with self._context():
            return F.scaled_dot_product_attention(
                q, k, v, **self._args(q, k, v, mask), enable_gqa=q.shape[1] != k.shape[1]
            )
