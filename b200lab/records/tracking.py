"""MLflow, parent side only: a parent run per sweep, a child run per job.

A child run is opened before its job starts (so MLflow's system metrics cover the job) and
receives the job's numbers only from results.json, after that file is written. A store that
cannot be reached is detected at start with a short probe; the job still runs, results.json
keeps ``mlflow.synced: false`` and ``b200lab sync`` uploads it later.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from b200lab.records.store_lock import store_lock

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow's UI opens a "GenAI" experiment on its traces overview; ours are model development: the runs table
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# config keys that say how the lab ran, not what was measured: kept in config.yaml / results.json, not params
NOT_PARAMS = ("tracking.", "run.", "hydra.")
END_STATUS = {"ok": "FINISHED", "oom": "FINISHED", "error": "FAILED", "interrupted": "KILLED"}
# the metrics a user sorts points by, again under one prefix: they sort together in the runs table's
# column list and form one section of the chart view, ahead of the forty others
KEY_METRICS = {
    "tokens_per_s": "key/tokens_per_s",
    "mfu": "key/mfu",
    "step_ms_p50": "key/step_ms_p50",
    "peak_mem_allocated_gb": "key/peak_mem_gb",
}
# fail fast rather than after minutes of client retries when a server goes away mid-sweep
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def resolve_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def probe(uri: str, timeout_s: float) -> str | None:
    """None when the store looks usable, else why not. Takes at most about ``timeout_s``."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s)
        except urllib.error.HTTPError:
            return None  # the server answered
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"tracking server {uri} did not answer within {timeout_s:g} s ({reason})"
        return None
    if parsed.scheme == "sqlite":
        path = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
        if path is None or str(path) in ("", ":memory:"):
            return None
        return _writable_dir(path.parent, f"sqlite store {uri}")
    if parsed.scheme in ("", "file"):
        return _writable_dir(Path(parsed.path or uri), f"file store {uri}")
    return None  # databricks and other schemes: nothing cheap to probe


def _writable_dir(path: Path, what: str) -> str | None:
    path = path if str(path) else Path(".")
    existing = next((p for p in [path, *path.absolute().parents] if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK):
        return f"{what}: {existing or path} is not writable"
    return None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry for this uid (containers)
        return os.environ.get("USER") or str(os.getuid())


def source_tags(git_sha: str | None) -> dict:
    """MLflow's standard provenance tags, which its UI shows as the run's source and version."""
    return {
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "b200lab",
        "mlflow.source.git.commit": git_sha,
        "mlflow.user": _user(),
    }


class Tracker:
    def __init__(self, uri: str, experiment: str, system_metrics: bool = True):
        from mlflow import MlflowClient

        self.uri = uri
        self.system_metrics = system_metrics
        logging.getLogger("mlflow").setLevel(
            logging.WARNING
        )  # its INFO lines (system metrics started/stopped) drown the sweep's
        with store_lock(uri):  # the first use creates a new store's tables; see store_lock.py
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                exp.experiment_id if exp else self.client.create_experiment(experiment, tags=EXPERIMENT_KIND)
            )
            if exp and not any(k in exp.tags for k in EXPERIMENT_KIND):
                for key, value in EXPERIMENT_KIND.items():
                    self.client.set_experiment_tag(self.experiment_id, key, value)
        self._monitor = None

    def create_run(
        self,
        name: str,
        tags: dict,
        parent_run_id: str | None = None,
        git_sha: str | None = None,
        start_ms: int | None = None,
    ) -> str:
        """A run with ``tags`` plus the source tags; ``git_sha`` defaults to this checkout's. ``start_ms``
        is when the job began (a run uploaded later keeps it); MLflow takes now otherwise."""
        if git_sha is None:
            from b200lab.measure.environment import git_sha as current_sha

            git_sha = current_sha()
        tags = {k: str(v) for k, v in {**source_tags(git_sha), **tags}.items() if v is not None}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        return self.client.create_run(self.experiment_id, start_time=start_ms, tags=tags, run_name=name).info.run_id

    def run_status(self, run_id: str) -> str | None:
        """The run's MLflow status (RUNNING, FINISHED, ...), or None when this store lacks it."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.status
        except MlflowException:
            return None

    def log_params(self, run_id: str, params: dict) -> None:
        """The flattened config, less what describes the lab rather than the experiment (NOT_PARAMS, ``_target_``)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items() if experiment_param(k)]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(
        self,
        run_id: str,
        metrics: dict,
        step_ms: list[float] = (),
        curves: dict | None = None,
        at_ms: int | None = None,
    ) -> None:
        """Scalars at step 0; ``step_ms`` and each curve ({name: [[step, value], ...]}) as a history
        with their steps (a long curve is thinned evenly to 5000 points, its last one kept). Stamped
        ``at_ms`` (when the job ended, for an upload that comes later), else now."""
        from mlflow.entities import Metric

        now = at_ms or int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, 0)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        items += [Metric("step_ms", float(v), now, i) for i, v in enumerate(step_ms[:5000])]
        for name, points in (curves or {}).items():
            every = max(1, -(-(len(points) - 1) // 4999))
            items += [Metric(name, float(v), now, int(s)) for s, v in [*points[:-1:every], *points[-1:]]]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i : i + 1000])

    def log_datasets(self, run_id: str, inputs: list[tuple[dict, str]]) -> None:
        """Dataset inputs (b200lab/records/datasets.py), each with its context tag."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        if not inputs:
            return
        with store_lock(self.uri):  # MLflow gets-or-creates each dataset row in two steps; see store_lock.py
            self.client.log_inputs(
                run_id,
                datasets=[
                    DatasetInput(Dataset(**fields), [InputTag(MLFLOW_DATASET_CONTEXT, ctx)]) for fields, ctx in inputs
                ],
            )

    def set_tags(self, run_id: str, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None])

    def log_files(self, run_id: str, paths: list[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.exists():
                self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def start_system_metrics(self, run_id: str) -> None:
        if not self.system_metrics:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        try:
            self._monitor = SystemMetricsMonitor(run_id, sampling_interval=2, tracking_uri=self.uri)
            self._monitor.start()
        except Exception as exc:  # optional: psutil/NVML missing. Said, not hidden.
            print(f"b200lab: MLflow system metrics off ({type(exc).__name__}: {exc})")
            self._monitor = None

    def stop_system_metrics(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None

    def rename(self, run_id: str, name: str) -> None:
        self.client.update_run(run_id, name=name)

    def end(self, run_id: str, status: str, end_ms: int | None = None) -> None:
        self.client.set_terminated(run_id, status=END_STATUS.get(status, status), end_time=end_ms)


def with_key_metrics(metrics: dict) -> dict:
    """The job's metrics plus the KEY_METRICS it has, under their ``key/`` names."""
    return {**metrics, **{short: metrics[name] for name, short in KEY_METRICS.items() if name in metrics}}


def experiment_param(key: str) -> bool:
    return not key.startswith(NOT_PARAMS) and key.rsplit(".", 1)[-1] != "_target_"


def result_tags(results: dict) -> dict:
    """The tags every job run carries: status, requested vs effective, hardware, versions."""
    req, eff, env, cfg = results["requested"], results.get("effective", {}), results.get("env", {}), results["config"]
    eff_prec, eff_attn = eff.get("precision", {}), eff.get("attention", {})
    return {
        "status": results["status"],
        "point": results.get("point"),
        "job_num": results.get("job_num"),
        "preset": cfg.get("preset"),
        "model": cfg["model"]["name"],
        "workload": cfg["workload"]["name"],
        "seq": cfg["seq"]["name"],
        "data": (cfg.get("data") or {}).get("name"),
        "effective.corpus_sha256": ((eff.get("data") or {}).get("corpus") or {}).get("sha256"),
        "checkpoint.run_id": (eff.get("checkpoint") or {}).get("run_id"),
        "requested.precision": req.get("precision"),
        "requested.attention": req.get("attention"),
        "requested.parallelism": req.get("parallelism"),
        "requested.device": req.get("device"),
        "effective.precision": eff_prec.get("compute_dtype") or eff_prec.get("name"),
        "effective.peak_key": eff_prec.get("peak_key"),
        "effective.param_dtype": eff_prec.get("param_dtype"),
        "effective.master_dtype": eff_prec.get("master_dtype"),
        "effective.precision_reason": eff_prec.get("reason"),
        "effective.fp8_recipe": eff_prec.get("recipe"),
        "effective.fp8_modules": json.dumps(eff_prec["fp8_modules"], sort_keys=True)
        if eff_prec.get("fp8_modules")
        else None,
        "effective.moe_experts": (eff_prec.get("moe_experts") or {}).get("ran"),  # rowwise | te | bf16 under FP8
        "effective.attention": eff_attn.get("name"),
        "effective.attention_kernel": eff_attn.get("kernel"),
        "effective.attention_reason": eff_attn.get("reason"),
        "effective.compiled": eff.get("compiled"),
        "device": env.get("device"),
        "gpu": env.get("gpu"),
        "gpu_count": env.get("gpu_count"),
        "driver": env.get("driver"),
        "cuda": env.get("cuda"),
        "torch": env.get("torch"),
        "python": env.get("python"),
        "transformer_engine": env.get("transformer_engine"),
        "hostname": env.get("hostname"),
        "git_sha": env.get("git_sha"),
        "error": (results.get("error") or "")[:5000] or None,
        **results.get("measurement", {}),
        "profile": cfg.get("profile", {}).get("name"),
        "timing_comparable": "false (profiled under ncu)" if cfg.get("profile", {}).get("name") == "ncu" else None,
    }


def job_artifacts(job_dir: Path) -> list[Path]:
    return [
        job_dir / "config.yaml",
        job_dir / "results.json",
        job_dir / "job.log",
        job_dir / "ranks",
        job_dir / ".hydra",
        job_dir / "traces",
        job_dir / "artifacts",
        job_dir / "ncu_top_kernels.csv",
        job_dir / "ncu_raw.csv",
        job_dir / "nsys_report.nsys-rep",
    ]


def child_name(results: dict, job_dir: Path) -> str:
    """What the point varied and what it ran. The sweep's other points are not known yet, so what
    varied is guessed from the command line in the sweep's record (sweep.py renames every child
    when the sweep ends, from all its points)."""
    from b200lab.records.points import point_name, swept_keys

    record = job_dir.parent / "mlflow_parent.json"
    typed = (json.loads(record.read_text()).get("tags") or {}).get("overrides") if record.exists() else None
    return point_name(results, swept_keys(results.get("point"), typed) if typed is not None else [])


def log_record(tracker: Tracker, run_id: str, results: dict, name: str, artifacts: list[Path], end_ms: int | None):
    """A results.json's metrics (stamped ``end_ms``), datasets and tags on its run, the run named and
    closed at ``end_ms`` with the job's status: what a live job, a sync and an import all send."""
    from b200lab.records.datasets import dataset_inputs

    metrics = with_key_metrics(results.get("metrics", {}))
    tracker.log_metrics(run_id, metrics, results.get("step_ms", []), results.get("curves"), end_ms)
    tracker.log_datasets(run_id, dataset_inputs(results))
    tracker.set_tags(run_id, result_tags(results))
    tracker.rename(run_id, name)
    tracker.log_files(run_id, artifacts)
    tracker.end(run_id, results["status"], end_ms)


def publish(tracker: Tracker, run_id: str, results: dict, job_dir: Path) -> None:
    """Send one job's results.json to its run, name it by what ran, close it with the job's status."""
    log_record(
        tracker, run_id, results, child_name(results, job_dir), job_artifacts(job_dir), results.get("ended_at_ms")
    )
