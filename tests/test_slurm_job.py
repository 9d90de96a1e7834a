"""The SLURM job script's per-node path (experiments/scripts/slurm_node.sh), run as srun would run
it on two nodes: two processes on this machine, each told only what SLURM tells a node (its
$SLURM_NODEID, $SLURM_NNODES) and what the batch script exports (node 0's address and port, the
shared job dir). One gloo rank per node; node 0 records the job from both ranks."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support import FAST, cli_env, results_files, runs

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "experiments" / "scripts"


def test_the_batch_script_runs_one_task_per_node_through_the_node_script():
    text = (SCRIPTS / "slurm_multinode.sbatch").read_text()
    header = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, flags=re.M))
    assert header["ntasks-per-node"] == "1"  # torchrun, not srun, starts the ranks of a node
    assert re.search(r"^srun .*bash experiments/scripts/slurm_node\.sh \"\$@\"$", text, flags=re.M)
    for exported in ("MASTER_ADDR", "MASTER_PORT", "B200LAB_JOB_DIR"):
        assert re.search(rf"^export {exported}=", text, flags=re.M)
    for script in ("slurm_multinode.sbatch", "slurm_node.sh"):
        subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=True)


def _node(node: int, port: int, job_dir: Path, store: dict, tmp_path: Path, args: list[str]) -> subprocess.Popen:
    env = cli_env(store)
    env.update(
        SLURM_NNODES="2",
        SLURM_NODEID=str(node),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        B200LAB_JOB_DIR=str(job_dir),
        PYTHON=sys.executable,
    )
    return subprocess.Popen(
        ["bash", str(SCRIPTS / "slurm_node.sh"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.e2e
def test_two_nodes_from_slurms_environment_record_one_job(tmp_path, store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job_dir = tmp_path / "job"
    args = ["model=tiny", "workload=forward", "parallelism=ddp", "parallelism.nproc=2", *FAST]
    nodes = [_node(n, port, job_dir, store, tmp_path, args) for n in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "node 1: running this node's ranks; node 0 records the job" in outputs[1]
    (record,) = results_files(job_dir)
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["world_size"] == 2
    assert record["requested"]["parallelism"] == "ddp nproc=2 nnodes=2"
    assert record["config"]["parallelism"]["nnodes"] == 2
    (run,) = runs(store["MLFLOW_TRACKING_URI"])
    assert run.info.run_id == record["mlflow"]["run_id"]


def test_the_node_script_names_what_slurm_did_not_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "B200LAB_JOB_DIR"))}
    done = subprocess.run(
        ["bash", str(SCRIPTS / "slurm_node.sh"), "model=tiny"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0 and "SLURM_NNODES: set by SLURM" in done.stderr
