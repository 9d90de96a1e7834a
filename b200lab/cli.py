"""The ``b200lab`` command: ``run`` (the default), ``sync``, ``report``, ``tables``, ``baseline``, ``gate``, ``power``."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

USAGE = """\
usage: b200lab [run] [OVERRIDES...] [-m]     measure (the default command; Hydra overrides)
       b200lab sync [PATH...]                upload results that never reached MLflow
       b200lab report [PATH... | --parent RUN | --tag K=V] --out DIR   Markdown + HTML report, line charts
       b200lab report {table,compile,plot} PATH...
       b200lab tables [--check] FILE.md...   regenerate the results tables embedded in Markdown files
       b200lab baseline save [PATH... | --parent RUN] --out FILE   record a baseline
       b200lab gate --baseline FILE [PATH... | --parent RUN]        fail on a regression
       b200lab power [--csv FILE] -- CMD...  GPU energy of any command

examples:
  b200lab                                    the default experiment: tiny model, forward, 8 x 1k tokens
  b200lab model=gpt_1b precision=bf16 workload=train seq=2k compile=default
  b200lab -m seq=1k,2k model=tiny            a sweep: a parent MLflow run, a child run per point
  b200lab -m experiment=smoke                a preset from experiments/
  b200lab sync                               upload what a dead tracking server missed
  b200lab report table multirun/DATE/TIME    a markdown table of a sweep
  b200lab report --parent latest --out rep   the newest sweep in MLflow as rep/report.html
  b200lab gate --baseline base.json --parent latest   the newest sweep against a baseline
  b200lab run --help                         config groups and Hydra's options

exit codes:
  0    every point measured (oom is a measurement)
  1    a point errored (or a results.json is unreadable)
  2    bad configuration: nothing ran
  3    measured but not in MLflow: run `b200lab sync`
  4    gate: the hardware differs from the baseline's (no verdict)
  130  interrupted (Ctrl-C): runs end KILLED with what was measured

MLflow: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here; outputs under outputs/ and multirun/.
"""

COMMANDS = ("run", "sync", "report", "tables", "baseline", "gate", "power")


def conf_dir() -> str:
    """conf/ shipped inside the installed package, else the checkout's top-level conf/."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if (packaged / "config.yaml").exists() else here.parent / "conf")


class JobCrash(RuntimeError):
    """An exception escaped a job: a bug to report, never a configuration error."""


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def _hydra_entry(cfg: DictConfig) -> None:
    from b200lab.job import run_job

    try:
        run_job(cfg)
    except Exception as exc:
        raise JobCrash(f"{type(exc).__name__}: {exc}") from exc


BARE_NUMBER = "Config group override must be a string"  # Hydra's ValueError for `seq=1024`


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
        text += ("\noptions are names, never bare numbers (seq=2k, not seq=2048); "
                 "set a value with GROUP.FIELD=VALUE, e.g. seq.len=2048")
    elif "is not in struct" in text:
        text += "\nthat field does not exist; `b200lab --cfg job` prints every field with its value"
    print(f"b200lab: {text}", file=sys.stderr)


def run(overrides: list[str]) -> int:
    """Hydra does the rest; the callbacks end the process with the exit code (b200lab/callbacks.py)."""
    from b200lab.config import register_configs

    from b200lab.hydra_guard import check

    problems = check(overrides, conf_dir())
    if problems:
        print("b200lab: refused before anything ran:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 2
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises, so its errors get exit code 2 here
    sys.argv = [sys.argv[0], *overrides]
    register_configs()
    try:
        _hydra_entry()
    except KeyboardInterrupt:
        print("\nb200lab: interrupted", file=sys.stderr)
        return 130
    except JobCrash as exc:
        traceback.print_exception(exc.__cause__ or exc)
        return 1
    except Exception as exc:
        if not _config_error(exc):
            raise
        _say_config_error(exc)
        return 2
    return 0


def _drop_working_dir_from_path() -> None:
    """``python -m`` puts the working directory first on sys.path; a ``hydra_plugins`` folder or
    a ``*.dist-info`` there would then be imported or trusted as registered. The lab itself is
    already imported, and plugins come from installed packages or PYTHONPATH."""
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]


def main(argv: list[str] | None = None) -> None:
    _drop_working_dir_from_path()
    args = sys.argv[1:] if argv is None else list(argv)
    command = args[0] if args[:1] and args[0] in COMMANDS else None
    rest = args[1:] if command else args
    if command is None and args[:1] in (["-h"], ["--help"]):
        print(USAGE, end="")
        sys.exit(0)
    if command is None and args[:1] == ["--version"]:
        from b200lab.measure.environment import _version

        print(f"b200lab {_version('b200lab') or 'unknown'} (hydra {_version('hydra-core')}, mlflow {_version('mlflow')})")
        sys.exit(0)
    if command == "sync":
        from b200lab.sync import main as sync_main

        sys.exit(sync_main(rest))
    if command == "report":
        from b200lab.report import main as report_main

        sys.exit(report_main(rest))
    if command == "tables":
        from b200lab.doc_tables import main as tables_main

        sys.exit(tables_main(rest))
    if command == "baseline":
        from b200lab.baseline import main as baseline_main

        sys.exit(baseline_main(rest))
    if command == "gate":
        from b200lab.gate import main as gate_main

        sys.exit(gate_main(rest))
    if command == "power":
        from b200lab.tools.power import main as power_main

        sys.exit(power_main(rest))
    sys.exit(run(rest))
