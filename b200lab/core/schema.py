"""The job config: fixed groups with one dataclass each, component groups open at composition.

Hydra checks the fixed groups' types at composition (``seq.batch=abc`` fails there). The
component groups (model, precision, attention, parallelism, workload, data) name an option's
implementation by ``_target_``; its config class brings the fields and checks
(b200lab/core/component.py, b200lab/core/registry.py). b200lab/core/validation.py completes and
checks a composed config before any run is created.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING


@dataclass
class SeqConfig:
    name: str = MISSING
    len: int = MISSING
    batch: int = MISSING


@dataclass
class CompileConfig:
    name: str = MISSING
    mode: str | None = None  # None: eager; else a torch.compile mode
    fullgraph: bool = False


@dataclass
class ProfileOptions:
    wait: int = 1  # torch: steps skipped, warmed up and recorded after the timed ones
    warmup: int = 1
    active: int = 3
    launch_count: int = 4000  # ncu: kernels profiled at most
    top: int = 15  # ncu: kernels in the table
    memory_entries: int = 200000  # profile.memory: allocator events kept


@dataclass
class ProfileConfig:
    name: str = "none"  # none | torch | nsys | ncu
    memory: bool = False  # CUDA memory snapshot of the job, for pytorch.org/memory_viz
    options: ProfileOptions = field(default_factory=ProfileOptions)


@dataclass
class RunConfig:
    device: str = "auto"  # auto | cuda | cpu
    launcher: str = "torchrun"  # torchrun | inline (debugging: runs in this process)
    seed: int = 1234
    timeout_s: float = 3600.0


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment: str = "b200lab"
    system_metrics: bool = True
    probe_timeout_s: float = 3.0


@dataclass
class GuardConfig:
    """The accuracy guard a sweep applies when it ends (b200lab/reports/accuracy_guard.py)."""

    # the precision whose perplexity the others are compared with (e.g. fp32); None: no guard
    reference: str | None = None
    # fail the sweep when a point's perplexity exceeds the reference's by more (0.01 = 1%)
    max_ppl_delta: float | None = None


@dataclass
class Config:
    # component groups: each option's config class brings its schema (checked by validate)
    model: Any = MISSING
    precision: Any = MISSING
    attention: Any = MISSING
    parallelism: Any = MISSING
    workload: Any = MISSING
    data: Any = MISSING
    seq: SeqConfig = MISSING
    compile: CompileConfig = MISSING
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    preset: str = "none"  # set by experiments/*.yaml


FIXED = {
    "seq": SeqConfig,
    "compile": CompileConfig,
    "profile": ProfileConfig,
    "run": RunConfig,
    "tracking": TrackingConfig,
    "guard": GuardConfig,
}
COMPILE_MODES = {None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"}
PROFILERS = ("none", "torch", "nsys", "ncu")


def conf_dir() -> str:
    """conf/ shipped inside the installed package, else the checkout's top-level conf/."""
    here = Path(__file__).resolve().parents[1]
    packaged = here / "conf"
    return str(packaged if (packaged / "config.yaml").exists() else here.parent / "conf")


def register_configs() -> list[str]:
    """The job schema and every option's config class in Hydra's ConfigStore (once per process);
    returns warnings for plugins that could not be loaded."""
    from hydra.core.config_store import ConfigStore

    from b200lab.core.registry import register_schemas

    ConfigStore.instance().store(name="b200lab_schema", node=Config)
    return register_schemas()


def finite(value: Any) -> bool:
    """False for NaN and infinities (a number that would poison every step it touches)."""
    return not (isinstance(value, float) and not math.isfinite(value))
