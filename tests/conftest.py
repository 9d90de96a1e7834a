"""Shared helpers: the real CLI as a subprocess, real sqlite MLflow stores in temp dirs.

Creating a sqlite store runs MLflow's schema migrations (8-10 s on two cores), so the session
builds one store with the ``b200lab`` experiment and each test gets a copy of that file
(``store``), with the experiment's artifact location moved into the test's own directory.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAST = ["seq=short", "workload.warmup_steps=1", "workload.steps=3"]
INLINE = "run.launcher=inline"  # where torchrun is not what a test is about


def cli_env(env: dict | None = None) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "B200LAB_GIT_SHA")}
    full.update(env or {})
    return full


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "b200lab", *args], cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=timeout)
    proc.output = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    return proc


def popen_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """The CLI in the background, stdout and stderr merged into one text pipe."""
    return subprocess.Popen([sys.executable, "-m", "b200lab", *args], cwd=cwd, env=cli_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(autouse=True)
def _seeded():
    """Every random source a test may touch starts from the same seed."""
    import numpy as np

    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def template_store(tmp_path_factory) -> Path:
    """One migrated sqlite store with the b200lab experiment, built once per session."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("template_store")
    path = root / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").create_experiment("b200lab", artifact_location=str(root / "mlruns" / "1"))
    return path


def copy_store(template: Path, directory: Path) -> str:
    """A copy of the template store in ``directory``; its artifacts go to ``directory``/mlruns."""
    path = directory / "mlflow.db"
    shutil.copyfile(template, path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (str(template.parent), str(directory)))
    return f"sqlite:///{path}"


@pytest.fixture
def store(tmp_path: Path, template_store: Path) -> dict:
    """A ready sqlite tracking store for this test; pass as env= to run_cli."""
    return {"MLFLOW_TRACKING_URI": copy_store(template_store, tmp_path)}


def runs(uri: str, experiment: str = "b200lab") -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def parents_and_children(uri: str) -> tuple[list, list]:
    all_runs = runs(uri)
    return ([r for r in all_runs if "mlflow.parentRunId" not in r.data.tags],
            [r for r in all_runs if "mlflow.parentRunId" in r.data.tags])


def results_files(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))]
