"""What Hydra itself would import, call or execute, refused before Hydra's run starts.

The lab's own ``_target_`` allowlist (b200lab/core/registry.py) covers the component groups.
Hydra's config has its own ways to run code: callbacks, logging handlers and filters
(``()`` factories, ``class`` names), ``hydra.job.env_set`` (a PYTHONPATH or LD_PRELOAD for the
job), launcher and sweeper targets, a launcher's ``setup`` shell lines, search paths that import
(``pkg://``, ``structured://``), another primary config, and ``--experimental-rerun`` (which
unpickles a file). Overrides and presets are often someone else's, so the command line is checked
first (:func:`check_command_line`: what would act while composing), then the composed ``hydra``
node of every point (:func:`check_composed`), which sees whatever any config file on any search
path put there. Allowed: the lab's callback, Hydra's default logging (standard handler classes,
no factories), and the launcher and sweeper classes of installed Hydra plugins (Hydra's own
rule: ``hydra_plugins.*``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

LAB_CALLBACKS = {"b200lab": {"_target_": "b200lab.runner.callbacks.LabCallbacks"}}
CALLABLE_KEYS = ("_target_", "()")
LOGGING_CLASSES = ("logging.StreamHandler", "logging.FileHandler", "logging.NullHandler", "logging.Formatter")
LOGGING_EXT = ("ext://sys.stdout", "ext://sys.stderr")  # logging resolves ext:// by importing the module it names
PLUGIN_MODULES = ("hydra._internal.core_plugins.", "hydra_plugins.")
FORBIDDEN_KEYS = (
    "hydra.callbacks",
    "hydra.job.env_set",
    "hydra.job_logging",
    "hydra.hydra_logging",
    "hydra.launcher._target_",
    "hydra.sweeper._target_",
    "hydra.launcher.setup",
)
FORBIDDEN_GROUPS = ("hydra/callbacks", "hydra/job_logging", "hydra/hydra_logging")
FORBIDDEN_FLAGS = {
    "experimental_rerun": (
        "--experimental-rerun unpickles a file (which can run any code); rerun with the overrides in its "
        ".hydra/overrides.yaml instead"
    ),
    "config_path": (
        "--config-path selects another primary config, which replaces the lab's schema and callbacks; "
        "add options with hydra.searchpath=[file:///DIR] instead"
    ),
    "config_name": (
        "--config-name selects another primary config, which replaces the lab's schema and callbacks; "
        "add options with hydra.searchpath=[file:///DIR] instead"
    ),
    "config_dir": (
        "--config-dir is not accepted (configs from it are composed before the lab can check them); "
        "use hydra.searchpath=[file:///DIR], which adds the same folder"
    ),
}


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def search_path_problem(entry: str) -> str | None:
    """Why a search-path entry is refused: anything but a folder (``file://DIR`` or a plain path)."""
    entry = str(entry)
    scheme = entry.split("://", 1)[0] if "://" in entry else "file"
    if scheme == "file":
        return None
    why = {"pkg": "imports a Python package", "structured": "imports a Python module"}.get(scheme, "is not a folder")
    return f"hydra.searchpath entry {entry!r}: {scheme}:// {why}; use file://DIR"


def check_overrides(overrides: Iterable[str], where: str = "override") -> list[str]:
    """Problems with Hydra overrides (the command line, or a preset's sweep params)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # Hydra reports a malformed override itself, as a configuration error
        return []
    problems = []
    for o in parsed:
        key, said = o.key_or_group, f"{where} {o.input_line!r}"
        hit = key if key in FORBIDDEN_GROUPS else next((f for f in FORBIDDEN_KEYS if _under(key, f)), None)
        if hit:
            problems.append(f"{said}: {hit} can run arbitrary code and is not accepted")
        elif key.startswith("hydra.") and any(part in CALLABLE_KEYS for part in key.split(".")):
            problems.append(f"{said}: a _target_ or () under hydra.* imports code; not accepted")
        if key == "hydra.searchpath":
            value = o.value()
            for entry in value if isinstance(value, list) else [value]:
                why = search_path_problem(entry)
                if why:
                    problems.append(f"{said}: {why}")
    return problems


def check_command_line(args) -> list[str]:
    """Problems with Hydra's parsed command line (``hydra._internal.utils.get_args_parser``)."""
    problems = [why for flag, why in FORBIDDEN_FLAGS.items() if getattr(args, flag, None)]
    return problems + check_overrides(args.overrides or [])


def _callables(tree: Any, where: str) -> list[str]:
    """Paths in a tree that name something to import or call."""
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            path = f"{where}.{key}"
            if key in CALLABLE_KEYS:
                found.append(path)
            found.extend(_callables(value, path))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found.extend(_callables(value, f"{where}[{i}]"))
    return found


def _logging_problems(tree: Any, where: str) -> list[str]:
    problems = [f"{p}: a logging factory imports code" for p in _callables(tree, where)]

    def classes(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "class" and value not in LOGGING_CLASSES:
                    problems.append(f"{path}.class={value!r}: only {', '.join(LOGGING_CLASSES)}")
                elif isinstance(value, str) and value.startswith("ext://") and value not in LOGGING_EXT:
                    problems.append(
                        f"{path}.{key}={value!r}: ext:// imports the module it names; only {', '.join(LOGGING_EXT)}"
                    )
                classes(value, f"{path}.{key}")

    classes(tree, where)
    return problems


def check_composed(hydra: Any) -> list[str]:
    """Problems with a composed ``hydra`` node (a plain dict, interpolations unresolved)."""
    if not isinstance(hydra, dict):
        return []
    problems = []
    if (hydra.get("callbacks") or {}) != LAB_CALLBACKS:
        extra = sorted(set(hydra.get("callbacks") or {}) ^ set(LAB_CALLBACKS)) or ["b200lab"]
        problems.append(
            f"hydra.callbacks ({', '.join(extra)}): callbacks run arbitrary code; only the lab's own is accepted"
        )
    if (hydra.get("job") or {}).get("env_set"):
        problems.append(
            f"hydra.job.env_set ({', '.join(sorted(hydra['job']['env_set']))}): the job's environment can load "
            "code (PYTHONPATH, LD_PRELOAD); not accepted"
        )
    for key in ("job_logging", "hydra_logging"):
        problems += _logging_problems(hydra.get(key), f"hydra.{key}")
    for key in ("launcher", "sweeper"):
        node = hydra.get(key) or {}
        target = str(node.get("_target_", ""))
        if target and not target.startswith(PLUGIN_MODULES):
            problems.append(
                f"hydra.{key}._target_={target!r}: only the classes of installed Hydra plugins (hydra_plugins.*)"
            )
        problems += [
            f"{p}: imports code" for p in _callables({k: v for k, v in node.items() if k != "_target_"}, f"hydra.{key}")
        ]
        params = node.get("params") if key == "sweeper" else None
        if isinstance(params, dict):
            problems += check_overrides([f"{k}={v}" for k, v in params.items()], "hydra.sweeper.params")
    if (hydra.get("launcher") or {}).get("setup"):
        problems.append("hydra.launcher.setup: shell lines the launcher runs before the job; not accepted")
    for entry in hydra.get("searchpath") or []:
        why = search_path_problem(entry)
        if why:
            problems.append(why)
    others = {
        k: v for k, v in hydra.items() if k not in ("callbacks", "job_logging", "hydra_logging", "launcher", "sweeper")
    }
    problems += [f"{p}: imports code" for p in _callables(others, "hydra")]
    return sorted(set(problems))
