"""One sweep point, in the parent process: validate, open its MLflow run, launch, aggregate,
write results.json, then publish it. Nothing measured is lost to a later failure."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from b200lab import results as results_io
from b200lab import session
from b200lab.aggregate import aggregate
from b200lab.config import ConfigError, resolve_device, validate
from b200lab.launch import launch
from b200lab.measure.environment import host_env
from b200lab.tracking import Tracker, flatten, publish, resolve_uri
from b200lab.summary import one_line


def requested(cfg: DictConfig) -> dict:
    return {
        "precision": cfg.precision.name,
        "attention": cfg.attention.name,
        "parallelism": f"{cfg.parallelism.name} nproc={cfg.parallelism.nproc}",
        "device": cfg.run.device,
        "compile": cfg.compile.name,
        "workload": cfg.workload.name,
    }


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.model.name}-{cfg.workload.name}-{cfg.seq.name}-{cfg.precision.name}-{cfg.attention.name}"


def _parent_run_id(multirun: bool) -> Optional[str]:
    if not multirun or session.sweep_dir is None:
        return None
    from b200lab.callbacks import read_parent

    parent = read_parent(session.sweep_dir)
    return parent.get("run_id") if parent else None


def run_job(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    point = " ".join(hc.overrides.task) or "(defaults)"
    results: dict = {
        "status": "ok", "error": None, "point": point, "job_num": hc.job.num if multirun else 0, "requested": requested(cfg), "effective": {},
        "config": OmegaConf.to_container(cfg, resolve=True), "env": host_env(), "metrics": {}, "step_ms": [],
    }
    try:
        results["config"]["run"]["device"] = resolve_device(cfg.run.device)
        validate(cfg, results["config"]["run"]["device"])
    except ConfigError as exc:
        if not multirun:  # nothing is created: say why and stop
            print(f"b200lab: {exc}", file=sys.stderr)
            raise SystemExit(2)
        results.update(status="error", error=str(exc))
    OmegaConf.save(OmegaConf.create(results["config"]), job_dir / "config.yaml")

    tracker = _open_run(cfg, results, multirun)
    interrupted = False
    if results["status"] == "ok":
        print(f"b200lab: {point} -> {job_dir}", flush=True)
        if tracker:
            tracker.start_system_metrics(results["mlflow"]["run_id"])
        try:
            interrupted = _measure(cfg, job_dir, results)
        finally:
            if tracker:
                tracker.stop_system_metrics()
    results_path = results_io.write(job_dir, results)

    if tracker:
        try:
            publish(tracker, results["mlflow"]["run_id"], results, job_dir)
            results["mlflow"]["synced"] = True
        except Exception as exc:  # kept in results.json; `b200lab sync` retries
            results["mlflow"]["error"] = f"MLflow: {type(exc).__name__}: {exc}"
        results_io.write(job_dir, results)
    if not results["mlflow"]["synced"]:
        session.unsynced.append(results_path)
    session.statuses.append(results["status"])
    print(one_line(results), flush=True)
    if interrupted:
        raise KeyboardInterrupt
    return results


def _open_run(cfg: DictConfig, results: dict, multirun: bool) -> Optional[Tracker]:
    """Create the job's MLflow run (params and requested tags) if the store answers; record in
    results["mlflow"] either way."""
    uri = resolve_uri(cfg.tracking.uri)
    info = results["mlflow"] = {"tracking_uri": uri, "experiment_id": None, "run_id": None, "parent_run_id": None, "synced": False, "error": None}
    problem = session.probe_once(uri, cfg.tracking.probe_timeout_s)
    if problem:
        info["error"] = problem
        return None
    try:
        tracker = Tracker(uri, cfg.tracking.experiment, cfg.tracking.system_metrics)
        parent = _parent_run_id(multirun)
        run_id = tracker.create_run(run_name(cfg), {"status": "running", **{f"requested.{k}": v for k, v in results["requested"].items()}}, parent)
        tracker.log_params(run_id, flatten(results["config"]))
    except Exception as exc:  # a store that fails after the probe: keep measuring
        info["error"] = f"MLflow: {type(exc).__name__}: {exc}"
        return None
    info.update(experiment_id=tracker.experiment_id, run_id=run_id, parent_run_id=parent)
    return tracker


def _measure(cfg: DictConfig, job_dir: Path, results: dict) -> bool:
    """Launch the ranks and fold their reports into results; True if interrupted."""
    outcome = launch(job_dir, cfg, job_dir / "job.log")
    profile_notes = {**outcome.profile, **(outcome.ranks[0].get("profile", {}) if outcome.ranks else {})}
    if profile_notes:
        results["profile"] = profile_notes
    if outcome.ranks:
        agg = aggregate(outcome.ranks)
        results.update(status=agg["status"], error=agg["error"], effective=agg["effective"], metrics=agg["metrics"],
                       step_ms=agg["step_ms"], measurement=agg["info"])
        results["env"].update(agg["env"])
        if agg["unaggregated"]:
            results["unaggregated_metrics"] = agg["unaggregated"]
    else:
        results.update(status="error", error=f"no rank reported (exit code {outcome.returncode}); last output:\n{outcome.log_tail[-1500:]}")
    if outcome.interrupted:
        results["status"] = "interrupted"
    return outcome.interrupted
