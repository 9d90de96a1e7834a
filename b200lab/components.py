"""Which classes a config may name by ``_target_``, and turning a config section into one.

Overrides and presets are often someone else's, so ``_target_`` is never imported blindly: a
target must be a component b200lab ships (``SHIPPED``) or one the user registered through a
Python entry point in the group ``b200lab.<group>`` (``[project.entry-points."b200lab.model"]
vit = "my_pkg.vit:TinyViT"`` in a plugin's pyproject). The allowlist is checked before any
import; entry points are read from installed metadata, which imports nothing.

Every component class carries ``Config`` (its schema dataclass, with ``_target_`` and ``name``)
and ``validate(cfg, ctx) -> list[str]``; :func:`complete` fills the schema's defaults and
refuses unknown keys and wrong types, naming ``group.key``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

GROUPS = ("model", "precision", "attention", "parallelism", "workload", "data")
ENTRY_POINT_PREFIX = "b200lab."

# group -> schema name -> class. A config option selects its class and schema through its
# defaults list (``- /schema/model/gpt@_here_``), which also sets ``_target_``.
SHIPPED: dict[str, dict[str, str]] = {
    "model": {"gpt": "b200lab.models.gpt.GPTFamily", "moe": "b200lab.models.moe.MoEFamily",
              "vision": "b200lab.models.vit.ViTFamily", "diffusion": "b200lab.models.dit.DiTFamily",
              "recommender": "b200lab.models.dlrm.DLRMFamily"},
    "precision": {
        "autocast": "b200lab.precision.autocast.AutocastPrecision",
        "te_fp8": "b200lab.precision.te_fp8.TEFP8Precision",
        "fp8_auto": "b200lab.precision.fp8_auto.FP8AutoPrecision",
        "fp8_weight_only": "b200lab.precision.weight_only.FP8WeightOnlyPrecision",
        "fp8_torchao": "b200lab.precision.torchao_fp8.TorchaoFP8Precision",
    },
    "attention": {"sdpa": "b200lab.attention.SdpaAttention", "math": "b200lab.attention.MathAttention",
                  "flex": "b200lab.attention.FlexAttention", "te": "b200lab.attention.TEAttention"},
    "parallelism": {"data_parallel": "b200lab.parallel.DataParallel", "mesh": "b200lab.parallel.MeshParallel"},
    "data": {"random": "b200lab.data.random.RandomData", "text": "b200lab.data.text.TextData"},
    "workload": {
        "forward": "b200lab.workloads.forward.Forward",
        "attention": "b200lab.workloads.attention_bench.AttentionBench",
        "train": "b200lab.workloads.train.Train",
        "eval": "b200lab.workloads.eval.Eval",
        "gemm": "b200lab.workloads.gemm.Gemm",
        "moe_layer": "b200lab.workloads.moe_layer.MoELayerBench",
        "hbm": "b200lab.workloads.hbm.HbmCopy",
        "allreduce": "b200lab.workloads.allreduce.AllReduce",
        "comms": "b200lab.workloads.comms.Comms",
        "validate": "b200lab.workloads.validate.Validate",
        "generate": "b200lab.workloads.generate.Generate",
        "serve": "b200lab.workloads.serve.Serve",
    },
}


class ComponentError(ValueError):
    """A ``_target_`` that may not or cannot be used; the message names the key."""


@dataclass
class ComponentConfig:
    """Fields every component section has; a component's own ``Config`` extends it."""

    _target_: str = MISSING
    name: str = MISSING


@dataclass
class CheckContext:
    """What a component's ``validate`` may look at besides its own section."""

    cfg: Any  # the whole job config
    device: str  # cuda | cpu, resolved
    training: bool  # the workload runs an optimizer


def plugin_entries(group: str) -> dict[str, tuple[str, str]]:
    """schema name -> (target, distribution) of the entry points registered for a group."""
    found = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_PREFIX + group):
        module, _, attr = ep.value.partition(":")
        target = f"{module.strip()}.{attr.strip()}" if attr else module.strip()
        found[ep.name] = (target, ep.dist.name if ep.dist else "an entry point")
    return found


def registered(group: str) -> dict[str, str]:
    """target -> where it comes from ('b200lab' or the plugin distribution's name)."""
    found = {t: "b200lab" for t in SHIPPED[group].values()}
    for target, dist in plugin_entries(group).values():
        found.setdefault(target, dist)
    return found


def register_schemas() -> list[str]:
    """Store every registered component's schema in Hydra's ConfigStore as
    ``schema/<group>/<name>`` with its ``_target_`` set, so options compose with their class's
    fields and defaults. Returns warnings for plugins that could not be imported."""
    from hydra.core.config_store import ConfigStore

    store, warnings = ConfigStore.instance(), []
    for group in GROUPS:
        entries = {name: (target, "b200lab") for name, target in SHIPPED[group].items()}
        entries.update({n: e for n, e in plugin_entries(group).items() if n not in entries})
        for name, (target, dist) in entries.items():
            try:
                cls = resolve_target(group, target)
                node = OmegaConf.structured(_schema(cls))
            except ComponentError as exc:
                warnings.append(f"plugin {name!r} from {dist} is not available: {exc}")
                continue
            node._target_ = target
            store.store(group=f"schema/{group}", name=name, node=node, provider=dist)
    return warnings


def base_class(group: str) -> type:
    if group == "model":
        from b200lab.models.base import ModelFamily as base
    elif group == "precision":
        from b200lab.precision.base import PrecisionRecipe as base
    elif group == "attention":
        from b200lab.attention import AttentionBackend as base
    elif group == "parallelism":
        from b200lab.parallel import ParallelStrategy as base
    elif group == "data":
        from b200lab.data.base import DataSource as base
    else:
        from b200lab.workloads.base import Workload as base
    return base


def resolve_target(group: str, target: Optional[str]) -> type:
    """The class ``group._target_`` names, after the allowlist check; ComponentError otherwise."""
    key = f"{group}._target_"
    if not target or not isinstance(target, str):
        raise ComponentError(f"{key} is missing: every {group} option names its class")
    allowed = registered(group)
    if target not in allowed:
        shipped = ", ".join(SHIPPED[group].values())
        raise ComponentError(
            f"{key}={target!r} is not a registered {group} component, so it is not imported. "
            f"Shipped: {shipped}. A plugin registers its class through the entry-point group "
            f"'{ENTRY_POINT_PREFIX}{group}' (docs/architecture.md)"
        )
    module_name, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # the registered module is broken or gone: say so, run nothing
        raise ComponentError(f"{key}={target!r} (registered by {allowed[target]}) cannot be imported: {type(exc).__name__}: {exc}") from None
    base = base_class(group)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ComponentError(f"{key}={target!r} is not a {base.__module__}.{base.__qualname__}")
    return cls


def _schema(cls: type) -> type:
    schema = getattr(cls, "Config", None)
    if not (dataclasses.is_dataclass(schema) and issubclass(schema, ComponentConfig)):
        raise ComponentError(f"{cls.__module__}.{cls.__qualname__}.Config must be a dataclass extending b200lab.components.ComponentConfig")
    return schema


def check_keys(prefix: str, schema: type, section: Any) -> list[str]:
    """Keys in ``section`` that the schema dataclass does not have, recursively, as messages."""
    problems = []
    if not isinstance(section, dict):
        return problems
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in section.items():
        if key not in fields:
            hint = getattr(schema, "HINTS", {}).get(key)
            problems.append(f"{prefix}.{key}: not a field of {schema.__qualname__} (fields: {', '.join(sorted(fields))})"
                            + (f"; {hint}" if hint else ""))
            continue
        ftype = fields[key].type
        sub = ftype if dataclasses.is_dataclass(ftype) else None
        if sub is None and isinstance(ftype, str):  # postponed annotations: look the name up
            sub = getattr(importlib.import_module(schema.__module__), ftype, None)
            sub = sub if dataclasses.is_dataclass(sub) else None
        if sub is not None:
            problems.extend(check_keys(f"{prefix}.{key}", sub, value))
    return problems


def complete(group: str, section: Any, cls: Optional[type] = None) -> DictConfig:
    """The section merged over its class's schema: defaults filled, types checked."""
    cls = cls or resolve_target(group, section.get("_target_"))
    schema = _schema(cls)
    raw = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section)
    problems = check_keys(group, schema, raw)
    if problems:
        raise ComponentError("; ".join(problems))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), raw)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ComponentError(f"{group}.{key}: {str(exc).splitlines()[0]}") from None
    missing = sorted(k for k in OmegaConf.missing_keys(merged))
    if missing:
        raise ComponentError(", ".join(f"{group}.{k}" for k in missing) + f": required by {schema.__qualname__} and not set")
    return merged


def instantiate(group: str, section: Any, *args, **kwargs):
    """Build the component a (completed) section names; the allowlist is checked again here, in
    the worker, so a hand-edited config.yaml cannot bypass it."""
    cls = resolve_target(group, section.get("_target_"))
    return cls(complete(group, section, cls), *args, **kwargs)
