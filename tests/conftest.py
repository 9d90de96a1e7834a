"""Fixtures, and the rule that runs the ``gpu`` tier only where a GPU is (helpers: support.py).

Tiers (``--strict-markers``): unit tests carry no marker and run in-process (compose, validate
and refuse in this process, registration once per session); ``e2e`` tests start the CLI,
torchrun or a server; ``gpu`` tests need a CUDA GPU and are skipped, with that reason, on a
machine without one. ``python -m pytest -m "not e2e and not gpu"`` is the unit tier.

Creating a sqlite store runs MLflow's schema migrations (8-10 s on two cores), so the session
builds one store with the ``b200lab`` experiment and each test gets a copy of that file
(``store``), with the experiment's artifact location moved into the test's own directory.

Under pytest-xdist the cores are shared out among the processes the tests start: each CLI run,
rank or server gets ``OMP_NUM_THREADS`` = cores / workers (unless set already). Two workers each
running a rank with one OpenMP thread per core made their spinning threads take turns on the
cores: a 300-step training test took 140 s instead of 18 s on two cores. The workers' own torch
(imported first) keeps every core for the in-process tests.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from support import copy_store


def _share_cores_among_child_processes() -> None:
    import torch  # noqa: F401  (OpenMP reads the variable once, at load: this process keeps its threads)

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


_share_cores_among_child_processes()


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_xdist_make_scheduler(config, log):
    """The e2e tier is scheduled by file (xdist's loadfile): a file's tests share one worker, so a
    module-scoped fixture (a sweep, a server) is built once; under xdist's default the tests of one
    fixture could land on both workers and each built it. The unit tier keeps the default: by file
    it took 6:37 against 4:41 test by test (same loaded VM, 2026-12-07)."""
    if "e2e" in (config.getoption("markexpr") or "").replace("not e2e", ""):
        from xdist.scheduler import LoadFileScheduling

        return LoadFileScheduling(config, log)
    return None


def pytest_collection_modifyitems(config, items):
    if _cuda():
        return
    skip = pytest.mark.skip(
        reason="gpu tier: needs a CUDA GPU, and this machine has none (torch.cuda.is_available() is False)"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
    MlflowClient(tracking_uri=f"sqlite:///{path}").create_experiment(
        "b200lab", artifact_location=str(root / "mlruns" / "1")
    )
    return path


@pytest.fixture
def store(tmp_path: Path, template_store: Path) -> dict:
    """A ready sqlite tracking store for this test; pass as env= to run_cli."""
    return {"MLFLOW_TRACKING_URI": copy_store(template_store, tmp_path)}
