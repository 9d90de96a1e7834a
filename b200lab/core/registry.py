"""Which options a config may name, their config classes, and turning a section into a component.

Overrides and presets are often someone else's, so ``_target_`` is never imported blindly: a
target must be an option b200lab ships (``SHIPPED``) or one registered through a Python entry
point in the group ``b200lab.<group>`` (``[project.entry-points."b200lab.model"] vit =
"my_pkg.vit:TinyViT"`` in a plugin's pyproject). Entry points are read once per process, from
installed metadata (nothing is imported to read them).

A shipped option is found through its config class alone (torch-free, see
b200lab/core/component.py), so composing and validating imports no implementation. A plugin's
entry point names its implementation class (whose ``Config`` is its config class) or its config
class (which names the implementation in ``target``); registering a plugin imports what the
entry point names. :func:`implementation` imports the class that runs, in the rank processes.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from b200lab.core.component import ComponentConfig, ComponentError

GROUPS = ("model", "precision", "attention", "parallelism", "workload", "data")
ENTRY_POINT_PREFIX = "b200lab."

# group -> schema name -> the option's config class. A YAML option selects its class and schema
# through its defaults list (``- /schema/model/gpt@_here_``), which also sets ``_target_``.
SHIPPED: dict[str, dict[str, str]] = {
    "model": {
        "gpt": "b200lab.models.config.gpt.GPTConfig",
        "moe": "b200lab.models.config.moe.MoEConfig",
        "vision": "b200lab.models.config.vit.ViTConfig",
        "diffusion": "b200lab.models.config.dit.DiTConfig",
        "recommender": "b200lab.models.config.dlrm.DLRMConfig",
    },
    "precision": {
        "autocast": "b200lab.precision.config.autocast.AutocastConfig",
        "te_fp8": "b200lab.precision.config.te_fp8.TEFP8Config",
        "fp8_auto": "b200lab.precision.config.fp8_auto.FP8AutoConfig",
        "fp8_weight_only": "b200lab.precision.config.weight_only.FP8WeightOnlyConfig",
        "fp8_torchao": "b200lab.precision.config.torchao_fp8.TorchaoFP8Config",
    },
    "attention": {
        "sdpa": "b200lab.attention.config.sdpa.SdpaConfig",
        "math": "b200lab.attention.config.math.MathConfig",
        "flex": "b200lab.attention.config.flex.FlexConfig",
        "te": "b200lab.attention.config.te.TEAttentionConfig",
    },
    "parallelism": {
        "data_parallel": "b200lab.parallel.config.data_parallel.DataParallelConfig",
        "mesh": "b200lab.parallel.config.mesh.MeshConfig",
    },
    "data": {
        "random": "b200lab.data.config.random.RandomConfig",
        "text": "b200lab.data.config.text.TextConfig",
    },
    "workload": {
        "forward": "b200lab.workloads.config.forward.ForwardConfig",
        "attention": "b200lab.workloads.config.attention.AttentionBenchConfig",
        "train": "b200lab.workloads.config.train.TrainConfig",
        "eval": "b200lab.workloads.config.eval.EvalConfig",
        "gemm": "b200lab.workloads.config.gemm.GemmConfig",
        "moe_layer": "b200lab.workloads.config.moe_layer.MoELayerConfig",
        "hbm": "b200lab.workloads.config.hbm.HbmConfig",
        "allreduce": "b200lab.workloads.config.allreduce.AllReduceConfig",
        "comms": "b200lab.workloads.config.comms.CommsConfig",
        "validate": "b200lab.workloads.config.validate.ValidateConfig",
        "generate": "b200lab.workloads.config.generate.GenerateConfig",
        "serve": "b200lab.workloads.config.serve.ServeConfig",
    },
}

# the class every implementation of a group extends (imported in the rank processes only)
BASE_CLASSES = {
    "model": "b200lab.models.base.ModelFamily",
    "precision": "b200lab.precision.base.PrecisionRecipe",
    "attention": "b200lab.attention.base.AttentionBackend",
    "parallelism": "b200lab.parallel.base.ParallelStrategy",
    "data": "b200lab.data.base.DataSource",
    "workload": "b200lab.workloads.base.Workload",
}


@dataclass(frozen=True)
class Option:
    """One registered option of a group: its schema name, implementation path and config class."""

    group: str
    name: str
    target: str
    config: type
    source: str  # 'b200lab' or the plugin distribution's name


def load(path: str) -> Any:
    """The object a dotted path names (``package.module.Name``)."""
    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _check_config(cls: Any, where: str) -> type:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and issubclass(cls, ComponentConfig)):
        raise ComponentError(f"{where} must be a dataclass extending b200lab.core.component.ComponentConfig")
    return cls


@functools.cache
def _entry_points(group: str) -> tuple:
    return tuple(importlib.metadata.entry_points(group=ENTRY_POINT_PREFIX + group))


def plugin_entries(group: str) -> dict[str, tuple[str, str]]:
    """schema name -> (the path the entry point names, distribution) for a group's plugins."""
    found = {}
    for ep in _entry_points(group):
        module, _, attr = ep.value.partition(":")
        found[ep.name] = (
            f"{module.strip()}.{attr.strip()}" if attr else module.strip(),
            ep.dist.name if ep.dist else "an entry point",
        )
    return found


def _plugin_option(group: str, name: str, path: str, dist: str) -> Option:
    try:
        obj = load(path)
    except Exception as exc:  # a broken or missing plugin module: named, never run
        raise ComponentError(f"{path} cannot be imported: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, type) and issubclass(obj, ComponentConfig):
        config = _check_config(obj, path)
        if "target" not in vars(config) or not config.target:
            raise ComponentError(f"{path} must name its implementation in the class variable 'target'")
        return Option(group, name, config.target, config, dist)
    return Option(group, name, path, _check_config(getattr(obj, "Config", None), f"{path}.Config"), dist)


@functools.cache
def _options(group: str) -> tuple[dict, tuple]:
    options: dict[str, Option] = {}
    for name, path in SHIPPED[group].items():
        config = _check_config(load(path), path)
        options[name] = Option(group, name, config.target, config, "b200lab")
    warnings = []
    for name, (path, dist) in plugin_entries(group).items():
        if name in options:
            continue
        try:
            options[name] = _plugin_option(group, name, path, dist)
        except ComponentError as exc:
            warnings.append(f"plugin {name!r} from {dist} is not available: {exc}")
    return options, tuple(warnings)


def options(group: str) -> dict[str, Option]:
    """Every option of ``group`` (shipped first, then plugins), by schema name."""
    return _options(group)[0]


def plugin_warnings() -> list[str]:
    return [w for group in GROUPS for w in _options(group)[1]]


def registered(group: str) -> dict[str, str]:
    """target -> where it comes from ('b200lab' or the plugin distribution's name)."""
    found: dict[str, str] = {}
    for option in options(group).values():
        found.setdefault(option.target, option.source)
    for path, dist in plugin_entries(
        group
    ).values():  # a plugin that failed to load is still named (and refused with why)
        found.setdefault(path, dist)
    return found


def config_class(group: str, target: str | None) -> type:
    """The config class of the option whose implementation ``group._target_`` names, after the
    allowlist check; ComponentError otherwise. Imports no implementation of a shipped option."""
    key = f"{group}._target_"
    if not target or not isinstance(target, str):
        raise ComponentError(f"{key} is missing: every {group} option names its class")
    for option in options(group).values():
        if option.target == target:
            return option.config
    if target in registered(group):  # an entry point that could not be loaded
        _plugin_option(group, "", target, registered(group)[target])
    shipped = ", ".join(o.target for o in options(group).values() if o.source == "b200lab")
    raise ComponentError(
        f"{key}={target!r} is not a registered {group} component, so it is not imported. Shipped: {shipped}. A plugin "
        f"registers its class through the entry-point group '{ENTRY_POINT_PREFIX}{group}' (docs/architecture.md)"
    )


def implementation(group: str, target: str | None) -> type:
    """The class ``group._target_`` names, imported after the allowlist check (rank side)."""
    config_class(group, target)
    key = f"{group}._target_"
    try:
        cls = load(target)
    except Exception as exc:  # the registered module is broken or gone: say so, run nothing
        raise ComponentError(
            f"{key}={target!r} (registered by {registered(group).get(target)}) cannot be imported: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    base = load(BASE_CLASSES[group])
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ComponentError(f"{key}={target!r} is not a {base.__module__}.{base.__qualname__}")
    return cls


_STORED: set = set()


@functools.cache
def _structured(config: type) -> DictConfig:
    """The config class as an OmegaConf node, built once (merges copy it, never change it)."""
    return OmegaConf.structured(config)


def register_schemas() -> list[str]:
    """Store every option's config class in Hydra's ConfigStore as ``schema/<group>/<name>`` with
    its ``_target_`` set, so options compose with their class's fields and defaults. The options
    are found once per process (entry points included) and each is stored once. Returns warnings
    for plugins that could not be loaded."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group in GROUPS:
        for name, option in options(group).items():
            if (group, name, option.target) in _STORED:
                continue
            node = _structured(option.config).copy()
            node._target_ = option.target
            store.store(group=f"schema/{group}", name=name, node=node, provider=option.source)
            _STORED.add((group, name, option.target))
    return plugin_warnings()


def check_keys(prefix: str, schema: type, section: Any) -> list[str]:
    """Keys in ``section`` that the schema dataclass does not have, recursively, as messages."""
    problems = []
    if not isinstance(section, dict):
        return problems
    fields = {f.name: f for f in dataclasses.fields(schema)}
    types = typing.get_type_hints(schema)  # postponed annotations resolved in each defining class's module
    for key, value in section.items():
        if key not in fields:
            hint = getattr(schema, "HINTS", {}).get(key)
            problems.append(
                f"{prefix}.{key}: not a field of {schema.__qualname__} (fields: {', '.join(sorted(fields))})"
                + (f"; {hint}" if hint else "")
            )
            continue
        sub = types.get(key)
        if dataclasses.is_dataclass(sub):
            problems.extend(check_keys(f"{prefix}.{key}", sub, value))
    return problems


def complete(group: str, section: Any, config: type | None = None) -> DictConfig:
    """The section merged over its config class: defaults filled, unknown keys and types refused."""
    config = config or config_class(group, section.get("_target_"))
    raw = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section)
    problems = check_keys(group, config, raw)
    if problems:
        raise ComponentError("; ".join(problems))
    try:
        merged = OmegaConf.merge(_structured(config), raw)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ComponentError(f"{group}.{key}: {str(exc).splitlines()[0]}") from None
    missing = sorted(k for k in OmegaConf.missing_keys(merged))
    if missing:
        raise ComponentError(
            ", ".join(f"{group}.{k}" for k in missing) + f": required by {config.__qualname__} and not set"
        )
    return merged


def instantiate(group: str, section: Any, *args, **kwargs):
    """Build the component a section names; the allowlist is checked again here, in the rank,
    so a hand-edited config.yaml cannot bypass it."""
    target = section.get("_target_")
    cls = implementation(group, target)
    return cls(complete(group, section, config_class(group, target)), *args, **kwargs)
