"""``b200lab sync [PATH ...]``: upload results.json files that never reached MLflow.

Looks under multirun/ and outputs/ unless paths are given. A sweep whose parent run was never
created gets one; each job gets a run with its params, metrics, tags and artifacts, ended with
its recorded status. results.json is updated with the run id, so a second sync uploads nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from b200lab import results as results_io
from b200lab.callbacks import PARENT_FILE, read_parent, write_parent
from b200lab.tracking import Tracker, flatten, probe, publish, resolve_uri


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="b200lab sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("multirun"), Path("outputs")])
    parser.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default=None, help="experiment name (default: the one each result was run with)")
    args = parser.parse_args(argv)
    uri = resolve_uri(args.uri)
    pending = [p for p in results_io.find(args.paths) if not results_io.read(p).get("mlflow", {}).get("synced")]
    if not pending:
        print("b200lab sync: nothing to upload")
        return 0
    problem = probe(uri, 5.0)
    if problem:
        print(f"b200lab sync: {problem}")
        return 3
    trackers: dict[str, Tracker] = {}
    parents: dict[Path, str] = {}
    for path in pending:
        res = results_io.read(path)
        experiment = args.experiment or res["config"]["tracking"]["experiment"]
        tracker = trackers.get(experiment) or trackers.setdefault(experiment, Tracker(uri, experiment, system_metrics=False))
        job_dir = path.parent
        parent_id = _parent_for(job_dir.parent, tracker, parents) if (job_dir.parent / PARENT_FILE).exists() else None
        from b200lab.job import run_name
        from omegaconf import OmegaConf

        run_id = tracker.create_run(run_name(OmegaConf.create(res["config"])), {"synced_later": "true"}, parent_id)
        tracker.log_params(run_id, flatten(res["config"]))
        publish(tracker, run_id, res, job_dir)
        res["mlflow"].update(tracking_uri=uri, experiment_id=tracker.experiment_id, run_id=run_id, parent_run_id=parent_id, synced=True, error=None)
        results_io.write(job_dir, res)
        print(f"b200lab sync: {path} -> run {run_id} ({res['status']})")
    from b200lab.callbacks import finish_sweep

    for sweep_dir in parents:  # close the parent runs created or reused above
        finish_sweep(sweep_dir)
    return 0


def _parent_for(sweep_dir: Path, tracker: Tracker, parents: dict[Path, str]) -> str:
    if sweep_dir in parents:
        return parents[sweep_dir]
    info = read_parent(sweep_dir) or {}
    run_id = info.get("run_id") if info.get("tracking_uri") == tracker.uri else None
    if not run_id:
        run_id = tracker.create_run(info.get("name", f"sweep {sweep_dir}"), {"sweep": "true", "synced_later": "true", **info.get("tags", {})})
        info.update(tracking_uri=tracker.uri, experiment=tracker.client.get_experiment(tracker.experiment_id).name, run_id=run_id, experiment_id=tracker.experiment_id)
        write_parent(sweep_dir, info)
    parents[sweep_dir] = run_id
    return run_id
