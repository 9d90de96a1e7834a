"""Hydra's own config can import and call code before b200lab's ``_target_`` allowlist is asked:
callbacks, logging handlers (``()`` factories), ``hydra.job.env_set`` (e.g. a PYTHONPATH for
the workers), launcher and sweeper targets, and ``pkg://`` search paths (an import). Overrides
and presets are often someone else's, so before Hydra starts, the command line and every YAML
file Hydra could read from a search path are checked, and any of these is refused (exit 2).

b200lab's own ``conf/config.yaml`` sets the one callback the lab needs; a launcher plugin is
chosen with ``hydra/launcher=NAME``, which names a configuration its installed package ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

FORBIDDEN = ("hydra.callbacks", "hydra.job.env_set", "hydra.job_logging", "hydra.hydra_logging",
             "hydra.launcher._target_", "hydra.sweeper._target_")
FORBIDDEN_GROUPS = ("hydra/callbacks", "hydra/job_logging", "hydra/hydra_logging")
CALLABLE_KEYS = ("_target_", "()")


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _calls(tree: Any, where: str) -> list[str]:
    """Paths in a YAML tree that name something to import or call."""
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            path = f"{where}.{key}" if where else str(key)
            if key in CALLABLE_KEYS:
                found.append(path)
            found.extend(_calls(value, path))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found.extend(_calls(value, f"{where}[{i}]"))
    return found


def check_overrides(overrides: Iterable[str]) -> tuple[list[str], list[Path]]:
    """(problems, file:// search-path directories named on the command line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    problems, dirs = [], []
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # Hydra reports a malformed override itself, as a configuration error
        return [], []
    for o in parsed:
        key = o.key_or_group
        where = f"override {o.input_line!r}"
        hit = key if key in FORBIDDEN_GROUPS else next((f for f in FORBIDDEN if _under(key, f)), None)
        if hit:
            problems.append(f"{where}: {hit} can run arbitrary code and is not accepted from overrides")
        elif key.startswith("hydra.") and any(part in CALLABLE_KEYS for part in key.split(".")):
            problems.append(f"{where}: a _target_ or () under hydra.* imports code; not accepted")
        if key == "hydra.searchpath":
            value = o.value()
            for entry in value if isinstance(value, list) else [value]:
                entry = str(entry)
                if entry.startswith("pkg://"):
                    problems.append(f"{where}: pkg:// search paths import a Python package; use file://DIR")
                elif entry.startswith("file://"):
                    dirs.append(Path(entry[len("file://"):]))
    return problems, dirs


def _hydra_part(path: Path, root: Path, text: str, tree: Any) -> Any:
    """The part of a config file that lands under ``hydra``, or None."""
    rel = path.relative_to(root).parts
    header = next((line for line in text.splitlines()[:5] if line.startswith("# @package")), "")
    package = header.split("@package", 1)[1].strip() if header else ""
    if rel[0] == "hydra" or package.startswith("hydra"):
        return tree
    if isinstance(tree, dict):
        return tree.get("hydra")
    return None


def check_files(dirs: Iterable[Path]) -> list[str]:
    """Config files under these search-path directories that would put callables or an
    environment into Hydra's own config."""
    import yaml

    problems = []
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.yaml")):
            text = path.read_text(errors="replace")
            try:
                tree = yaml.safe_load(text)
            except yaml.YAMLError:
                continue  # Hydra will say what is wrong with it if it is ever read
            part = _hydra_part(path, root, text, tree)
            if part is None:
                continue
            bad = _calls(part, "hydra")
            if isinstance(part, dict):
                bad += [f"hydra.{k}" for k in ("callbacks", "job_logging", "hydra_logging") if k in part]
                bad += ["hydra.job.env_set"] if isinstance(part.get("job"), dict) and "env_set" in part["job"] else []
            if bad:
                problems.append(f"{path}: sets {', '.join(sorted(set(bad)))}, which can run arbitrary code; not accepted")
    return problems


def check(argv: list[str], conf_dir: str) -> list[str]:
    """Problems with a ``b200lab run`` command line and the config files it would read."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    problems, dirs = check_overrides(args.overrides or [])
    for flag in (args.config_dir, args.config_path):  # --config-dir / --config-path: other primary configs
        if flag:
            dirs.append(Path(flag))
    experiments = Path(conf_dir) / "experiment"
    return problems + check_files([*dirs, experiments])
