"""Attention backends behind one call: ``backend(q, k, v, mask) -> out``.

Shapes: q (B, Hq, Tq, D); k and v (B, Hkv, Tk, D) with Hq a multiple of Hkv (grouped-query
attention). ``mask`` (:class:`AttnMask`) says which keys a query may see: causal, a sliding
window, document ids, and the absolute positions of queries and keys, so a decode step
(Tq = 1 against a KV cache of Tk keys) is the same call. A backend that cannot do what a mask
asks raises; ``effective`` records the kernel that ran and a reason for any difference from the
request.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from b200lab.attention.config.base import AttentionConfig
from b200lab.attention.config.math import MathConfig


@dataclass
class PagedKeys:
    """Keys read in place from a block pool (b200lab/serving/paged.py): k and v are the whole pool,
    (1, Hkv, S, D), shared by every row of the batch, and a row sees the slots of its own blocks
    up to its query's position. Which slots are a query's: those whose ``slot_owner`` is its row's
    owner id (``row_owner[b]``, or the row's index b when ``row_owner`` is None), or, in a packed
    step (one row holding the tokens of several requests), the query's own (``row_owner[b, q]``)."""

    slot_owner: torch.Tensor  # (S,) the owner id of the sequence whose block holds each slot; -1 where none
    slot_pos: torch.Tensor  # (S,) the position, in its sequence, of the token a slot holds
    q_pos: torch.Tensor  # (B, Tq) each row's query positions
    row_owner: torch.Tensor | None = None  # (B,) each row's owner id, or (B, Tq) each query's; None: the row's index

    def owners(self) -> torch.Tensor:
        """(B, Tq): the owner id of every query."""
        b, tq = self.q_pos.shape
        if self.row_owner is None:
            return torch.arange(b, device=self.q_pos.device)[:, None].expand(b, tq)
        if self.row_owner.dim() == 1:
            return self.row_owner[:, None].expand(b, tq)
        return self.row_owner


@dataclass
class AttnMask:
    causal: bool = True
    window: int | None = None  # a query sees keys at most window - 1 positions back
    doc_ids: torch.Tensor | None = None  # (B, Tk) document of each key slot; the queries are the last Tq slots
    q_pos: torch.Tensor | None = None  # (Tq,) query positions for causal/window; default: the last Tq key positions
    k_pos: torch.Tensor | None = None  # (Tk,) key positions (e.g. absolute, in a rolling cache); default: 0 .. Tk-1
    paged: PagedKeys | None = None  # keys in place in a block pool; only backends whose config reads_pages take it
    # what a backend derives from this mask once per forward (a block mask), shared by every layer
    # and by copies made with dataclasses.replace
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    def restricted(self) -> bool:
        """A window, documents or explicit positions: more than the plain causal/full pattern."""
        return (
            self.window is not None
            or self.doc_ids is not None
            or self.q_pos is not None
            or self.k_pos is not None
            or self.paged is not None
        )

    def plain_causal(self, tq: int, tk: int) -> bool:
        return self.causal and not self.restricted() and tq == tk

    def positions(self, tq: int, tk: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        k_pos = self.k_pos if self.k_pos is not None else torch.arange(tk, device=device)
        q_pos = self.q_pos if self.q_pos is not None else k_pos[tk - tq :]
        return q_pos, k_pos

    def dense(self, tq: int, tk: int, device) -> torch.Tensor:
        """Boolean (B or 1, 1, Tq, Tk): True where the query may attend to the key."""
        if self.paged is not None:
            return self._dense_paged()
        q_pos, k_pos = self.positions(tq, tk, device)
        allowed = torch.ones(tq, tk, dtype=torch.bool, device=device)
        delta = q_pos[:, None] - k_pos[None, :]
        if self.causal:
            allowed &= delta >= 0
        if self.window is not None:
            allowed &= delta < self.window
        allowed = allowed[None, None]
        if self.doc_ids is not None:
            q_doc = self.doc_ids[:, tk - tq :]
            allowed = allowed & (q_doc[:, None, :, None] == self.doc_ids[:, None, None, :])
        return allowed

    def _dense_paged(self) -> torch.Tensor:
        p = self.paged
        delta = p.q_pos[:, :, None] - p.slot_pos[None, None, :]
        allowed = (p.slot_owner[None, None, :] == p.owners()[:, :, None]) & (delta >= 0)
        if self.window is not None:
            allowed &= delta < self.window
        return allowed[:, None]


CAUSAL = AttnMask()


class AttentionBackend:
    """``__call__`` applies the configured pattern (``window``) to the model's mask and calls
    ``attend``. What a backend can take is declared on its config class (b200lab/attention/config/),
    whose ``validate`` refuses the rest with the option's name."""

    Config = AttentionConfig
    training = False  # set by the model builder before ``probe``: calls will need a backward

    def __init__(self, cfg, device: str):
        self.cfg = cfg
        self.requested = cfg.name
        self.device = device
        self.window = cfg.get("window")
        self.effective = {"name": cfg.name, "kernel": None, "reason": None}
        if self.window is not None:
            self.effective["window"] = int(self.window)

    def configured(self, mask: AttnMask) -> AttnMask:
        """The model's mask with this backend's configured pattern applied."""
        if self.window is None or mask.window == self.window:
            return mask
        return dataclasses.replace(mask, window=self.window)

    def probe(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask = CAUSAL) -> None:
        """Record in ``effective`` the kernel a call with these shapes runs (called once, eagerly,
        before timing, so a compiled model still reports it)."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask = CAUSAL) -> torch.Tensor:
        return self.attend(q, k, v, self.configured(mask))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask) -> torch.Tensor:
        raise NotImplementedError


class AttentionUnsupported(RuntimeError):
    """A backend asked for by name cannot run this call (device, dtype, shape): the message says why."""


def expand_kv(q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Repeat grouped K/V heads to the query heads."""
    groups = q.shape[1] // kv.shape[1]
    return kv if groups == 1 else kv.repeat_interleave(groups, dim=1)


def reference_attention(q, k, v, mask: AttnMask) -> torch.Tensor:
    """Explicit scores, the dense mask, a softmax in fp32 (fp64 for fp64 inputs), then the
    weighted sum: the readable definition every backend is checked against."""
    k, v = expand_kv(q, k), expand_kv(q, v)
    tq, tk = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)).to(torch.promote_types(q.dtype, torch.float32)) * (1.0 / math.sqrt(q.shape[-1]))
    scores = scores.masked_fill(~mask.dense(tq, tk, q.device), float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v


class MathAttention(AttentionBackend):
    """:func:`reference_attention`, any mask: slow and memory-hungry (T x T scores), exact."""

    Config = MathConfig

    def __init__(self, cfg, device: str):
        super().__init__(cfg, device)
        self.effective["kernel"] = "math (explicit matmul + mask + softmax)"

    def attend(self, q, k, v, mask: AttnMask):
        return reference_attention(q, k, v, mask)
