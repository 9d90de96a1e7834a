"""``b200lab sync [PATH ...]``: upload results.json files that never reached MLflow.

Looks under multirun/ and outputs/ unless paths are given. Each result goes to the tracking store
its results.json records (the one it was run against), unless ``--uri`` names another, so a
sweep never ends up split over two stores. A job whose run was created before
the store went away gets that run back (filled in and closed), others get a new run; a sweep's
parent run is reused when the store has it, else created; parents left open are closed. Each
results.json is updated with its run id, so a second sync uploads nothing. An unreadable
results.json is named and skipped; the others still go (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from b200lab.records import results as results_io
from b200lab.records.tracking import Tracker, flatten, probe, publish, resolve_uri
from b200lab.runner import sweep


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="b200lab sync", description=__doc__.split("\n\n")[0].replace("``", "`"))
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("multirun"), Path("outputs")])
    parser.add_argument(
        "--uri", help="upload everything to this tracking URI (default: the store each results.json records)"
    )
    parser.add_argument(
        "--experiment", default=None, help="experiment name (default: the one each result was run with)"
    )
    args = parser.parse_args(argv)
    good, bad = results_io.read_all(results_io.find(args.paths))
    for err in bad:
        print(f"b200lab sync: skipped {err}", file=sys.stderr)
    pending = [(path, res) for path, res in good if not res["mlflow"].get("synced")]
    open_sweeps = {d for d in _sweep_dirs(args.paths) if _left_open(sweep.read_parent(d) or {})}
    if not pending and not open_sweeps:
        print("b200lab sync: nothing to upload")
        return 1 if bad else 0
    stores = {args.uri or res["mlflow"].get("tracking_uri") or resolve_uri(None) for _, res in pending}
    unreachable = {uri: why for uri in sorted(stores) if (why := probe(uri, 5.0))}
    for why in unreachable.values():
        print(f"b200lab sync: {why}", file=sys.stderr)
    trackers: dict[tuple[str, str], Tracker] = {}
    parents: dict[Path, str] = {}
    failed = 0
    for path, res in pending:
        uri = args.uri or res["mlflow"].get("tracking_uri") or resolve_uri(None)
        if uri in unreachable:
            failed += 1
            continue
        experiment = args.experiment or res["config"]["tracking"]["experiment"]
        try:
            tracker = trackers.get((uri, experiment)) or trackers.setdefault(
                (uri, experiment), Tracker(uri, experiment, system_metrics=False)
            )
            job_dir = path.parent
            parent_id = (
                _parent_for(job_dir.parent, tracker, parents) if (job_dir.parent / sweep.PARENT_FILE).exists() else None
            )
            run_id = _upload(tracker, res, job_dir, parent_id)
            print(f"b200lab sync: {path} -> run {run_id} ({res['status']})")
        except Exception as exc:
            failed += 1
            print(f"b200lab sync: {path} not uploaded ({type(exc).__name__}: {exc})", file=sys.stderr)
    for sweep_dir in sorted(set(parents) | open_sweeps):
        sweep.finish(sweep_dir)
    if unreachable:
        return 3
    return 1 if bad or failed else 0


def _upload(tracker: Tracker, res: dict, job_dir: Path, parent_id: str | None) -> str:
    """Fill in the run the job created when this store has it, else a new one; results.json is
    marked synced before it is logged (the logged copy is the final one), unmarked on failure."""
    from omegaconf import OmegaConf

    from b200lab.runner.job import run_name

    run_id = res["mlflow"].get("run_id")
    if not run_id or tracker.run_status(run_id) is None:
        run_id = tracker.create_run(
            run_name(OmegaConf.create(res["config"])),
            {"synced_later": "true"},
            parent_id,
            git_sha=res.get("env", {}).get("git_sha"),
            start_ms=res.get("started_at_ms"),
        )
        tracker.log_params(run_id, flatten(res["config"]))
    else:
        parent_id = res["mlflow"].get("parent_run_id") or parent_id
    res["mlflow"].update(
        tracking_uri=tracker.uri,
        experiment_id=tracker.experiment_id,
        run_id=run_id,
        parent_run_id=parent_id,
        synced=True,
        error=None,
    )
    results_io.write(job_dir, res)
    try:
        publish(tracker, run_id, res, job_dir)
    except Exception as exc:
        res["mlflow"].update(synced=False, error=f"MLflow: {type(exc).__name__}: {exc}")
        results_io.write(job_dir, res)
        raise
    return run_id


def _parent_for(sweep_dir: Path, tracker: Tracker, parents: dict[Path, str]) -> str:
    """The sweep's parent run: the recorded one if this store has it, else a new one."""
    if sweep_dir in parents:
        return parents[sweep_dir]
    info = sweep.read_parent(sweep_dir) or {}
    run_id = info.get("run_id")
    if not run_id or tracker.run_status(run_id) is None:
        tags = {"sweep": "true", "synced_later": "true", **info.get("tags", {})}
        run_id = tracker.create_run(
            info.get("name", f"sweep {sweep_dir}"),
            tags,
            git_sha=info.get("tags", {}).get("git_sha"),
            start_ms=info.get("started_at_ms"),
        )
        info.update(
            state="created",
            tracking_uri=tracker.uri,
            experiment=tracker.client.get_experiment(tracker.experiment_id).name,
            run_id=run_id,
            experiment_id=tracker.experiment_id,
            closed=False,
        )
        sweep.write_parent(sweep_dir, info)
    parents[sweep_dir] = run_id
    return run_id


def _left_open(parent: dict) -> bool:
    return bool(parent.get("run_id")) and parent.get("closed") is False  # records before "closed" existed were closed


def _sweep_dirs(paths: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for root in map(Path, paths):
        if root.is_dir():
            found.update(p.parent for p in root.rglob(sweep.PARENT_FILE))
        elif root.name == sweep.PARENT_FILE:
            found.add(root.parent)
    return found
