"""The precision-recipe contract.

A recipe is the class ``precision._target_`` names. It owns its config fields, its checks, what
it converts in the model (cast weights, or swap layers for FP8 ones: torchtitan's converter), the
context each forward runs under, master weights and loss scaling for training, what to record as
``effective``, and the datasheet peak its MFU is measured against (``peak_key``, e.g. ``bf16``;
``extra_peak_keys`` adds ratios against other peaks, e.g. an FP8 run against the bf16 peak).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

import torch

from b200lab.precision.config.base import PrecisionConfig


class PrecisionRecipe(ABC):
    Config = PrecisionConfig
    param_dtype: torch.dtype = torch.float32  # weights are created directly in this dtype
    compute_dtype: torch.dtype = torch.float32  # activations' dtype (shapes probes, e.g. attention)
    peak_key: str = "fp32"
    extra_peak_keys: tuple[str, ...] = ()
    # module type -> what it holds, as the model family declares it (b200lab/models/patterns.py)
    patterns: dict = {}

    def __init__(self, cfg, device: str, training: bool):
        self.cfg = cfg
        self.device = device
        self.training = training
        self.effective: dict = {"name": cfg.name}

    @abstractmethod
    def convert(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as this recipe runs it (weights cast, layers swapped)."""

    def autocast(self):
        return contextlib.nullcontext()

    def master_weights(self, model: torch.nn.Module, compile: bool = False):
        """A b200lab.precision.master.MasterWeights, or None when the optimizer steps the weights."""
        return None

    def grad_scaler(self):
        return None

    def plain_state_dict(self, model: torch.nn.Module) -> dict:
        """The weights under the model family's own names (what a checkpoint holds), with any
        torch.compile or DDP wrapper taken off; a recipe that swapped layers maps them back."""
        return unwrap(model).state_dict()

    def record(self) -> dict:
        """``effective`` with the MFU basis, for results.json."""
        return {**self.effective, "peak_key": self.peak_key, "extra_peak_keys": list(self.extra_peak_keys)}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile's and DDP's wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner
