"""A torchrun job opens its MLflow run in a thread while the ranks start (b200lab/runner/job.py's
RunOpening). Whatever fails there ends up in the record's ``mlflow.error``, as a failing store
does: it never raises into the job, so the measurement is kept. The threaded path through the
real CLI and torchrun is in tests/test_cli.py; the failing stores are here, in-process."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from b200lab.runner.job import RunOpening, RunRequest

CFG = OmegaConf.create({"tracking": {"experiment": "b200lab", "system_metrics": False, "probe_timeout_s": 1.0}})


def _request(uri: str, sweep_dir=None) -> RunRequest:
    return RunRequest(uri, "tiny-forward", {"model": "tiny"}, {"model": {"name": "tiny"}}, None, 0, sweep_dir)


def test_a_store_that_fails_after_the_probe_is_the_records_error(tmp_path):
    store = tmp_path / "mlflow.db"
    store.write_text("not a database\n" * 100)  # a writable folder passes the probe; the file is no sqlite store
    tracker, info = RunOpening(CFG, _request(f"sqlite:///{store}"), system_metrics=False).wait()
    assert tracker is None and info["run_id"] is None and info["synced"] is False
    assert info["error"].startswith("MLflow: ") and info["tracking_uri"] == f"sqlite:///{store}"


def test_an_unreadable_sweep_record_is_the_records_error_not_a_crash(tmp_path):
    (tmp_path / "mlflow_parent.json").write_text("{ this is not json")
    opening = RunOpening(CFG, _request(f"sqlite:///{tmp_path / 'mlflow.db'}", sweep_dir=tmp_path), False)
    tracker, info = opening.wait()
    assert opening.done() and tracker is None and info["run_id"] is None
    assert info["error"].startswith("MLflow: JSONDecodeError")


def test_a_store_that_answers_gets_the_run_with_its_params(store):
    uri = store["MLFLOW_TRACKING_URI"]
    tracker, info = RunOpening(CFG, _request(uri), system_metrics=False).wait()
    assert info["error"] is None and info["run_id"]
    run = tracker.client.get_run(info["run_id"])
    assert run.data.params["model.name"] == "tiny" and run.data.tags["requested.model"] == "tiny"
    assert run.info.run_name == "tiny-forward" and json.dumps(info)  # the record stays plain JSON
