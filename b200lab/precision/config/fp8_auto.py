"""``precision=fp8_auto``: the best real FP8 path this machine has, else no FP8, and why
(b200lab/precision/fp8_auto.py). The choice is made here, from config classes only, so the
parent's check and the rank's build agree."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from b200lab.core.component import CheckContext, DecodeRows
from b200lab.precision.availability import (
    TE_RECIPES,
    te_decode_rows_problem,
    te_problem,
)
from b200lab.precision.config.autocast import AutocastConfig
from b200lab.precision.config.base import PrecisionConfig
from b200lab.precision.config.te_fp8 import TEFP8Config, compiled_overrides
from b200lab.precision.config.torchao_fp8 import TorchaoFP8Config
from b200lab.precision.config.weight_only import FP8WeightOnlyConfig

# the order tried after Transformer Engine: (label, config class), training and inference
AFTER_TE = {True: [("torchao", TorchaoFP8Config)], False: [("fp8_weight_only", FP8WeightOnlyConfig)]}
RAN = {
    TEFP8Config: "transformer_engine",
    TorchaoFP8Config: "torchao",
    FP8WeightOnlyConfig: "fp8_weight_only",
    AutocastConfig: "no fp8 (precision=auto)",
}


@dataclass
class RecordedLoss:
    """A recorded same-card pair in which FP8 (the path fp8_auto takes first) ran slower than bf16."""

    model: str  # model.name
    workload: str  # workload.name
    ratio: float  # FP8 over bf16, samples (or tokens) per second
    runs: str  # the two runs, bf16's and FP8's
    record: str  # the folder that holds them


@dataclass
class FP8AutoConfig(PrecisionConfig):
    recipe: str = "delayed"  # the Transformer Engine recipe to try first
    master_dtype: str | None = "auto"
    avoid_te: str | None = None  # why Transformer Engine cannot run this workload (a decode workload sets it)
    # where a record shows FP8 slower than bf16 for this model and workload: fp8_auto runs bf16 there
    fp8_lost: list[RecordedLoss] = field(default_factory=list)
    avoid_fp8: str | None = None  # the matching record, set from fp8_lost for the job (job_overrides)
    # bf16: Transformer Engine keeps linears too small for FP8 to gain in bf16 (precision.small_gemms) | fp8
    small_gemms: str = "bf16"
    compiled_model: bool = False  # set from compile.mode for the job (job_overrides): the experts' auto rule reads it

    target = "b200lab.precision.fp8_auto.FP8AutoPrecision"
    fp8_gemms = True
    may_use_te = True
    replaces_linears = "Transformer Engine, torchao or b200lab FP8"

    @classmethod
    def candidates(cls, cfg, device: str, training: bool) -> tuple[type, list[str]]:
        """(the config class of the recipe to run, why each better choice was passed over)."""
        passed: list[str] = []
        if cfg.get("avoid_fp8"):
            return AutocastConfig, [f"fp8: {cfg.avoid_fp8}"]
        why = cfg.get("avoid_te") or te_problem(cfg.recipe, device)
        if why is None:
            return TEFP8Config, passed
        passed.append(f"transformer_engine: {why}")
        for label, config in AFTER_TE[training]:
            ok, reason = config.available(device)
            if ok:
                return config, passed
            passed.append(f"{label}: {reason}")
        if training:
            passed.append("fp8_weight_only: inference only")
        return AutocastConfig, passed

    @classmethod
    def inner_config(cls, cfg, config: type):
        """A section for the chosen recipe: its defaults, with the fields fp8_auto shares."""
        inner = OmegaConf.structured(config(_target_=config.target, name=cfg.name))
        if config is TEFP8Config:
            inner.recipe = cfg.recipe
        for shared in ("master_dtype", "small_gemms", "compiled_model"):
            if shared in inner and shared in cfg:
                inner[shared] = cfg[shared]
        return inner

    @classmethod
    def job_overrides(cls, cfg, job) -> dict:
        """``compiled_model``, and ``avoid_fp8`` when ``fp8_lost`` holds a record for this job's model and workload."""
        model, workload = job.model.get("name"), job.workload.get("name")
        compiled = compiled_overrides(job)
        for loss in cfg.get("fp8_lost") or []:
            if (loss.model, loss.workload) == (model, workload):
                return {
                    **compiled,
                    "avoid_fp8": f"recorded slower than bf16 for model={model} workload={workload}: "
                    f"{loss.ratio:.3f}x ({loss.runs}; {loss.record}); precision=fp8 runs it anyway",
                }
        return compiled

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        if cfg.recipe not in TE_RECIPES:
            return [f"precision.recipe={cfg.recipe!r}: choose one of {', '.join(TE_RECIPES)}"]
        cfg = OmegaConf.merge(cfg, cls.job_overrides(cfg, ctx.cfg))
        overrides = cls.decode_overrides(cfg, ctx.spec("workload").decode_rows(ctx.cfg.workload, ctx.cfg))
        config, _ = cls.candidates(OmegaConf.merge(cfg, overrides) if overrides else cfg, ctx.device, ctx.training)
        return config.validate(cls.inner_config(cfg, config), ctx)

    @classmethod
    def decode_overrides(cls, cfg, rows: DecodeRows | None) -> dict:
        why = te_decode_rows_problem(cfg.recipe, rows)
        return {"avoid_te": why} if why else {}
