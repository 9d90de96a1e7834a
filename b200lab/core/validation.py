"""The check of a composed job config, before any run is created.

:func:`validate` completes every component section from its option's config class and collects
every problem: unknown keys (also ones added with ``+``), the allowlist of targets, numbers that
are not finite, each option's own ``validate`` (which asks the other groups' config classes what
their options can do, never their names), and the combinations no single group can judge. Every
message names the keys it is about. Nothing here imports torch or an implementation.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from b200lab.core.component import CheckContext, ComponentError
from b200lab.core.machine import ConfigError, ProfilerMissing, require_profiler
from b200lab.core.registry import GROUPS, check_keys, complete, config_class
from b200lab.core.schema import COMPILE_MODES, FIXED, PROFILERS

__all__ = ["ConfigError", "validate"]


def validate(cfg: Any, device: str) -> DictConfig:
    """The completed config (every component's defaults filled in), or ConfigError listing every
    problem, each naming its keys and the reason."""
    problems: list[str] = []
    top = OmegaConf.to_container(cfg, resolve=True)
    for key in sorted(set(top) - {*GROUPS, *FIXED, "preset", "hydra"}):
        problems.append(f"{key}: not a config group or field (groups: {', '.join(sorted([*GROUPS, *FIXED]))})")
    for group, schema in FIXED.items():
        problems.extend(check_keys(group, schema, top.get(group)))
    specs, completed = {}, {}
    for group in GROUPS:
        try:
            specs[group] = config_class(group, (top.get(group) or {}).get("_target_"))
            completed[group] = complete(group, top[group], specs[group])
        except ComponentError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    out = OmegaConf.create({**top, **{g: OmegaConf.to_container(c) for g, c in completed.items()}})
    # fields the job sets on its precision (whether the model compiles, a recorded FP8 loss): in the
    # record as the build uses them
    out.precision = OmegaConf.merge(out.precision, specs["precision"].job_overrides(out.precision, out))
    problems.extend(non_finite(out, specs))
    ctx = CheckContext(cfg=out, device=device, training=bool(specs["workload"].training), specs=specs)
    for group in GROUPS:
        problems.extend(specs[group].validate(out[group], ctx))
    problems.extend(_check_job(out, specs))
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return out


def non_finite(cfg: DictConfig, specs: dict) -> list[str]:
    """NaN anywhere, and infinities except in the fields a config class allows them
    (``ALLOWS_INF``, e.g. a serve rate of inf: every request at t = 0)."""
    problems = []

    def walk(node: Any, path: str, allowed: tuple) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key), allowed)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]", allowed)
        elif isinstance(node, float) and not math.isfinite(node):
            if math.isnan(node):
                problems.append(f"{path}=nan: not a number; give a finite value")
            elif path.split(".", 1)[-1] not in allowed:
                problems.append(f"{path}={node}: must be finite")

    tree = OmegaConf.to_container(cfg, resolve=True)
    for key, value in tree.items():
        if key != "hydra":
            walk(value, key, tuple(getattr(specs.get(key), "ALLOWS_INF", ())))
    return problems


def _check_job(cfg: Any, specs: dict) -> list[str]:
    """Checks across groups, and of the fixed groups."""
    problems: list[str] = []
    s, p, run = cfg.seq, cfg.parallelism, cfg.run
    for key in ("len", "batch"):
        if s[key] is None or s[key] < 1:
            problems.append(f"seq.{key}={s[key]}: must be a positive integer")
    if not run.timeout_s > 0:
        problems.append(f"run.timeout_s={run.timeout_s}: must be a positive number of seconds")
    guard = cfg.get("guard") or {}
    if guard.get("max_ppl_delta") is not None:
        if guard["max_ppl_delta"] < 0:
            problems.append(
                f"guard.max_ppl_delta={guard['max_ppl_delta']}: must be >= 0 (0.01 allows 1% more perplexity)"
            )
        if not guard.get("reference"):
            problems.append(
                "guard.max_ppl_delta needs guard.reference: the precision the others are compared with (e.g. fp32)"
            )
    if cfg.compile.mode not in COMPILE_MODES:
        problems.append(
            f"compile.mode={cfg.compile.mode!r}: choose one of none, {', '.join(sorted(filter(None, COMPILE_MODES)))}"
        )
    if run.launcher not in ("torchrun", "inline"):
        problems.append(f"run.launcher={run.launcher!r}: choose torchrun or inline")
    if run.launcher == "inline" and p.nproc > 1:
        problems.append(
            f"run.launcher=inline runs one process; parallelism.nproc={p.nproc} needs run.launcher=torchrun"
        )
    if cfg.profile.name not in PROFILERS:
        problems.append(f"profile.name={cfg.profile.name!r}: choose none, torch, nsys or ncu")
    elif cfg.profile.name in ("nsys", "ncu"):
        try:
            require_profiler(cfg.profile.name)
        except ProfilerMissing as exc:
            problems.append(str(exc))
        if run.launcher == "inline":
            problems.append(f"profile={cfg.profile.name} wraps the torchrun job; it needs run.launcher=torchrun")
    if cfg.compile.mode is not None and cfg.workload.warmup_steps < 1:
        problems.append(
            f"compile.mode={cfg.compile.mode}: needs workload.warmup_steps >= 1 so compilation stays out of the timed "
            "steps"
        )
    if not specs["workload"].uses_model and cfg.compile.mode is not None:
        problems.append(f"compile={cfg.compile.name}: workload={cfg.workload.name} builds no model to compile")
    return problems
