"""Hydra callbacks: a sweep's parent MLflow run, and its summary table when it ends."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from b200lab import results as results_io
from b200lab import session
from b200lab.summary import table, write_csv
from b200lab.tracking import Tracker, resolve_uri

PARENT_FILE = "mlflow_parent.json"


def read_parent(sweep_dir: Path) -> Optional[dict]:
    path = Path(sweep_dir) / PARENT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_parent(sweep_dir: Path, info: dict) -> None:
    (Path(sweep_dir) / PARENT_FILE).write_text(json.dumps(info, indent=2))


def open_parent(sweep_dir: Path, tracking: DictConfig, name: str, tags: dict) -> dict:
    """Create the sweep's parent run if the store answers; the record is kept either way so
    ``b200lab sync`` can create it later."""
    from b200lab.measure.environment import git_sha

    uri = resolve_uri(tracking.uri)
    info = {"tracking_uri": uri, "experiment": tracking.experiment, "run_id": None, "name": name, "tags": {**tags, "git_sha": git_sha()}}
    if not session.probe_once(uri, tracking.probe_timeout_s):
        try:
            tracker = Tracker(uri, tracking.experiment, system_metrics=False)
            info["run_id"] = tracker.create_run(name, {"sweep": "true", **info["tags"]})
            info["experiment_id"] = tracker.experiment_id
        except Exception as exc:
            info["error"] = f"MLflow: {type(exc).__name__}: {exc}"
            print(f"b200lab: could not create the sweep's parent run ({info['error']})")
    write_parent(sweep_dir, info)
    return info


def sweep_rows(sweep_dir: Path) -> list[dict]:
    rows = [results_io.read(p) for p in results_io.find([sweep_dir])]
    return sorted(rows, key=lambda r: r.get("job_num", 0))


def finish_sweep(sweep_dir: Path, interrupted: bool = False) -> None:
    rows = sweep_rows(sweep_dir)
    if rows:
        print("\n" + table(rows))
    csv_path = write_csv(rows, Path(sweep_dir) / "summary.csv")
    artifacts = [csv_path, Path(sweep_dir) / PARENT_FILE]
    try:
        from b200lab.plot import plot

        plot(rows, Path(sweep_dir) / "summary.png")
        artifacts.append(Path(sweep_dir) / "summary.png")
    except ValueError:
        pass  # no point measured a rate: nothing to draw
    except Exception as exc:  # a chart must never cost the sweep its bookkeeping
        print(f"b200lab: no summary.png ({type(exc).__name__}: {exc})")
    statuses = [r["status"] for r in rows]
    print(f"b200lab: sweep {sweep_dir}: {len(rows)} points, " + ", ".join(f"{s} {statuses.count(s)}" for s in sorted(set(statuses))))
    parent = read_parent(sweep_dir)
    if not parent or not parent.get("run_id"):
        return
    status = "interrupted" if interrupted else ("error" if "error" in statuses or "interrupted" in statuses else "ok")
    try:
        tracker = Tracker(parent["tracking_uri"], parent["experiment"], system_metrics=False)
        tracker.set_tags(parent["run_id"], {"status": status, "n_points": len(rows), **{f"n_{s}": statuses.count(s) for s in set(statuses)}})
        tracker.log_files(parent["run_id"], artifacts)
        tracker.end(parent["run_id"], status)
    except Exception as exc:
        print(f"b200lab: could not close the sweep's parent run ({type(exc).__name__}: {exc})")


def ensure_writable(directory: Path, key: str) -> None:
    """Create the output dir now and write to it, so a bad path fails before anything runs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".b200lab_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        print(f"b200lab: {key}={directory} is not a writable directory ({exc.strerror or exc}); choose another with {key}=PATH", file=sys.stderr)
        raise SystemExit(2)


class LabCallbacks(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        ensure_writable(Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        ensure_writable(sweep_dir, "hydra.sweep.dir")
        session.sweep_dir = sweep_dir
        overrides = list(config.hydra.overrides.task)
        name = f"sweep {config.get('preset', 'none')} {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}"
        open_parent(sweep_dir, config.tracking, name, {"preset": config.get("preset"), "overrides": " ".join(overrides), "sweep_dir": str(sweep_dir)})

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if session.sweep_dir is not None:
            finish_sweep(session.sweep_dir)
