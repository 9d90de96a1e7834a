"""The ``b200lab`` command: ``run`` (the default), ``sync``, ``import``, ``report``, ``tables``, ``baseline``,
``gate``, ``power``, ``freshness``.

Each command is imported only when it is asked for, so ``--help`` and a refused run start fast."""

from __future__ import annotations

import os
import sys

USAGE = """\
usage: b200lab [run] [OVERRIDES...] [-m]     measure (the default command; Hydra overrides)
       b200lab sync [PATH...]                upload results that never reached MLflow
       b200lab import PATH...                committed records into MLflow as they were (to browse them)
       b200lab report [PATH... | --parent RUN | --tag K=V] --out DIR   Markdown + HTML report, line charts
       b200lab report {table,compile,plot} PATH...
       b200lab tables [--check] FILE.md...   regenerate the results tables embedded in Markdown files
       b200lab baseline save [PATH... | --parent RUN] --out FILE   record a baseline
       b200lab gate --baseline FILE [PATH... | --parent RUN]        fail on a regression
       b200lab power [--csv FILE] -- CMD...  GPU energy of any command
       b200lab freshness [DIR] [--out FILE]  which records are older than the code that made them

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
  1    a point errored or diverged (or a results.json is unreadable, or the disk is full)
  2    bad configuration: nothing ran
  3    measured but not in MLflow: run `b200lab sync`
  4    gate: the hardware differs from the baseline's (no verdict)
  130  interrupted (Ctrl-C): runs end KILLED with what was measured

MLflow: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here; outputs under outputs/ and multirun/.
"""

COMMANDS = ("run", "sync", "import", "report", "tables", "baseline", "gate", "power", "freshness")


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

        print(
            f"b200lab {_version('b200lab') or 'unknown'} (hydra {_version('hydra-core')}, mlflow {_version('mlflow')})"
        )
        sys.exit(0)
    if command == "sync":
        from b200lab.runner.sync import main as sync_main

        sys.exit(sync_main(rest))
    if command == "import":
        from b200lab.runner.import_records import main as import_main

        sys.exit(import_main(rest))
    if command == "report":
        from b200lab.reports.report import main as report_main

        sys.exit(report_main(rest))
    if command == "tables":
        from b200lab.reports.doc_tables import main as tables_main

        sys.exit(tables_main(rest))
    if command == "baseline":
        from b200lab.reports.baseline import main as baseline_main

        sys.exit(baseline_main(rest))
    if command == "gate":
        from b200lab.reports.regression_gate import main as gate_main

        sys.exit(gate_main(rest))
    if command == "power":
        from b200lab.tools.power import main as power_main

        sys.exit(power_main(rest))
    if command == "freshness":
        from b200lab.reports.freshness import main as freshness_main

        sys.exit(freshness_main(rest))
    from b200lab.runner.app import run

    sys.exit(run(rest))
