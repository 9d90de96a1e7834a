"""Scoring a model on validation windows: per-token negative log-likelihood and perplexity.

``perplexity = exp(val_loss)``, where ``val_loss`` is the mean negative log-likelihood (nats) over
every scored target of the validation stream, each counted once (b200lab/data/text.py:
``window_plan``). Logits are scored in float32 at least; the sum is kept in float64 on the
device and read back once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from b200lab.data.base import Windows


@dataclass
class Perplexity:
    val_loss: float  # mean negative log-likelihood per scored token, nats
    tokens: int  # targets scored

    @property
    def perplexity(self) -> float:
        return math.exp(self.val_loss)

    def metrics(self) -> dict:
        return {"val_loss": self.val_loss, "perplexity": self.perplexity, "val_tokens": self.tokens}


METRIC_RULES = {"val_loss": "mean", "perplexity": "mean", "val_tokens": "max"}  # every rank scores the whole set


def logits_of(outputs) -> torch.Tensor:
    """The logits in what a model returned: the tensor itself, or an output object's ``.logits``
    (a family whose model returns extra terms, e.g. a router's losses)."""
    return outputs if isinstance(outputs, torch.Tensor) else outputs.logits


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T) negative log-likelihood of each target, in float32 at least."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)


def batch_nll(model, precision, windows: Windows, index: torch.Tensor) -> torch.Tensor:
    """Summed NLL (float64, on the device) of the scored targets of windows ``index``; an index
    of -1 is padding (a full-shape batch that scores nothing there)."""
    inputs, targets, mask = windows.batch(index.clamp(min=0))
    mask = mask & (index >= 0)[:, None]
    with torch.inference_mode(), precision.autocast():
        nll = token_nll(logits_of(model(inputs)), targets)
    return torch.where(mask, nll.double(), 0.0).sum()


def evaluate(model, precision, windows: Windows, batch: int) -> Perplexity:
    """Every window once, ``batch`` at a time (the last batch padded to full shape, so a compiled
    model sees one shape)."""
    device = windows.stream.device
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(windows), batch):
        index = torch.arange(start, start + batch, device=device)
        total += batch_nll(model, precision, windows, torch.where(index < len(windows), index, -1))
    return Perplexity(float(total) / windows.scored, windows.scored)
