"""Bad input: the message the user sees and the exit code."""

from __future__ import annotations

import os

import pytest
import signal
import subprocess
import sys
import time

from conftest import FAST, results_files, run_cli, runs


def test_unknown_option_fails_at_composition(tmp_path, store):
    proc = run_cli(["model=nope"], tmp_path, store)
    assert proc.returncode == 1
    assert "Could not find 'model/nope'" in proc.output and "gpt_1b" in proc.output  # Hydra lists the options
    assert runs(store["MLFLOW_TRACKING_URI"]) == [] and not (tmp_path / "outputs").exists()


def test_malformed_value_fails_at_composition(tmp_path, store):
    proc = run_cli(["seq.batch=abc"], tmp_path, store)
    assert proc.returncode == 1
    assert "Value 'abc' of type 'str' could not be converted to Integer" in proc.output and "seq.batch" in proc.output


def test_impossible_values_name_their_keys_and_create_no_run(tmp_path, store):
    proc = run_cli(["seq.batch=0", "model.n_heads=5", "parallelism.nproc=4096"], tmp_path, store)
    assert proc.returncode == 2
    assert "seq.batch=0: must be a positive integer" in proc.stderr
    assert "model.n_heads=5 does not divide model.d_model=128" in proc.stderr
    assert "parallelism.nproc=4096 exceeds the" in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == []


def test_learned_positions_cap_the_sequence(tmp_path, store):
    proc = run_cli(["model.pos=learned", "model.max_seq_len=256", "seq=1k"], tmp_path, store)
    assert proc.returncode == 2
    assert "seq.len=1024 exceeds model.max_seq_len=256" in proc.stderr


def test_unwritable_output_dir(tmp_path, store):
    (tmp_path / "a_file").write_text("")
    proc = run_cli([f"hydra.run.dir={tmp_path}/a_file/out", *FAST], tmp_path, store)
    assert proc.returncode == 2
    assert "hydra.run.dir=" in proc.stderr and "is not a writable directory" in proc.stderr


def test_unreachable_store_is_stated_fast_results_kept_and_synced_later(tmp_path, store):
    t0 = time.monotonic()
    proc = run_cli(FAST, tmp_path, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert proc.returncode == 3, proc.output
    assert time.monotonic() - t0 < 45
    assert "tracking server http://127.0.0.1:9 did not answer" in proc.output
    assert "upload with `b200lab sync`" in proc.output
    [res] = results_files(tmp_path / "outputs")
    assert res["status"] == "ok" and res["mlflow"]["synced"] is False and res["metrics"]["tokens_per_s"] > 0

    sync = subprocess.run([sys.executable, "-m", "b200lab", "sync"], cwd=tmp_path, env={**os.environ, **store},
                          capture_output=True, text=True, timeout=300)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["tokens_per_s"] == pytest.approx(res["metrics"]["tokens_per_s"])
    [res] = results_files(tmp_path / "outputs")
    assert res["mlflow"]["synced"] and res["mlflow"]["run_id"] == run.info.run_id
    again = subprocess.run([sys.executable, "-m", "b200lab", "sync"], cwd=tmp_path, env={**os.environ, **store},
                           capture_output=True, text=True, timeout=300)
    assert "nothing to upload" in again.stdout


def test_sweep_records_failures_and_oom_and_goes_on(tmp_path, store):
    # point 0 measures, point 1 is impossible, point 2 cannot allocate its batch (oom), point 3 still runs
    proc = run_cli(["-m", "seq.batch=4,0,4000000000,2", "seq.len=128", "workload.warmup_steps=1", "workload.steps=2"], tmp_path, store)
    assert proc.returncode == 1, proc.output
    by_batch = {r["config"]["seq"]["batch"]: r for r in results_files(tmp_path / "multirun")}
    assert by_batch[4]["status"] == "ok" and by_batch[2]["status"] == "ok"
    assert by_batch[0]["status"] == "error" and "seq.batch=0" in by_batch[0]["error"]
    assert by_batch[4000000000]["status"] == "oom" and "allocate" in by_batch[4000000000]["error"]
    status = {r.data.params.get("seq.batch"): (r.info.status, r.data.tags.get("status")) for r in runs(store["MLFLOW_TRACKING_URI"]) if "mlflow.parentRunId" in r.data.tags}
    assert status == {"4": ("FINISHED", "ok"), "0": ("FAILED", "error"), "4000000000": ("FINISHED", "oom"), "2": ("FINISHED", "ok")}
    assert "oom" in proc.stdout and "error" in proc.stdout


def test_ctrl_c_ends_the_run_killed_with_measurements_kept(tmp_path, store):
    env = {**os.environ, **store}
    p = subprocess.Popen([sys.executable, "-m", "b200lab", "seq=short", "workload.steps=1000000"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in p.stdout:
        seen.append(line)
        if "timed" in line:
            time.sleep(1.0)
            p.send_signal(signal.SIGINT)
            break
    out = "".join(seen) + p.communicate(timeout=120)[0]
    assert p.returncode == 130, out
    [res] = results_files(tmp_path / "outputs")
    assert res["status"] == "interrupted" and res["metrics"]["n_steps"] > 0
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.info.status == "KILLED" and run.data.metrics["n_steps"] == res["metrics"]["n_steps"]
