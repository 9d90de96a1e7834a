"""results.json: the one record of a job, written before anything goes to MLflow.

    status     ok | oom | error | interrupted
    error      null or a one-paragraph message
    point      the sweep overrides that make this job
    requested  precision / attention / parallelism / device as asked
    effective  what ran, with a reason for every fallback
    config     the resolved config
    env        hardware, driver, versions, git sha, host
    metrics    DESIGN.md names (tokens_per_s, step_ms_p50, ...)
    step_ms    every timed step (the slowest rank's), for spread and plots
    mlflow     tracking_uri, experiment_id, run_id, parent_run_id, synced, error
"""

from __future__ import annotations

import json
from pathlib import Path

FILENAME = "results.json"


def write(job_dir: Path, results: dict) -> Path:
    path = job_dir / FILENAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(path)
    return path


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def is_results(path: Path) -> bool:
    """results.json, or an archived copy named NAME.results.json (docs/measurements)."""
    return path.name == FILENAME or path.name.endswith("." + FILENAME)


def find(roots: list[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file() and is_results(root):
            found.append(root)
        elif root.is_dir():
            found.extend(sorted(p for p in root.rglob(f"*{FILENAME}") if is_results(p)))
    return found
