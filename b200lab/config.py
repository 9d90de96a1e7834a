"""The job config: fixed groups with one dataclass each, component groups open at composition.

Hydra checks the fixed groups' types at composition (``seq.batch=abc`` fails there). The
component groups (model, precision, attention, parallelism, workload, data) name a class by
``_target_``; that class brings its own schema and checks (b200lab/components.py).
:func:`validate` completes and checks everything before any run is created: unknown keys
(also ones added with ``+``), the allowlist of targets, each component's ``validate``, and the
combinations no single group can judge. Every message names the keys it is about.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class SeqConfig:
    name: str = MISSING
    len: int = MISSING
    batch: int = MISSING


@dataclass
class CompileConfig:
    name: str = MISSING
    mode: Optional[str] = None  # None: eager; else a torch.compile mode
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
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment: str = "b200lab"
    system_metrics: bool = True
    probe_timeout_s: float = 3.0


@dataclass
class GuardConfig:
    """The accuracy guard a sweep applies when it ends (b200lab/guard.py)."""

    reference: Optional[str] = None  # the precision whose perplexity the others are compared with (e.g. fp32); None: no guard
    max_ppl_delta: Optional[float] = None  # fail the sweep when a point's perplexity exceeds the reference's by more (0.01 = 1%)


@dataclass
class Config:
    # component groups: each option's class brings its schema (checked by validate)
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


def register_configs() -> None:
    """The job schema and every registered component's schema (b200lab/components.py)."""
    import sys

    from b200lab.components import register_schemas

    ConfigStore.instance().store(name="b200lab_schema", node=Config)
    for warning in register_schemas():
        print(f"b200lab: {warning}", file=sys.stderr)


COMPILE_MODES = {None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"}


class ConfigError(ValueError):
    """A configuration that composes but cannot run; the message names the keys."""


def available_ranks(device: str) -> int:
    from b200lab.measure.gpus import nvml_gpu_count

    return nvml_gpu_count() if device == "cuda" else (os.cpu_count() or 1)


def resolve_device(requested: str) -> str:
    """cuda when the machine has a usable NVIDIA GPU, else cpu. Never initialises CUDA."""
    from b200lab.measure.gpus import nvml_gpu_count

    if requested not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"run.device={requested!r}: choose auto, cuda or cpu")
    if requested == "cpu":
        return "cpu"
    import torch

    has_gpu = torch.version.cuda is not None and nvml_gpu_count() > 0
    if requested == "cuda" and not has_gpu:
        raise ConfigError("run.device=cuda: no CUDA GPU is visible (NVML sees none, or torch is a CPU build)")
    return "cuda" if has_gpu else "cpu"


FIXED = {"seq": SeqConfig, "compile": CompileConfig, "profile": ProfileConfig, "run": RunConfig, "tracking": TrackingConfig, "guard": GuardConfig}


def validate(cfg: Any, device: str) -> DictConfig:
    """The completed config (every component's schema defaults filled in), or ConfigError
    listing every problem, each naming its keys and the reason."""
    from b200lab.components import GROUPS, CheckContext, ComponentError, check_keys, complete, resolve_target

    problems: List[str] = []
    top = OmegaConf.to_container(cfg, resolve=True)
    for key in sorted(set(top) - {*GROUPS, *FIXED, "preset", "hydra"}):
        problems.append(f"{key}: not a config group or field (groups: {', '.join(sorted([*GROUPS, *FIXED]))})")
    for group, schema in FIXED.items():
        problems.extend(check_keys(group, schema, top.get(group)))
    classes, completed = {}, {}
    for group in GROUPS:
        try:
            classes[group] = resolve_target(group, top[group].get("_target_"))
            completed[group] = complete(group, top[group], classes[group])
        except ComponentError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    out = OmegaConf.create({**top, **{g: OmegaConf.to_container(c) for g, c in completed.items()}})
    ctx = CheckContext(cfg=out, device=device, training=bool(classes["workload"].training))
    for group in GROUPS:
        problems.extend(classes[group].validate(out[group], ctx))
    problems.extend(_check_job(out, classes))
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return out


def _check_job(cfg: Any, classes: dict) -> List[str]:
    """Checks across groups, and of the fixed groups."""
    problems: List[str] = []
    s, p = cfg.seq, cfg.parallelism
    for key in ("len", "batch"):
        if s[key] is None or s[key] < 1:
            problems.append(f"seq.{key}={s[key]}: must be a positive integer")
    guard = cfg.get("guard") or {}
    if guard.get("max_ppl_delta") is not None:
        if guard["max_ppl_delta"] < 0:
            problems.append(f"guard.max_ppl_delta={guard['max_ppl_delta']}: must be >= 0 (0.01 allows 1% more perplexity)")
        if not guard.get("reference"):
            problems.append("guard.max_ppl_delta needs guard.reference: the precision the others are compared with (e.g. fp32)")
    if cfg.compile.mode not in COMPILE_MODES:
        problems.append(f"compile.mode={cfg.compile.mode!r}: choose one of none, {', '.join(sorted(filter(None, COMPILE_MODES)))}")
    if cfg.run.launcher not in ("torchrun", "inline"):
        problems.append(f"run.launcher={cfg.run.launcher!r}: choose torchrun or inline")
    if cfg.run.launcher == "inline" and p.nproc > 1:
        problems.append(f"run.launcher=inline runs one process; parallelism.nproc={p.nproc} needs run.launcher=torchrun")
    if cfg.profile.name not in ("none", "torch", "nsys", "ncu"):
        problems.append(f"profile.name={cfg.profile.name!r}: choose none, torch, nsys or ncu")
    elif cfg.profile.name in ("nsys", "ncu"):
        from b200lab.profiling import ProfilerMissing, require

        try:
            require(cfg.profile.name)
        except ProfilerMissing as exc:
            problems.append(str(exc))
        if cfg.run.launcher == "inline":
            problems.append(f"profile={cfg.profile.name} wraps the torchrun job; it needs run.launcher=torchrun")
    if cfg.compile.mode is not None and cfg.workload.warmup_steps < 1:
        problems.append(f"compile.mode={cfg.compile.mode}: needs workload.warmup_steps >= 1 so compilation stays out of the timed steps")
    if not classes["workload"].uses_model and cfg.compile.mode is not None:
        problems.append(f"compile={cfg.compile.name}: workload={cfg.workload.name} builds no model to compile")
    return problems
