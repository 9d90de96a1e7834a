"""``precision=fp8_auto``: the best real FP8 path this machine has, else no FP8, and why.

The order: Transformer Engine with ``precision.recipe`` (training and inference); torchao's
float8 training (training, where torchao is installed); FP8 weight-only GEMMs (inference, on a
card whose ``torch._scaled_mm`` runs FP8). Where none can run (a CPU, an A100, a missing
library) the run falls back to ``precision=auto`` (bf16 on a GPU, float32 on a CPU). The
reason every earlier choice was passed over is in ``effective.reason``, and ``effective.name``
says which recipe ran, so a fallback is never reported as FP8. A decode workload whose steps TE's
FP8 GEMMs cannot run (their row alignment: b200lab/precision/te_support.py) sets ``avoid_te``,
and TE is passed over for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import OmegaConf

from b200lab.components import CheckContext
from b200lab.precision.base import PrecisionConfig, PrecisionRecipe
from b200lab.precision.te_support import TE_RECIPES, te_decode_rows_problem, te_problem


@dataclass
class FP8AutoConfig(PrecisionConfig):
    recipe: str = "delayed"  # the Transformer Engine recipe to try first
    master_dtype: Optional[str] = "auto"
    avoid_te: Optional[str] = None  # why Transformer Engine cannot run this workload (a decode workload sets it)


def _candidates(cfg, device: str, training: bool) -> tuple[str, list[str]]:
    """(the recipe class path to run, why each better choice was passed over)."""
    passed: list[str] = []
    why = cfg.get("avoid_te") or te_problem(cfg.recipe, device)
    if why is None:
        return "b200lab.precision.te_fp8.TEFP8Precision", passed
    passed.append(f"transformer_engine: {why}")
    tries = [("torchao", "b200lab.precision.torchao_fp8.TorchaoFP8Precision")] if training else \
        [("fp8_weight_only", "b200lab.precision.weight_only.FP8WeightOnlyPrecision")]
    for label, target in tries:
        cls = _load(target)
        ok, reason = cls.available(device)
        if ok:
            return target, passed
        passed.append(f"{label}: {reason}")
    if training:
        passed.append("fp8_weight_only: inference only")
    return "b200lab.precision.autocast.AutocastPrecision", passed


def _load(target: str):
    import importlib

    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _inner_config(cfg, target: str):
    """A config for the chosen recipe: its defaults, with the fields fp8_auto shares."""
    cls = _load(target)
    inner = OmegaConf.structured(cls.Config(_target_=target, name=cfg.name))
    if "recipe" in inner and target.endswith("TEFP8Precision"):
        inner.recipe = cfg.recipe
    if "master_dtype" in inner:
        inner.master_dtype = cfg.master_dtype
    return inner


class FP8AutoPrecision(PrecisionRecipe):
    Config = FP8AutoConfig

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        if cfg.recipe not in TE_RECIPES:
            return [f"precision.recipe={cfg.recipe!r}: choose one of {', '.join(TE_RECIPES)}"]
        avoid = te_decode_rows_problem(ctx.cfg)
        target, _ = _candidates(OmegaConf.merge(cfg, {"avoid_te": avoid}) if avoid else cfg, ctx.device, ctx.training)
        return _load(target).validate(_inner_config(cfg, target), ctx)

    def __init__(self, cfg, device: str, training: bool):
        super().__init__(cfg, device, training)
        target, passed = _candidates(cfg, device, training)
        try:
            self.inner = _load(target)(_inner_config(cfg, target), device, training)
        except RuntimeError as exc:  # TE itself disagrees with the parent's check: take the next path
            if not target.endswith("TEFP8Precision"):
                raise
            passed.append(f"transformer_engine: {exc}")
            target = "b200lab.precision.autocast.AutocastPrecision"
            self.inner = _load(target)(_inner_config(cfg, target), device, training)
        for attr in ("param_dtype", "compute_dtype", "peak_key", "extra_peak_keys", "compile_problem"):
            setattr(self, attr, getattr(self.inner, attr))
        ran = {"TEFP8Precision": "transformer_engine", "TorchaoFP8Precision": "torchao", "FP8WeightOnlyPrecision": "fp8_weight_only",
               "AutocastPrecision": "no fp8 (precision=auto)"}[target.rpartition(".")[2]]
        reasons = "; ".join(passed) or None
        self.effective = {**self.inner.effective, "name": cfg.name, "ran": ran,
                          "fallback": ran.startswith("no fp8"), "reason": reasons}

    def convert(self, model):
        model = self.inner.convert(model)
        self.effective = {**self.inner.effective, **{k: self.effective[k] for k in ("name", "ran", "fallback", "reason")}}
        return model

    def autocast(self):
        return self.inner.autocast()

    def master_weights(self, model, compile: bool = False):
        return self.inner.master_weights(model, compile)

    def grad_scaler(self):
        return self.inner.grad_scaler()

    def plain_state_dict(self, model):
        return self.inner.plain_state_dict(model)
