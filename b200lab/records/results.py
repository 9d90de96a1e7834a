"""results.json: the one record of a job, written before anything goes to MLflow.

    schema_version  2 (files without the field are version 1: the same keys)
    status     ok | oom | error | interrupted
    error      null or a one-paragraph message
    point      the sweep overrides that make this job
    job_num    the job's number in its sweep (0 for a single run)
    sweep_id   the sweep it belongs to (mlflow_parent.json's), absent for a single run
    requested  precision / attention / parallelism / device as asked
    effective  what ran, with a reason for every fallback
    config     the resolved config
    env        hardware, driver, versions, git sha, host
    metrics    DESIGN.md names (tokens_per_s, step_ms_p50, ...)
    step_ms    every timed step (the slowest rank's), for spread and plots
    curves     optional: per-step series, {name: [[step, value], ...]} (e.g. train_loss)
    mlflow     tracking_uri, experiment_id, run_id, parent_run_id, synced, error
    started_at_ms, ended_at_ms   when the job began and ended (Unix epoch, milliseconds); what an
               upload sets as the MLflow run's start and end, however late it happens (absent in
               records written before 2026-12-07)

Readers go through :func:`read`, which checks the record against :class:`JobResult` and names the
file in any error, so one truncated file never stops a report or a sync over the others.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FILENAME = "results.json"
SCHEMA_VERSION = 2


class ResultsError(ValueError):
    """A results.json that cannot be read or does not match the record; names the file."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)


class MlflowRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    tracking_uri: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    synced: bool = False
    error: str | None = None


class JobResult(BaseModel):
    """The typed record; extra keys (measurement, profile, unaggregated_metrics, ...) are kept."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = 1
    status: Literal["ok", "oom", "error", "interrupted"]
    error: str | None = None
    point: str = ""
    job_num: int = 0
    sweep_id: str | None = None
    requested: dict[str, Any]
    effective: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any]
    env: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    step_ms: list[float] = Field(default_factory=list)
    curves: dict[str, list[list[float]]] = Field(default_factory=dict)
    mlflow: MlflowRecord = Field(default_factory=MlflowRecord)
    started_at_ms: int | None = None
    ended_at_ms: int | None = None


def now_ms() -> int:
    return int(time.time() * 1000)


def write(job_dir: Path, results: dict) -> Path:
    results.setdefault("schema_version", SCHEMA_VERSION)
    path = Path(job_dir) / FILENAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(path)
    return path


def read(path: Path) -> dict:
    """The record as a dict, checked against JobResult; ResultsError names the file otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ResultsError(path, f"cannot read ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(path, f"not valid JSON ({exc}); truncated or hand-edited?") from exc
    if not isinstance(data, dict):
        raise ResultsError(path, f"expected a JSON object, found {type(data).__name__}")
    try:
        record = JobResult.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()[:5])
        raise ResultsError(path, f"not a b200lab results.json ({problems})") from exc
    if record.schema_version > SCHEMA_VERSION:
        raise ResultsError(
            path, f"schema_version {record.schema_version} is newer than this b200lab reads ({SCHEMA_VERSION})"
        )
    data.setdefault("mlflow", record.mlflow.model_dump())
    return data


def read_all(paths: list[Path]) -> tuple[list[tuple[Path, dict]], list[ResultsError]]:
    """Every readable record with its path, and an error for each file that is not."""
    good: list[tuple[Path, dict]] = []
    bad: list[ResultsError] = []
    for path in paths:
        try:
            good.append((path, read(path)))
        except ResultsError as exc:
            bad.append(exc)
    return good, bad


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
