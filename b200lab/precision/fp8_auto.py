"""``precision=fp8_auto``: the best real FP8 path this machine has, else no FP8, and why.

The order: Transformer Engine with ``precision.recipe`` (training and inference); torchao's
float8 training (training, where torchao is installed); FP8 weight-only GEMMs (inference, on a
card whose ``torch._scaled_mm`` runs FP8). Where none can run (a CPU, an A100, a missing
library) the run falls back to ``precision=auto`` (bf16 on a GPU, float32 on a CPU). The
reason every earlier choice was passed over is in ``effective.reason``, and ``effective.name``
says which recipe ran, so a fallback is never reported as FP8. A decode workload whose steps TE's
FP8 GEMMs cannot run (their row alignment: b200lab/precision/availability.py) sets ``avoid_te``,
and TE is passed over for that reason.
"""

from __future__ import annotations

from b200lab.core.registry import load
from b200lab.precision.base import PrecisionRecipe
from b200lab.precision.config.autocast import AutocastConfig
from b200lab.precision.config.fp8_auto import RAN, FP8AutoConfig
from b200lab.precision.config.te_fp8 import TEFP8Config


class FP8AutoPrecision(PrecisionRecipe):
    Config = FP8AutoConfig

    def __init__(self, cfg, device: str, training: bool):
        super().__init__(cfg, device, training)
        config, passed = FP8AutoConfig.candidates(cfg, device, training)
        try:
            self.inner = load(config.target)(FP8AutoConfig.inner_config(cfg, config), device, training)
        except RuntimeError as exc:  # TE itself disagrees with the parent's check: take the next path
            if config is not TEFP8Config:
                raise
            passed.append(f"transformer_engine: {exc}")
            config = AutocastConfig
            self.inner = load(config.target)(FP8AutoConfig.inner_config(cfg, config), device, training)
        for attr in ("param_dtype", "compute_dtype", "peak_key", "extra_peak_keys"):
            setattr(self, attr, getattr(self.inner, attr))
        ran = RAN[config]
        reasons = "; ".join(passed) or None
        self.effective = {
            **self.inner.effective,
            "name": cfg.name,
            "ran": ran,
            "fallback": ran.startswith("no fp8"),
            "reason": reasons,
        }

    def convert(self, model):
        self.inner.patterns = self.patterns
        model = self.inner.convert(model)
        self.effective = {
            **self.inner.effective,
            **{k: self.effective[k] for k in ("name", "ran", "fallback", "reason")},
        }
        return model

    def autocast(self):
        return self.inner.autocast()

    def master_weights(self, model, compile: bool = False):
        return self.inner.master_weights(model, compile)

    def grad_scaler(self):
        return self.inner.grad_scaler()

    def plain_state_dict(self, model):
        return self.inner.plain_state_dict(model)
