"""Structured-config schema: one dataclass per config group, registered in Hydra's ConfigStore.

Hydra checks types at composition (``seq.batch=abc`` fails there); :func:`validate` checks the
values and combinations a type cannot express, before any run is created. Every message names
the keys it is about.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    _target_: str = "b200lab.models.gpt.GPT"
    name: str = MISSING
    family: str = "gpt"
    n_layers: int = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    d_ff: int = MISSING
    vocab_size: int = 50304
    pos: str = "rope"  # rope | learned
    max_seq_len: int = 131072  # only binding for learned positions
    tie_embeddings: bool = False
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    rope_pairs: str = "half"  # half: dims (i, i + D/2) rotate together, as GPT-NeoX/Llama; interleaved: (2i, 2i+1)
    n_experts: int = 0  # > 0: mixture-of-experts MLP (the MoE model family)
    top_k: int = 0
    d_ff_expert: Optional[int] = None


@dataclass
class PrecisionConfig:
    _target_: str = "b200lab.precision.autocast.AutocastPrecision"
    name: str = MISSING
    compute_dtype: str = "auto"  # auto | float32 | tf32 | bfloat16 | float16
    param_dtype: str = "auto"  # auto: the compute dtype; float32 with 16-bit compute = autocast
    master_dtype: Optional[str] = "auto"  # auto: float32 masters when training 16-bit weights; none: no masters
    grad_accum_dtype: str = "auto"  # auto: the master dtype, else the parameter dtype
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class AttentionConfig:
    _target_: str = "b200lab.attention.SdpaAttention"
    name: str = MISSING
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ParallelismConfig:
    name: str = MISSING
    strategy: str = "dp"  # dp: each rank its own batch (DDP when training)
    nproc: int = 1


@dataclass
class SeqConfig:
    name: str = MISSING
    len: int = MISSING
    batch: int = MISSING


@dataclass
class WorkloadConfig:
    _target_: str = MISSING
    name: str = MISSING
    warmup_steps: int = 5
    steps: int = 20
    min_time_s: float = 0.0  # time at least this long; the later of steps and min_time_s ends timing
    trials: int = 1  # timed regions back to back (one warm-up); the spread across them is reported
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class CompileConfig:
    name: str = MISSING
    mode: Optional[str] = None  # None: eager; else a torch.compile mode
    fullgraph: bool = False


@dataclass
class ProfileConfig:
    name: str = "none"  # none | torch | nsys | ncu
    memory: bool = False  # CUDA memory snapshot of the job, for pytorch.org/memory_viz
    options: Dict[str, Any] = field(default_factory=dict)


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
class Config:
    model: ModelConfig = MISSING
    precision: PrecisionConfig = MISSING
    attention: AttentionConfig = MISSING
    parallelism: ParallelismConfig = MISSING
    seq: SeqConfig = MISSING
    workload: WorkloadConfig = MISSING
    compile: CompileConfig = MISSING
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    preset: str = "none"  # set by experiments/*.yaml


def register_configs() -> None:
    ConfigStore.instance().store(name="b200lab_schema", node=Config)


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


def _is_training(workload: Any) -> bool:
    from hydra.utils import get_object

    try:
        return bool(getattr(get_object(workload._target_), "training", False))
    except Exception:  # an unknown workload is reported by whoever instantiates it
        return False


def validate(cfg: Any, device: str) -> None:
    """Raise ConfigError listing every problem; each names its keys and the reason."""
    problems: List[str] = []
    m, s, w, p = cfg.model, cfg.seq, cfg.workload, cfg.parallelism

    def positive(key: str, value: Any) -> None:
        if value is None or value < 1:
            problems.append(f"{key}={value}: must be a positive integer")

    for key in ("n_layers", "d_model", "n_heads", "d_ff", "vocab_size", "max_seq_len"):
        positive(f"model.{key}", getattr(m, key))
    positive("seq.len", s.len)
    positive("seq.batch", s.batch)
    positive("workload.steps", w.steps)
    positive("workload.trials", w.trials)
    positive("parallelism.nproc", p.nproc)
    if w.warmup_steps < 0:
        problems.append(f"workload.warmup_steps={w.warmup_steps}: must be >= 0")
    if w.min_time_s < 0:
        problems.append(f"workload.min_time_s={w.min_time_s}: must be >= 0")
    if m.d_model >= 1 and m.n_heads >= 1:
        if m.d_model % m.n_heads:
            problems.append(
                f"model.n_heads={m.n_heads} does not divide model.d_model={m.d_model} "
                f"(head dim would be {m.d_model / m.n_heads:g})"
            )
        elif m.pos == "rope" and (m.d_model // m.n_heads) % 2:
            problems.append(f"model.pos=rope needs an even head dim; d_model/n_heads = {m.d_model // m.n_heads}")
    if m.rope_pairs not in ("interleaved", "half"):
        problems.append(f"model.rope_pairs={m.rope_pairs!r}: choose interleaved or half")
    if m.pos not in ("rope", "learned"):
        problems.append(f"model.pos={m.pos!r}: choose rope or learned")
    if m.pos == "learned" and s.len > m.max_seq_len:
        problems.append(
            f"seq.len={s.len} exceeds model.max_seq_len={m.max_seq_len} (model.pos=learned has no "
            "position embeddings past it)"
        )
    if cfg.compile.mode not in COMPILE_MODES:
        problems.append(f"compile.mode={cfg.compile.mode!r}: choose one of none, {', '.join(sorted(filter(None, COMPILE_MODES)))}")
    try:
        from b200lab.precision.recipe import resolve

        resolve(cfg.precision, device, _is_training(w))
    except ValueError as exc:
        problems.append(str(exc))
    if p.strategy != "dp":
        problems.append(f"parallelism.strategy={p.strategy!r}: only dp exists so far (tp/fsdp are planned)")
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
    if cfg.compile.mode is not None and w.warmup_steps < 1:
        problems.append(f"compile.mode={cfg.compile.mode}: needs workload.warmup_steps >= 1 so compilation stays out of the timed steps")
    if p.nproc >= 1:
        limit = available_ranks(device)
        if p.nproc > limit:
            what = "GPUs visible" if device == "cuda" else "CPU cores"
            problems.append(f"parallelism.nproc={p.nproc} exceeds the {limit} {what} on this machine")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
