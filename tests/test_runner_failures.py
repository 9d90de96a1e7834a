"""A job that outlives run.timeout_s, and a rank killed outright: each says what happened, keeps
the steps it timed, and fails the run (not a Ctrl-C)."""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from support import popen_cli, results_files, run_cli, runs

pytestmark = pytest.mark.e2e

LONG = ["seq=short", "workload.steps=100000000", "workload.warmup_steps=1"]


def test_timeout_is_an_error_not_an_interrupt(tmp_path, store):
    proc = run_cli(
        ["-m", "seq.batch=2", *LONG, "run.timeout_s=15"], tmp_path, store
    )  # ample for startup on a loaded machine
    assert proc.returncode == 1, proc.output
    [res] = results_files(tmp_path / "multirun")
    assert res["status"] == "error"
    assert res["error"].startswith("timeout: the job exceeded run.timeout_s=15 s")
    assert res["metrics"]["n_steps"] > 0 and len(res["step_ms"]) == res["metrics"]["n_steps"]
    statuses = {
        ("child" if "mlflow.parentRunId" in r.data.tags else "parent"): r for r in runs(store["MLFLOW_TRACKING_URI"])
    }
    assert statuses["child"].info.status == "FAILED" and statuses["child"].data.tags["error"].startswith("timeout:")
    assert statuses["parent"].info.status == "FAILED"
    assert "Ctrl-C" not in proc.output and "interrupted" not in proc.output


def _worker(cli_pid: int, timeout_s: float = 60) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in psutil.Process(cli_pid).children(recursive=True):
            try:
                if "b200lab.runner.rank" in " ".join(child.cmdline()) and "torch.distributed.run" not in " ".join(
                    child.cmdline()
                ):
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    raise AssertionError("no worker process found")


def test_a_rank_killed_by_sigkill_is_named_and_its_timed_steps_kept(tmp_path, store):
    p = popen_cli(LONG, tmp_path, store)
    seen = []
    for line in p.stdout:
        seen.append(line)
        if "timed" in line:
            break
    deadline = time.monotonic() + 60  # the worker checkpoints its timed steps every few seconds
    while not list((tmp_path / "outputs").rglob("rank0.partial.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    _worker(p.pid).send_signal(signal.SIGKILL)
    out = "".join(seen) + p.communicate(timeout=120)[0]
    assert p.returncode == 1, out
    [res] = results_files(tmp_path / "outputs")
    assert res["status"] == "error"
    assert "rank 0 was killed by SIGKILL (signal 9; often the kernel's out-of-memory killer)" in res["error"]
    assert "rank 0 was killed by SIGKILL" in out
    assert res["metrics"]["n_steps"] > 0 and len(res["step_ms"]) == res["metrics"]["n_steps"]
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED" and "SIGKILL" in run.data.tags["error"]
