"""Faults a careful user can cause, each probed through the real CLI: numbers that are not numbers,
a result meant for one store, a killed torchrun, a claim nobody holds, a full disk, a refused
config. (Code that a config or the working directory could run: test_security.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid

import psutil
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from b200lab.core.machine import ConfigError
from b200lab.core.validation import validate
from support import FAST, INLINE, compose, popen_cli, results_files, run_cli, runs


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["workload=train", "workload.options.lr=nan"], "workload.options.lr=nan: not a number"),
        (["workload=train", "workload.options.lr=-1"], "workload.options.lr=-1.0: must be a positive learning rate"),
        (["workload=train", "workload.options.lr=0"], "workload.options.lr=0.0: must be a positive learning rate"),
        (
            ["workload=serve", "workload.options.arrival=gamma", "workload.options.burstiness=nan"],
            "workload.options.burstiness=nan: not a number",
        ),
        (["workload=serve", "workload.options.duration_s=inf"], "workload.options.duration_s=inf: must be finite"),
        (["run.timeout_s=-1"], "run.timeout_s=-1.0: must be a positive number of seconds"),
        (["run.timeout_s=nan"], "run.timeout_s=nan: not a number"),
        (["workload.min_time_s=inf"], "workload.min_time_s=inf: must be finite"),
    ],
)
def test_non_finite_and_negative_numbers_are_refused_at_validation(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose(["seq=short", *overrides]), "cpu")
    assert message in str(err.value)


def test_an_infinite_rate_is_still_every_request_at_t0():
    validate(compose(["seq=short", "workload=serve", "workload.options.qps=inf"]), "cpu")


@pytest.mark.e2e
def test_a_diverging_run_is_an_error_that_names_the_step(tmp_path, store):
    proc = run_cli(
        ["workload=train", "workload.options.lr=1e30", *FAST, "workload.warmup_steps=4", INLINE], tmp_path, store
    )
    assert proc.returncode == 1, proc.output
    [res] = results_files(tmp_path / "outputs")
    assert res["status"] == "error" and "diverged at step " in res["error"] and "loss nan" in res["error"].lower()
    step = int(res["error"].split("diverged at step ")[1].split()[0])
    assert 1 <= step <= 4  # caught at the end of the warm-up, before anything was timed
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED"


@pytest.mark.e2e
def test_sync_uploads_to_the_store_each_result_records(tmp_path, store):
    """A run measured against a store that was down is uploaded there by a plain `b200lab sync`
    from another directory, not into a new ./mlflow.db."""
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    proc = run_cli([*FAST, INLINE, f"tracking.uri={down}", "tracking.probe_timeout_s=0.5"], tmp_path, store)
    assert proc.returncode == 3 and f"{down}: tracking server {down} did not answer" in proc.stderr, proc.output
    [res] = results_files(tmp_path / "outputs")
    path = next((tmp_path / "outputs").rglob("results.json"))
    res["mlflow"]["tracking_uri"] = store[
        "MLFLOW_TRACKING_URI"
    ]  # the store comes back, at the address it was meant for
    path.write_text(json.dumps(res))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in store.items() if k != "MLFLOW_TRACKING_URI"}
    synced = run_cli(["sync", str(tmp_path / "outputs")], elsewhere, env)
    assert synced.returncode == 0, synced.output
    assert not (elsewhere / "mlflow.db").exists()
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.data.tags["status"] == "ok"
    # uploaded later, the run still starts and ends when the job did, and its metrics are of that time
    assert res["started_at_ms"] < res["ended_at_ms"]
    assert (run.info.start_time, run.info.end_time) == (res["started_at_ms"], res["ended_at_ms"])
    history = MlflowClient(tracking_uri=store["MLFLOW_TRACKING_URI"]).get_metric_history(run.info.run_id, "step_ms")
    assert {m.timestamp for m in history} == {res["ended_at_ms"]}


@pytest.mark.e2e
def test_killing_torchrun_leaves_no_rank_running(tmp_path, store):
    p = popen_cli(["seq=short", "workload.steps=100000000", "workload.warmup_steps=1"], tmp_path, store)
    for line in p.stdout:
        if "timed" in line:
            break
    cli = psutil.Process(p.pid)
    torchrun = next(c for c in cli.children(recursive=True) if "torch.distributed.run" in " ".join(c.cmdline()))
    ranks = [c for c in torchrun.children(recursive=True) if "b200lab.runner.rank" in " ".join(c.cmdline())]
    assert ranks
    torchrun.send_signal(signal.SIGKILL)
    out = p.communicate(timeout=180)[0]
    assert p.returncode == 1, out
    gone, alive = psutil.wait_procs(ranks, timeout=10)
    assert not alive, f"ranks outlived their job: {alive}"
    assert "I/O operation on closed file" not in out
    [res] = results_files(tmp_path / "outputs")
    assert res["status"] == "error" and "torchrun was killed by SIGKILL" in res["error"]


@pytest.mark.e2e
def test_an_empty_claim_is_taken_over_with_a_notice(tmp_path, store):
    run_dir = tmp_path / "out"
    run_dir.mkdir()
    (run_dir / ".b200lab_claim").write_text("")
    proc = run_cli([*FAST, INLINE, f"hydra.run.dir={run_dir}"], tmp_path, store)
    assert proc.returncode == 0, proc.output
    assert "names no owner (empty or unreadable); taking it over" in proc.stderr
    assert (run_dir / "results.json").exists()


@pytest.mark.e2e
def test_a_full_disk_is_one_line_naming_the_path(tmp_path, store):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"needs a tmpfs of 16 KiB, and this user cannot mount one ({mounted.stderr.strip() or mounted.returncode})"
        )
    try:
        (disk / "filler").write_bytes(os.urandom(12 * 1024))
        proc = run_cli([*FAST, INLINE, f"hydra.run.dir={disk}/run"], tmp_path, store)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
    assert proc.returncode == 1, proc.output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert any(f"{disk}/run" in line and "No space left on device" in line for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    "overrides",
    [
        ["seq.batch=0"],
        ["workload=eval", "data=text", "model=byte_gpt", f"workload.options.checkpoint=run:{uuid.uuid4().hex}"],
    ],
)
def test_a_refused_config_leaves_nothing_behind(overrides, tmp_path, store):
    proc = run_cli(["seq=short", *overrides], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert not (tmp_path / "outputs").exists(), [str(p) for p in (tmp_path / "outputs").rglob("*")]
    assert runs(store["MLFLOW_TRACKING_URI"]) == []


def test_every_numeric_default_is_finite():
    """The check cannot be satisfied by accident: the composed defaults of every workload pass it."""
    for workload in ("forward", "train", "serve", "generate", "gemm", "hbm", "attention"):
        cfg = validate(compose(["seq=short", f"workload={workload}"]), "cpu")
        assert all(not isinstance(v, float) or v == v for v in _leaves(OmegaConf.to_container(cfg)))


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _leaves(value)
    else:
        yield tree
