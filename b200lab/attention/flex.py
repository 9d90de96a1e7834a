"""FlexAttention: the mask as a function, a block mask that skips whole tiles, one compiled kernel.

``attention=flex`` (causal), ``flex_sliding`` (``attention.window`` tokens) and ``flex_document``
(packed sequences: a query sees only its own document) share this class. The block mask of a
shape is built once and cached (document masks follow the batch, so they are built once per
forward and shared by its layers). ``attention.flex_backend`` picks the kernel: ``triton``
(PyTorch's Triton template), ``flash`` (FlexAttention's FLASH backend: FlashAttention-4 in CuTe
DSL, ``kernel_options={"BACKEND": "FLASH"}``, from the optional ``flash-attn-4`` package) or
``auto``: flash where it is importable, the card is Hopper or newer and a trial call at the run's
shapes succeeds, else triton, with the reason recorded. On a CPU it runs eagerly, PyTorch's
unfused implementation (the scores materialised), forward only (PyTorch has no FlexAttention
backward there): compiled, every new shape costs seconds of C++ compilation, and a serving step
meets a new shape at nearly every batch size and packed length. The CPU is for development; the
compiled kernels are the GPU's.
"""

from __future__ import annotations

import warnings

import torch
from omegaconf import OmegaConf

from b200lab.attention.base import (
    CAUSAL,
    AttentionBackend,
    AttentionUnsupported,
    AttnMask,
)
from b200lab.attention.config.flex import FLASH_INSTALL, FlexConfig, flash_importable
from b200lab.attention.kernels import short, trial_kernels

FLASH_MIN_CC = (9, 0)  # FlashAttention-4's CuTe kernels: Hopper (sm_90) and Blackwell

_COMPILED = None


def compiled_flex_attention():
    """flex_attention compiled once per process (called from eager code or inlined into a compiled model)."""
    global _COMPILED
    if _COMPILED is None:
        from torch.nn.attention.flex_attention import flex_attention

        _COMPILED = torch.compile(flex_attention, dynamic=False)
    return _COMPILED


def mask_mod_for(mask: AttnMask, tq: int, tk: int):
    """The mask as FlexAttention's ``mask_mod(b, h, q_idx, kv_idx) -> bool``; the same rule as
    :meth:`AttnMask.dense` (queries are the last ``tq`` of ``tk`` key slots)."""
    if mask.paged is not None:
        return _paged_mask_mod(mask)
    offset = tk - tq
    q_pos, k_pos, docs, window, causal = mask.q_pos, mask.k_pos, mask.doc_ids, mask.window, mask.causal

    def mod(b, h, q_idx, kv_idx):
        qp = q_pos[q_idx] if q_pos is not None else q_idx + offset
        kp = k_pos[kv_idx] if k_pos is not None else kv_idx
        allowed = qp >= kp if causal else qp == qp
        if window is not None:
            allowed = allowed & (qp - kp < window)
        if docs is not None:
            allowed = allowed & (docs[b, q_idx + offset] == docs[b, kv_idx])
        return allowed

    return mod


def _paged_mask_mod(mask: AttnMask):
    """A query sees the pool slots of its owner's blocks at or before its position (and in its window)."""
    paged, window = mask.paged, mask.window
    slot_owner, slot_pos, q_pos, owners = paged.slot_owner, paged.slot_pos, paged.q_pos, paged.owners()

    def mod(b, h, q_idx, kv_idx):
        delta = q_pos[b, q_idx] - slot_pos[kv_idx]
        allowed = (slot_owner[kv_idx] == owners[b, q_idx]) & (delta >= 0)
        if window is not None:
            allowed = allowed & (delta < window)
        return allowed

    return mod


class FlexAttention(AttentionBackend):
    Config = FlexConfig

    def __init__(self, cfg, device: str):
        super().__init__(cfg, device)
        if device != "cuda":  # eager on purpose (the module docstring): PyTorch's advice to compile is not for here
            warnings.filterwarnings(
                "ignore", message="flex_attention called without torch.compile", category=UserWarning
            )
        self.block_size = int(cfg.block_size)
        self.user_options = (
            OmegaConf.to_container(cfg.kernel_options)
            if OmegaConf.is_config(cfg.kernel_options)
            else dict(cfg.kernel_options)
        )
        self.masks: dict = {}  # (tq, tk, causal, window) -> BlockMask, for masks that do not follow the data
        self.kernel = self._choose(cfg.flex_backend, device)
        self.effective.update(
            flex_backend=cfg.flex_backend, block_size=self.block_size, kernel_options=self.user_options or None
        )
        self._record()

    def _choose(self, requested: str, device: str) -> str:
        if device != "cuda":
            self.effective["reason"] = "eager on a CPU: PyTorch's unfused FlexAttention (scores materialised)"
            return "cpu"
        if requested != "auto":
            return requested
        if not flash_importable():
            self.effective["reason"] = f"auto chose triton: FlashAttention-4 is not installed ({FLASH_INSTALL})"
            return "triton"
        cc = torch.cuda.get_device_capability()
        if cc < FLASH_MIN_CC:
            self.effective["reason"] = (
                f"auto chose triton: the FLASH backend needs compute capability >= 9.0, this card is {cc[0]}.{cc[1]}"
            )
            return "triton"
        return "flash"

    def _record(self) -> None:
        self.effective["kernel"] = f"flex-{self.kernel}"

    def kernel_options(self) -> dict:
        if self.kernel == "cpu":
            return dict(self.user_options)
        return {**self.user_options, "BACKEND": self.kernel.upper()}

    def block_mask(self, mask: AttnMask, batch: int, tq: int, tk: int, device):
        """The BlockMask of this call: cached by shape, or (document masks) once per forward."""
        from torch.nn.attention.flex_attention import create_block_mask

        per_row = mask.doc_ids is not None or mask.paged is not None
        follows_data = per_row or mask.q_pos is not None or mask.k_pos is not None
        key = (batch if per_row else None, tq, tk, mask.causal, mask.window, self.block_size)
        store = mask.memo if follows_data else self.masks
        if key not in store:
            store[key] = create_block_mask(
                mask_mod_for(mask, tq, tk),
                batch if per_row else None,
                None,
                tq,
                tk,
                device=device,
                BLOCK_SIZE=self.block_size,
            )
        return store[key]

    def probe(self, q, k, v, mask: AttnMask = CAUSAL) -> None:
        mask = self.configured(mask)
        tq, tk = q.shape[-2], k.shape[-2]
        if mask.doc_ids is None:
            bm = self.block_mask(mask, q.shape[0], tq, tk, q.device)
            self.effective["tiles_computed"] = round(
                1.0 - float(bm.sparsity()) / 100.0, 4
            )  # the share of tiles not skipped
        if q.device.type != "cuda":
            return
        try:  # the FLASH backend's limits (head dim, dtype, backward) show only when it compiles: try it here
            self.effective["launched"] = self._trial(q, k, v, mask)
        except Exception as exc:  # noqa: BLE001 - any failure of the trial decides the same way
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if self.kernel != "flash" or self.cfg.flex_backend == "flash":
                raise AttentionUnsupported(
                    f"attention={self.requested} (flex_backend={self.cfg.flex_backend}, kernel "
                    f"{self.kernel}) cannot run this call (q {tuple(q.shape)} {q.dtype}): {why}. "
                    "Use attention.flex_backend=auto or triton, or attention=sdpa"
                ) from None
            self.kernel = "triton"
            self.effective["reason"] = f"auto chose triton: the FLASH backend failed a trial call ({why})"
            self._record()
            self.effective["launched"] = self._trial(q, k, v, mask)

    def _trial(self, q, k, v, mask: AttnMask) -> list[str]:
        """Compiles the kernel at the run's shapes and returns what it launched."""
        return [short(n) for n in trial_kernels(self.attend, q, k, v, mask, self.training)]

    def attend(self, q, k, v, mask: AttnMask):
        from torch.nn.attention.flex_attention import flex_attention

        tq, tk = q.shape[-2], k.shape[-2]
        bm = self.block_mask(mask, q.shape[0], tq, tk, q.device)
        if self.kernel == "cpu":
            # inductor's CPU FlexAttention reads strided inputs wrongly in a compiled model (torch
            # 2.13: the rotary-rotated q and k of a GPT gave logits far from eager's); copies are right
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        kernel = flex_attention if self.kernel == "cpu" else compiled_flex_attention()
        return kernel(q, k, v, block_mask=bm, enable_gqa=q.shape[1] != k.shape[1], kernel_options=self.kernel_options())
