"""A shared tracking store end to end: a throw-away PostgreSQL cluster, `mlflow server` on it with
an artifact root (artifacts proxied through the server), a 3-point sweep whose server is killed
mid-sweep and restarted before the sweep ends, then `b200lab sync`: every point ends up in the
store under the sweep's parent with its metrics and artifacts, nothing lost.

Needs PostgreSQL's server binaries (`.ci/install_postgres.sh` installs them on CI) and psycopg 3
(the dev extra: SQLAlchemy 2's driver for postgresql://). As root the cluster runs as the `postgres`
user (postgres refuses root)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from support import FAST, INLINE, cli_env, free_port, popen_cli, run_cli

pytestmark = pytest.mark.e2e


def pg_bin(name: str):
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def as_db_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres():
    """postgresql://lab@127.0.0.1:PORT/mlflow on a fresh cluster in a temp dir; stopped and removed after."""
    pytest.importorskip("psycopg", reason="psycopg 3 (the dev extra; SQLAlchemy's driver for postgresql://) is needed")
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries not found (initdb, pg_ctl); .ci/install_postgres.sh installs them")
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        pytest.skip(
            "running as root and there is no `postgres` user to run the server as (.ci/install_postgres.sh creates it)"
        )
    root = Path(tempfile.mkdtemp(prefix="b200lab-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run(
        as_db_user([initdb, "-D", str(data), "-U", "lab", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        as_db_user(
            [
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(root / "pg.log"),
                "-w",
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="lab", dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")  # outside a transaction, hence autocommit
        yield f"postgresql://lab@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(as_db_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


class MlflowServer:
    """`mlflow server` in its own process group (it forks workers), restartable on one port."""

    def __init__(self, backend: str, artifacts: Path, log: Path):
        self.port, self.backend, self.artifacts, self.log = free_port(), backend, artifacts, log
        self.proc = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> None:
        mlflow = str(Path(sys.executable).parent / "mlflow")
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [
                    mlflow,
                    "server",
                    "--backend-store-uri",
                    self.backend,
                    "--artifacts-destination",
                    str(self.artifacts),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # no job runner: its huey consumers (4 processes) only take CPU from the test here
                env=cli_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server did not answer in {timeout_s} s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server and its workers: a crash, not a shutdown."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_a_sweep_survives_its_tracking_server_restarting_and_sync_completes_it(postgres, tmp_path):
    from mlflow import MlflowClient

    server = MlflowServer(postgres, tmp_path / "artifact_root", tmp_path / "server.log")
    server.start()
    try:
        # failures fast: no HTTP retries while the server is down
        env = {
            "MLFLOW_TRACKING_URI": server.uri,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
        }
        sweep = popen_cli(["-m", "seq.batch=2,3,4", *FAST, INLINE], tmp_path, env)
        lines, killed, restarted = [], False, False
        for line in sweep.stdout:
            lines.append(line)
            if "b200lab: seq.batch=3" in line and "->" in line and not killed:
                server.kill()  # mid-sweep: point 1 has its run and is measuring
                killed = True
            elif "b200lab: seq.batch=4" in line and "->" in line and not restarted:
                server.start()  # back while point 2 runs
                restarted = True
        output = "".join(lines)
        assert sweep.wait(timeout=300) == 3, output  # some results could not reach the store
        assert killed and restarted, output
        results = [json.loads(p.read_text()) for p in sorted((tmp_path / "multirun").rglob("results.json"))]
        assert [r["status"] for r in results] == ["ok"] * 3
        assert not all(r["mlflow"]["synced"] for r in results)

        proc = run_cli(["sync", "multirun"], tmp_path, env)
        assert proc.returncode == 0, proc.output
        assert "nothing to upload" in run_cli(["sync", "multirun"], tmp_path, env).stdout

        client = MlflowClient(tracking_uri=server.uri)
        exp = client.get_experiment_by_name("b200lab")
        every = client.search_runs([exp.experiment_id])
        parents = [r for r in every if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in every if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert sorted(c.data.params["seq.batch"] for c in children) == ["2", "3", "4"]
        for child in children:
            assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert child.info.status == "FINISHED" and child.data.metrics["tokens_per_s"] > 0
            assert "results.json" in {a.path for a in client.list_artifacts(child.info.run_id)}
        # the artifacts live under the server's artifact root, proxied through it
        assert len(list((tmp_path / "artifact_root").rglob("results.json"))) == 3
        for r in (json.loads(p.read_text()) for p in (tmp_path / "multirun").rglob("results.json")):
            assert r["mlflow"]["synced"] and r["mlflow"]["run_id"] in {c.info.run_id for c in children}
    finally:
        server.kill()
