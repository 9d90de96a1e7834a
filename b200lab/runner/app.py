"""``b200lab run``: check the command line and the composed configuration, then hand over to Hydra.

Before Hydra's own run starts (so a refusal creates no output folder and no MLflow run):

1. the command line, for what would act while composing (b200lab/core/config_guard.py);
2. every point is composed with Hydra's compose API (nothing is instantiated) and its ``hydra``
   node checked for anything Hydra would import or call;
3. a single run's job config is validated (b200lab/core/validation.py): a refusal is exit 2 with
   every problem named. A sweep's points are validated by their jobs, so a failing point is
   recorded and the sweep goes on.

Then Hydra runs; the lab's callback (b200lab/runner/callbacks.py) ends the process with the exit code.
"""

from __future__ import annotations

import itertools
import os
import sys
import traceback

import hydra
from omegaconf import DictConfig, OmegaConf

from b200lab.core.schema import conf_dir, register_configs

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BARE_NUMBER = "Config group override must be a string"  # Hydra's ValueError for `seq=1024`
INFO_FLAGS = ("help", "hydra_help", "cfg", "info", "shell_completion")


class JobCrash(RuntimeError):
    """An exception escaped a job: a bug to report, never a configuration error."""


class Refused(Exception):
    """The command is refused before anything ran; the message lists why (exit 2)."""


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def _hydra_entry(cfg: DictConfig) -> None:
    from b200lab.runner.job import run_job

    try:
        run_job(cfg)
    except Exception as exc:
        raise JobCrash(f"{type(exc).__name__}: {exc}") from exc


def _config_error(exc: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(exc, (HydraException, OmegaConfBaseException)) or BARE_NUMBER in str(exc)


def _say_config_error(exc: BaseException) -> None:
    from omegaconf.errors import OmegaConfBaseException

    text = str(exc).strip()
    if isinstance(exc.__cause__, OmegaConfBaseException):
        text += "\n" + str(exc.__cause__).strip()
    if BARE_NUMBER in text:
        text += (
            "\noptions are names, never bare numbers (seq=2k, not seq=2048); "
            "set a value with GROUP.FIELD=VALUE, e.g. seq.len=2048"
        )
    elif "is not in struct" in text:
        text += "\nthat field does not exist; `b200lab --cfg job` prints every field with its value"
    print(f"b200lab: {text}", file=sys.stderr)


def sweep_points(overrides: list[str], params: dict) -> list[list[str]]:
    """The points Hydra's basic sweeper makes of a preset's ``hydra.sweeper.params`` and the
    command line (the command line wins for a key both set); a non-discrete sweep keeps its key out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in params.items()), *overrides]):
        key = o.get_key_element()
        if not o.is_sweep_override():
            choices[key] = [o.input_line]
        elif o.is_discrete_sweep():
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            choices[key] = []
    return [list(p) for p in itertools.product(*(c for c in choices.values() if c))]


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose

    return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def precheck(args) -> None:
    """Refused (with every reason) when the command must not run; nothing is created either way."""
    from hydra import initialize_config_dir

    from b200lab.core.config_guard import check_command_line, check_composed

    problems = check_command_line(args)
    if problems:
        raise Refused("\n  - ".join(problems))
    if any(getattr(args, flag, None) for flag in INFO_FLAGS):
        return
    overrides = list(args.overrides or [])
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3", job_name="b200lab"):
        first = _compose([p for p in sweep_points(overrides, {})[0]] if args.multirun else overrides)
        hydra_node = OmegaConf.to_container(first.hydra, resolve=False)
        problems = check_composed(hydra_node)
        if args.multirun and not problems and hydra_node.get("sweeper", {}).get("_target_") == BASIC_SWEEPER:
            for point in sweep_points(overrides, hydra_node["sweeper"].get("params") or {})[1:]:
                problems += [
                    p
                    for p in check_composed(OmegaConf.to_container(_compose(point).hydra, resolve=False))
                    if p not in problems
                ]
    if problems:
        raise Refused("\n  - ".join(problems))
    if not args.multirun:
        _validate(first)


def _validate(cfg: DictConfig) -> None:
    """A single run's job config, as its job will check it (interpolations Hydra resolves only at
    run time are left to the job)."""
    from omegaconf.errors import OmegaConfBaseException

    from b200lab.core.machine import ConfigError, resolve_device
    from b200lab.core.validation import validate

    job = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"})
    try:
        OmegaConf.to_container(job, resolve=True, throw_on_missing=True)
    except (
        OmegaConfBaseException
    ) as exc:  # a group left empty, an interpolation that cannot resolve: as the job says it
        key = getattr(exc, "full_key", None)
        if "hydra" in str(exc) or "Unsupported interpolation type" in str(exc):
            return  # resolved only inside Hydra's run: the job checks it
        raise ConfigError(
            f"invalid configuration:\n  - {key + ': ' if key else ''}{str(exc).splitlines()[0]}"
        ) from None
    validate(job, resolve_device(job.run.device))


def run(argv: list[str]) -> int:
    """The exit code of ``b200lab run ARGV`` (the callbacks end the process with it when a job ran)."""
    from hydra._internal.utils import get_args_parser

    from b200lab.core.machine import ConfigError

    for warning in register_configs():
        print(f"b200lab: {warning}", file=sys.stderr)
    args = get_args_parser().parse_args(argv)
    try:
        precheck(args)
        if args.help:
            from b200lab.runner.run_help import help_text

            print(help_text(list(args.overrides or [])))
            return 0
    except Refused as exc:
        print(f"b200lab: refused before anything ran:\n  - {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"b200lab: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _config_error(exc):
            raise
        _say_config_error(exc)
        return 2
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises, so its errors get exit code 2 here
    sys.argv = [sys.argv[0], *argv]
    try:
        _hydra_entry()
    except KeyboardInterrupt:
        print("\nb200lab: interrupted", file=sys.stderr)
        return 130
    except JobCrash as exc:
        if _storage_full(exc.__cause__):
            return 1
        traceback.print_exception(exc.__cause__ or exc)
        return 1
    except OSError as exc:
        if _storage_full(exc):
            return 1
        raise
    except Exception as exc:
        if not _config_error(exc):
            raise
        _say_config_error(exc)
        return 2
    return 0


def _storage_full(exc: BaseException | None) -> bool:
    """Say in one line that a file could not be written for lack of space (or a read-only
    file system); False for any other error."""
    import errno

    if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        return False
    print(
        f"b200lab: cannot write {exc.filename or 'the output'}: {exc.strerror} (free space there, or choose another "
        "folder with hydra.run.dir / hydra.sweep.dir)",
        file=sys.stderr,
    )
    return True
