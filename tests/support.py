"""Helpers the tests share: the real CLI as a subprocess, real sqlite MLflow stores, Hydra
composition of the lab's config, and the committed records. Fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
MEASUREMENTS = REPO / "docs" / "measurements"
FAST = ["debug=fast"]  # conf/debug/fast.yaml: the short sequence, one warm-up step, three timed steps
INLINE = "run.launcher=inline"  # where torchrun is not what a test is about


def cli_env(env: dict | None = None) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "B200LAB_GIT_SHA")}
    full.update(env or {})
    return full


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "b200lab", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    proc.output = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    return proc


def _default_sigint() -> None:
    """In the child before exec: a test suite started in the background (``nohup``, ``cmd &``) runs
    with SIGINT ignored, which every child inherits, and Python then installs no Ctrl-C handler.
    The tests that press Ctrl-C need the disposition an interactive user's process has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """The CLI in the background, stdout and stderr merged into one text pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "b200lab", *args],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,
    )


def copy_store(template: Path, directory: Path) -> str:
    """A copy of the template store in ``directory``; its artifacts go to ``directory``/mlruns."""
    path = directory / "mlflow.db"
    shutil.copyfile(template, path)
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)",
            (str(template.parent), str(directory)),
        )
    return f"sqlite:///{path}"


def runs(uri: str, experiment: str = "b200lab") -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def parents_and_children(uri: str) -> tuple[list, list]:
    all_runs = runs(uri)
    return (
        [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags],
        [r for r in all_runs if "mlflow.parentRunId" in r.data.tags],
    )


def results_files(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))]


def compose(overrides: list[str], return_hydra_config: bool = False):
    """The lab's config composed with these overrides (Hydra's compose API; nothing instantiated).
    Hydra stays initialised for the session: its config repository is read once."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from b200lab.core.schema import register_configs

    register_configs()
    if not GlobalHydra.instance().is_initialized():
        initialize_config_dir(config_dir=str(CONF), version_base="1.3")
    return hydra_compose("config", overrides=overrides, return_hydra_config=return_hydra_config)


def run_record(run_id: str) -> dict:
    found = [
        r
        for r in (json.loads(p.read_text()) for p in MEASUREMENTS.rglob("*results.json"))
        if (r.get("mlflow") or {}).get("run_id", "").startswith(run_id)
    ]
    assert len(found) == 1, f"run {run_id}: {len(found)} files"
    return found[0]


def metric_of(run_id: str, metric: str) -> float:
    return run_record(run_id)["metrics"][metric]


def one_line(text: str) -> str:
    """Prose with its line breaks and indents as single spaces, so a rewrapped paragraph still matches."""
    return " ".join(text.split())


def check_context(job, device: str = "cpu", training: bool = False):
    """The CheckContext validation hands each config class's ``validate``: the job and the config
    class of every group's chosen option."""
    from b200lab.core.component import CheckContext
    from b200lab.core.registry import GROUPS, config_class

    specs = {g: config_class(g, job[g]._target_) for g in GROUPS if g in job and job[g].get("_target_")}
    return CheckContext(cfg=job, device=device, training=training, specs=specs)


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (a rendezvous or a server's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_records(root: Path) -> list[tuple[Path, dict, list[dict]]]:
    """(job folder, its results.json, its ranks' reports in rank order) for every job under ``root``."""
    out = []
    for path in sorted(Path(root).rglob("results.json")):
        reports = [json.loads(p.read_text()) for p in sorted((path.parent / "ranks").glob("rank?.json"))]
        out.append((path.parent, json.loads(path.read_text()), reports))
    return out
