"""How long a refused run takes, against importing torch: the CLI's startup budget.

    python experiments/scripts/bench_cli_startup.py [--repeats 7] [--job] [--out FILE.json]

Runs each command ``--repeats`` times, alternating, in an empty temporary folder (so no store or
output folder is found or made), and reports the median and spread of each and the ratio of the
medians. The lab's aim (docs/architecture.md): ``b200lab seq.batch=0`` (exit 2, the refusal
message) within 1.2x ``python -c "import torch"`` on the same machine. The machine's load is
recorded beside the numbers: a loaded machine slows both, not the ratio alone. So is ``source``, the
commit of the b200lab the commands import (``+dirty`` when its tree has changes), so an older
commit is measured by putting its worktree first: ``PYTHONPATH=/path/to/worktree python ...``.
``--job`` adds a whole job, ``b200lab debug=fast`` (one torchrun rank on the CPU, logged to an MLflow
store the untimed first run creates), in a folder of its own so the refusal's stays empty.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "b200lab seq.batch=0": [sys.executable, "-m", "b200lab", "seq.batch=0"],
    "b200lab --help": [sys.executable, "-m", "b200lab", "--help"],
}
EXPECTED_EXIT = {"import torch": 0, "b200lab seq.batch=0": 2, "b200lab --help": 0}
JOB = "b200lab debug=fast"  # --job
JOB_ARGV = [sys.executable, "-m", "b200lab", "debug=fast"]


def time_once(argv: list[str], cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    return time.perf_counter() - t0, proc.returncode, proc.stderr


def measured_source(cwd: Path) -> str:
    """The commit of the b200lab the commands import (from ``cwd``, as they run), ``+dirty`` if its tree differs."""
    where = subprocess.run(
        [sys.executable, "-c", "import b200lab, os; print(os.path.dirname(b200lab.__file__))"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    git = ["git", "-C", where]
    sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True).stdout.strip()
    return (sha or "unknown") + ("+dirty" if dirty else "")


def write_csv(record: dict, path: Path) -> None:
    """One row per command, for the Markdown tables generated from it (``b200lab tables``)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "command", "median_s", "min_s", "max_s", "n", "over_import_torch", "left_behind"])
        torch_median = record["median_s"]["import torch"]
        for name, median in record["median_s"].items():
            writer.writerow(
                [
                    record["source"],
                    name,
                    f"{median:.4f}",
                    f"{record['min_s'][name]:.4f}",
                    f"{record['max_s'][name]:.4f}",
                    record["repeats"],
                    f"{median / torch_median:.4f}",
                    " ".join(record["left_in_working_dir"]) or "nothing",
                ]
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write the record here as JSON, and its rows beside it as CSV")
    parser.add_argument("--job", action="store_true", help=f"also time `{JOB}`, a whole one-rank job")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="b200lab_startup_"))
    job_folder = Path(tempfile.mkdtemp(prefix="b200lab_job_"))
    commands = {name: (argv, folder) for name, argv in COMMANDS.items()}
    if args.job:
        commands[JOB] = (JOB_ARGV, job_folder)
    times: dict[str, list[float]] = {name: [] for name in commands}
    try:
        source = measured_source(folder)
        for name, (argv, cwd) in commands.items():  # one untimed run each: the page cache holds every file afterwards
            _, code, err = time_once(argv, cwd)
            if code != EXPECTED_EXIT.get(name, 0):
                print(f"{name}: exit {code}, expected {EXPECTED_EXIT.get(name, 0)}\n{err}", file=sys.stderr)
                return 1
        for _ in range(args.repeats):
            for name, (argv, cwd) in commands.items():
                seconds, _, err = time_once(argv, cwd)
                times[name].append(seconds)
        refusal = time_once(COMMANDS["b200lab seq.batch=0"], folder)[2].strip()
        left = sorted(p.name for p in folder.iterdir())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(job_folder, ignore_errors=True)
    medians = {name: statistics.median(v) for name, v in times.items()}
    record = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "source": source,
        "repeats": args.repeats,
        "seconds": times,
        "median_s": medians,
        "min_s": {n: min(v) for n, v in times.items()},
        "max_s": {n: max(v) for n, v in times.items()},
        "ratio_refusal_over_import_torch": medians["b200lab seq.batch=0"] / medians["import torch"],
        "refusal_message": refusal,
        "left_in_working_dir": left,
    }
    for name, v in times.items():
        print(f"{name:24s} median {medians[name]:.3f} s  (min {min(v):.3f}, max {max(v):.3f}, n={len(v)})")
    print(
        f"refusal / import torch = {record['ratio_refusal_over_import_torch']:.3f} (aim <= 1.2); "
        f"left behind: {left or 'nothing'}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        write_csv(record, args.out.with_suffix(".csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
