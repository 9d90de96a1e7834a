"""Two sweeps started at the same moment into one new sqlite store: MLflow creates the schema and
the experiment on first use, which collides without the store lock (b200lab/records/store_lock.py)."""

from __future__ import annotations

import signal

import pytest

from support import INLINE, parents_and_children, popen_cli, results_files, run_cli

pytestmark = pytest.mark.e2e


def test_two_sweeps_at_once_into_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/new.db"  # does not exist yet: both sweeps race to create it
    sweeps = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        sweeps.append(
            popen_cli(
                ["-m", "seq.batch=2,4", "seq=short", "workload.steps=2", "workload.warmup_steps=1", INLINE],
                tmp_path / name,
                {"MLFLOW_TRACKING_URI": uri},
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in sweeps]
    for p, out in zip(sweeps, outputs):
        assert p.returncode == 0, out
    parents, children = parents_and_children(uri)
    assert len(parents) == 2 and len(children) == 4
    assert all(c.info.status == "FINISHED" for c in children) and all(p.info.status == "FINISHED" for p in parents)
    for name in ("a", "b"):  # each sweep's children point at its own parent
        records = results_files(tmp_path / name / "multirun")
        assert len(records) == 2
        [parent_id] = {r["mlflow"]["parent_run_id"] for r in records}
        own = {c.info.run_id for c in children if c.data.tags["mlflow.parentRunId"] == parent_id}
        assert own == {r["mlflow"]["run_id"] for r in records}


def test_a_parent_run_that_cannot_be_created_is_an_error(tmp_path, store):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store["MLFLOW_TRACKING_URI"])
    client.delete_experiment(client.get_experiment_by_name("b200lab").experiment_id)  # MLflow refuses runs in it
    proc = popen_cli(
        ["-m", "seq.batch=2,4", "seq=short", "workload.steps=2", "workload.warmup_steps=1", INLINE], tmp_path, store
    )
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 1, out
    assert "could not create the sweep's parent run" in out and "2 result(s) not in MLflow" in out
    assert all(r["status"] == "ok" for r in results_files(tmp_path / "multirun"))


def test_two_runs_started_into_one_directory_never_mix(tmp_path, store):
    """The same hydra.run.dir twice at once: the second is refused (exit 2) while the first holds
    it, and results.json stays the first run's own. Two runs started in one working directory in
    the same second get directories of their own."""
    shared = ["hydra.run.dir=shared", "seq=short", "workload.warmup_steps=1", INLINE]
    first = popen_cli([*shared, "workload.min_time_s=600", "seq.batch=2"], tmp_path, store)
    seen = []
    for line in first.stdout:  # the first run is timing: it holds the directory
        seen.append(line)
        if "timed" in line:
            break
    second = run_cli([*shared, "workload.steps=2", "seq.batch=6"], tmp_path, store)
    first.send_signal(signal.SIGINT)  # what it measured so far is kept
    out = "".join(seen) + first.communicate(timeout=120)[0]
    assert second.returncode == 2, second.stdout + second.stderr
    assert "hydra.run.dir=shared is in use by another b200lab run" in second.stderr
    assert first.returncode == 130, out
    [res] = results_files(tmp_path / "shared")
    assert res["config"]["seq"]["batch"] == 2 and res["metrics"]["tokens_per_step"] == 2 * 128

    procs = [
        popen_cli(
            ["seq=short", "workload.steps=2", "workload.warmup_steps=1", INLINE, f"seq.batch={b}"], tmp_path, store
        )
        for b in (2, 6)
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    batches = sorted(
        (r["config"]["seq"]["batch"], r["metrics"]["tokens_per_step"]) for r in results_files(tmp_path / "outputs")
    )
    assert batches == [(2, 256), (6, 768)]
