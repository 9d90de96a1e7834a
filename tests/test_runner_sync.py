"""`b200lab sync` after a tracking server died mid-sweep (a real `mlflow server` on localhost)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from support import INLINE, free_port, parents_and_children, popen_cli, results_files, run_cli

pytestmark = pytest.mark.e2e


def _start_server(db: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=open(log, "a"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.3)
    raise AssertionError(f"mlflow server did not start:\n{log.read_text()}")


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_sync_after_the_server_died_mid_sweep_reuses_the_runs_it_created(tmp_path, store):
    db = Path(store["MLFLOW_TRACKING_URI"][len("sqlite:///") :])
    port = free_port()
    # no client retries against the dead server: they only add backoff sleeps to the test
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    server = _start_server(db, port, tmp_path / "server.log")
    try:
        sweep = popen_cli(
            [
                "-m",
                "seq.batch=2,3",  # the first point is killed mid-run, the second runs with the server down
                "seq=short",
                "workload.min_time_s=3",
                "workload.steps=2",
                "workload.warmup_steps=1",
                "tracking.system_metrics=false",
                INLINE,
            ],
            tmp_path,
            env,
        )
        seen = []
        for line in sweep.stdout:
            seen.append(line)
            if "timed" in line:
                _kill(server)  # the first point's run exists and is RUNNING
                break
        out = "".join(seen) + sweep.communicate(timeout=600)[0]
        assert sweep.returncode == 3, out
        assert (
            "2 result(s) not in MLflow (" in out
            and "`b200lab sync` uploads each to the store its results.json records" in out
        )
        records = results_files(tmp_path / "multirun")
        assert [r["mlflow"]["run_id"] is not None for r in records] == [True, False]

        server = _start_server(db, port, tmp_path / "server.log")
        sync = run_cli(["sync"], tmp_path, env)
        assert sync.returncode == 0, sync.output
    finally:
        _kill(server)
    parents, children = parents_and_children(f"sqlite:///{db}")
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in (*parents, *children))
    synced = results_files(tmp_path / "multirun")
    assert synced[0]["mlflow"]["run_id"] == records[0]["mlflow"]["run_id"]  # the run it created, filled in
    assert all(r["mlflow"]["synced"] for r in synced)
