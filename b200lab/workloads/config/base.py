"""What every workload declares: its timing fields, whether it trains, builds the model, decodes
from a KV cache (and with how many rows per step) or reads a checkpoint the parent stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from b200lab.core.component import CheckContext, ComponentConfig, DecodeRows


@dataclass
class NoOptions:
    """A workload without options: any key under workload.options is refused."""


@dataclass
class WorkloadConfig(ComponentConfig):
    warmup_steps: int = 5
    steps: int = 20
    min_time_s: float = 0.0  # time at least this long; the later of steps and min_time_s ends timing
    trials: int = 1  # timed regions back to back (one warm-up); the spread across them is reported
    options: NoOptions = field(
        default_factory=NoOptions
    )  # a workload with options overrides this field with its own dataclass

    training: ClassVar[bool] = False  # runs an optimizer (precision recipes and strategies wrap the model for training)
    uses_model: ClassVar[bool] = False  # builds the configured model (model/precision/attention apply)
    # options.checkpoint names weights the parent stages (b200lab/runner/staging.py)
    reads_checkpoint: ClassVar[bool] = False

    @classmethod
    def decode_rows(cls, cfg, job) -> DecodeRows | None:
        """The rows each decode step feeds a GEMM, or None for a workload that does not decode."""
        return None

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = [f"workload.{k}={cfg[k]}: must be a positive integer" for k in ("steps", "trials") if cfg[k] < 1]
        problems += [f"workload.{k}={cfg[k]}: must be >= 0" for k in ("warmup_steps", "min_time_s") if cfg[k] < 0]
        return problems
