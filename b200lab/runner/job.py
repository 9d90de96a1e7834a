"""One sweep point, in the parent process: validate, open its MLflow run, launch, aggregate,
write results.json, then publish it. Nothing measured is lost to a later failure.

Everything a later step needs (the sweep's parent run, this job's outcome) is read from or
written to files, so the job runs the same under any Hydra launcher."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from b200lab.core.machine import ConfigError, resolve_device
from b200lab.core.registry import config_class
from b200lab.core.validation import validate
from b200lab.measure.environment import host_env
from b200lab.parallel.rendezvous import this_node
from b200lab.records import results as results_io
from b200lab.records.aggregate import aggregate
from b200lab.records.tracking import Tracker, flatten, probe, publish, resolve_uri
from b200lab.reports.summary import one_line
from b200lab.runner import progress, sweep
from b200lab.runner.launch import launch
from b200lab.runner.staging import stage_inputs


def requested(cfg: DictConfig) -> dict:
    return {
        "precision": cfg.precision.name,
        "attention": cfg.attention.name,
        "parallelism": requested_layout(cfg.parallelism),
        "device": cfg.run.device,
        "compile": cfg.compile.name,
        "workload": cfg.workload.name,
    }


def requested_layout(parallelism) -> str:
    """The layout as asked: ``ddp nproc=2``, or for a mesh (nproc derived) ``tp tp=2 dp=1``."""
    if parallelism.get("nproc") is None and "tp" in parallelism:
        words = [f"tp={parallelism.tp}", f"dp={parallelism.dp}"]
    else:
        words = [f"nproc={parallelism.nproc}"]
    if int(parallelism.get("nnodes") or 1) > 1:
        words.append(f"nnodes={parallelism.nnodes}")
    return " ".join([parallelism.name, *words])


def run_name(cfg) -> str:
    """model-workload-seq-precision-attention, from the options as chosen (an option that cannot
    be resolved shows as typed, so a failed point still gets its MLflow run)."""
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    parts = [
        (tree.get(g) or {}).get("name", "?") if isinstance(tree.get(g), dict) else "?"
        for g in ("model", "workload", "seq", "precision", "attention")
    ]
    return "-".join(str(p) for p in parts)


def run_job(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    sweep_dir = Path(str(hc.sweep.dir)).absolute() if hc.mode == RunMode.MULTIRUN else None
    try:
        return _run(cfg, hc, sweep_dir)
    except KeyboardInterrupt:  # outside the measurement (that one is handled in _run): still end the sweep
        if sweep_dir:
            sweep.finish(sweep_dir, interrupted=True)
        raise


def _run(cfg: DictConfig, hc, sweep_dir: Path | None) -> dict:
    job_dir = Path(hc.runtime.output_dir)
    record = sweep.read_parent(sweep_dir) if sweep_dir else None
    point = " ".join(OmegaConf.to_container(hc.overrides.task, resolve=False)) or "(defaults)"  # as typed, unresolved
    started = time.monotonic()
    progress.say(sweep_dir, hc.job.num if sweep_dir else 0, point, "starts")
    try:  # an interpolation that cannot resolve or a group left empty is a configuration error
        resolved, asked, unresolvable = (
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True),
            requested(cfg),
            None,
        )
    except OmegaConfBaseException as exc:
        resolved, asked = OmegaConf.to_container(cfg, resolve=False), {}
        key = getattr(exc, "full_key", None)
        unresolvable = ConfigError(f"invalid configuration:\n  - {key + ': ' if key else ''}{str(exc).splitlines()[0]}")
    results: dict = {
        "schema_version": results_io.SCHEMA_VERSION,
        "status": "ok",
        "error": None,
        "point": point,
        "job_num": hc.job.num if sweep_dir else 0,
        "sweep_id": (record or {}).get("sweep_id"),
        "requested": asked,
        "effective": {},
        "config": resolved,
        "env": host_env(),
        "metrics": {},
        "step_ms": [],
        "started_at_ms": results_io.now_ms(),
    }
    try:
        if unresolvable:
            raise unresolvable
        device = resolve_device(cfg.run.device)
        completed = validate(cfg, device)
        if completed is not None:  # the config with each component's defaults filled in
            results["config"] = OmegaConf.to_container(completed, resolve=True)
        results["config"]["run"]["device"] = device
        staging = stage_inputs(
            completed, config_class("workload", completed.workload._target_), job_dir
        )  # e.g. a checkpoint
        if staging:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(staging))
    except ConfigError as exc:
        if not sweep_dir:  # nothing is left behind: say why and stop
            print(f"b200lab: {exc}", file=sys.stderr)
            _remove_refused(job_dir)
            raise SystemExit(2) from None
        results.update(status="error", error=str(exc))
    node = _node_rank(results)
    if node:  # node 0 writes the job dir's config.yaml (the ranks of every node read it) and results
        return _run_other_node(cfg, job_dir, results, node)
    OmegaConf.save(OmegaConf.create(results["config"]), job_dir / "config.yaml")

    run = RunRequest(
        resolve_uri(cfg.tracking.uri),
        run_name(cfg),
        results["requested"],
        results["config"],
        results["env"].get("git_sha"),
        results["started_at_ms"],
        sweep_dir,
    )
    interrupted = False
    # a job whose ranks run in other processes opens its run while they start: importing MLflow and
    # opening its store take seconds the parent would otherwise spend before launching them. An
    # inline rank runs in this process, where that work would share the interpreter with its timing.
    opening = RunOpening(cfg, run, system_metrics=results["status"] == "ok")
    if results["status"] != "ok" or cfg.run.launcher == "inline":
        opening.wait()
    try:
        if results["status"] == "ok":
            print(f"b200lab: {point} -> {job_dir}", flush=True)
            interrupted = _measure(cfg, job_dir, results)
    finally:
        if not opening.done():  # a slow store: what was measured is on disk before waiting for it
            results["mlflow"] = opening.pending()
            results_io.write(job_dir, {**results, "ended_at_ms": results_io.now_ms()})
        tracker, results["mlflow"] = opening.wait()
        if tracker:
            tracker.stop_system_metrics()
    _save_and_publish(tracker, results, job_dir)
    print(one_line(results), flush=True)
    progress.say(
        sweep_dir, hc.job.num if sweep_dir else 0, point, f"{results['status']} in {time.monotonic() - started:.1f} s"
    )
    if interrupted:
        print("\nb200lab: interrupted; what was measured is kept (status interrupted, MLflow KILLED)", file=sys.stderr)
        if sweep_dir:
            sweep.finish(sweep_dir, interrupted=True)
        raise SystemExit(130)
    return results


def _remove_refused(job_dir: Path) -> None:
    """A refused single run leaves nothing: what Hydra and the lab made in its dir (.hydra, the empty
    job log, the claim, staged inputs) goes, then the dir and its empty parents up to the working
    directory. Anything else found there (a reused hydra.run.dir) stays."""
    import shutil

    from b200lab.runner.dir_claim import CLAIM

    for name in (".hydra", "inputs"):
        shutil.rmtree(job_dir / name, ignore_errors=True)
    for path in (job_dir / CLAIM, *job_dir.glob("*.log")):
        if path.name == CLAIM or path.stat().st_size == 0:
            path.unlink(missing_ok=True)
    stop = Path.cwd().absolute()
    for folder in (job_dir.absolute(), *job_dir.absolute().parents):
        if folder == stop or stop not in folder.parents:
            break
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


def _node_rank(results: dict) -> int:
    """This machine's node rank in a multi-node job (0 for a one-node job or a config error)."""
    if results["status"] != "ok":
        return 0
    return this_node(OmegaConf.create(results["config"]["parallelism"]))


def _run_other_node(cfg: DictConfig, job_dir: Path, results: dict, node: int) -> dict:
    """Node ``node`` > 0 of a multi-node job runs its share of the ranks and records nothing:
    node 0 opens the job's one MLflow run and writes results.json from every rank's file in the
    shared job dir."""
    print(f"b200lab: node {node}: running this node's ranks; node 0 records the job ({job_dir})", flush=True)
    outcome = launch(job_dir, cfg, job_dir / f"job.node{node}.log", OmegaConf.create(results["config"]["parallelism"]))
    ok = outcome.returncode == 0 and not (outcome.interrupted or outcome.timed_out)
    print(
        f"b200lab: node {node}: ranks {'finished' if ok else f'ended with exit code {outcome.returncode}'}", flush=True
    )
    if outcome.interrupted or not ok:
        raise SystemExit(130 if outcome.interrupted else 1)
    return {**results, "node_rank": node}


def _save_and_publish(tracker: Tracker | None, results: dict, job_dir: Path) -> None:
    """results.json first; the copy logged to MLflow is the final one (synced, with its run ids);
    if the upload fails it is rewritten unsynced, with the reason, for `b200lab sync`."""
    results["ended_at_ms"] = results_io.now_ms()
    if not tracker:
        results_io.write(job_dir, results)
        return
    results["mlflow"].update(synced=True, error=None)
    results_io.write(job_dir, results)
    try:
        publish(tracker, results["mlflow"]["run_id"], results, job_dir)
    except Exception as exc:
        results["mlflow"].update(synced=False, error=f"MLflow: {type(exc).__name__}: {exc}")
        results_io.write(job_dir, results)


@dataclass(frozen=True)
class RunRequest:
    """What the job's MLflow run is created with, taken before the ranks start."""

    uri: str
    name: str
    requested: dict
    config: dict
    git_sha: str | None
    started_at_ms: int
    sweep_dir: Path | None


def _unsynced(uri: str, error: str | None = None) -> dict:
    """results["mlflow"] of a job without its MLflow run (yet): `b200lab sync` creates it later."""
    return {
        "tracking_uri": uri,
        "experiment_id": None,
        "run_id": None,
        "parent_run_id": None,
        "synced": False,
        "error": error,
    }


class RunOpening:
    """The job's MLflow run, opened in a daemon thread (:func:`_open_run`); ``wait()`` gives
    (the tracker or None, results["mlflow"]). Whatever goes wrong there is the record's error, as
    a store that fails is: the measurement goes on."""

    def __init__(self, cfg: DictConfig, run: RunRequest, system_metrics: bool):
        self.run = run
        self._result: tuple[Tracker | None, dict] | None = None
        self._thread = threading.Thread(
            target=self._open, args=(cfg, run, system_metrics), name="b200lab-mlflow", daemon=True
        )
        self._thread.start()

    def _open(self, cfg: DictConfig, run: RunRequest, system_metrics: bool) -> None:
        try:
            self._result = _open_run(cfg, run, system_metrics)
        except Exception as exc:
            self._result = None, _unsynced(run.uri, f"MLflow: {type(exc).__name__}: {exc}")

    def done(self) -> bool:
        return not self._thread.is_alive()

    def pending(self) -> dict:
        return _unsynced(self.run.uri, "the MLflow run was still being opened when the job ended")

    def wait(self) -> tuple[Tracker | None, dict]:
        self._thread.join()
        assert self._result is not None
        return self._result


def _open_run(cfg: DictConfig, run: RunRequest, system_metrics: bool = False) -> tuple[Tracker | None, dict]:
    """(the tracker, results["mlflow"]): the job's MLflow run created (params and requested tags) if
    the store answers, with MLflow's system metrics started when asked; the reason in the record if not."""
    problem = probe(run.uri, cfg.tracking.probe_timeout_s)
    if problem:
        print(
            f"b200lab: {problem}; measuring anyway, results.json is kept; `b200lab sync` uploads it to {run.uri} later",
            flush=True,
        )
        return None, _unsynced(run.uri, problem)
    parent = sweep.parent_run(run.sweep_dir).get("run_id") if run.sweep_dir else None
    try:
        tracker = Tracker(run.uri, cfg.tracking.experiment, cfg.tracking.system_metrics)
        run_id = tracker.create_run(
            run.name,
            {"status": "running", **{f"requested.{k}": v for k, v in run.requested.items()}},
            parent,
            git_sha=run.git_sha,
            start_ms=run.started_at_ms,
        )
        tracker.log_params(run_id, flatten(run.config))
    except Exception as exc:  # a store that fails after the probe: keep measuring
        return None, _unsynced(run.uri, f"MLflow: {type(exc).__name__}: {exc}")
    info = {**_unsynced(run.uri), "experiment_id": tracker.experiment_id, "run_id": run_id, "parent_run_id": parent}
    if system_metrics:
        tracker.start_system_metrics(run_id)
    return tracker, info


def _measure(cfg: DictConfig, job_dir: Path, results: dict) -> bool:
    """Launch the ranks and fold their reports into results; True if interrupted by the user."""
    outcome = launch(job_dir, cfg, job_dir / "job.log", OmegaConf.create(results["config"]["parallelism"]))
    profile_notes = {**outcome.profile, **(outcome.ranks[0].get("profile", {}) if outcome.ranks else {})}
    if profile_notes:
        results["profile"] = profile_notes
    killed = "; ".join(outcome.killed.values())
    if outcome.ranks:
        agg = aggregate(outcome.ranks)
        results.update(
            status=agg["status"],
            error=agg["error"],
            effective=agg["effective"],
            metrics=agg["metrics"],
            step_ms=agg["step_ms"],
            measurement=agg["info"],
        )
        if agg["curves"]:
            results["curves"] = agg["curves"]
        results["env"].update(agg["env"])
        if agg["unaggregated"]:
            results["unaggregated_metrics"] = agg["unaggregated"]
        if killed:  # the signal first; the ranks it took down with it after
            kept = "; the steps timed before are kept" if any(r.get("partial") for r in outcome.ranks) else ""
            others = [
                f"rank {r['rank']}: {r['error']}" for r in outcome.ranks if r.get("error") and not r.get("partial")
            ]
            results.update(status="error", error="; ".join([killed + kept, *others]))
    else:
        why = killed or f"no rank reported (exit code {outcome.returncode})"
        results.update(status="error", error=f"{why}; last output:\n{outcome.log_tail[-1500:]}")
    if outcome.timed_out:
        n = results["metrics"].get("n_steps", len(results["step_ms"]))
        results.update(
            status="error",
            error=f"timeout: the job exceeded run.timeout_s={float(cfg.run.timeout_s):g} s and was stopped "
            f"({n} timed steps kept)",
        )
    elif outcome.interrupted:
        results["status"] = "interrupted"
    return outcome.interrupted
