"""Every get-or-create on a sqlite store waits for the store's lock (b200lab/records/store_lock.py).

Two sweeps logging the same synthetic dataset into one store at once collided on MLflow's
``UNIQUE constraint failed: datasets`` (CI, 2026-12-08): the dataset row is looked up, then inserted.
Here the lock is held from another open file description, so the test does not depend on winning
or losing that race: while it is held, logging a dataset must not finish."""

from __future__ import annotations

import fcntl
import threading
import uuid

from b200lab.records.store_lock import sqlite_path
from b200lab.records.tracking import Tracker


def _dataset(seed: int) -> tuple[dict, str]:
    name = f"synthetic batch (test {uuid.uuid4().hex[:8]})"
    fields = {"name": name, "digest": uuid.uuid4().hex, "source_type": "code", "source": f'{{"seed": {seed}}}'}
    return fields, "training"


def test_logging_a_dataset_waits_for_the_store_lock(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "lock-test", system_metrics=False)
    run_id = tracker.create_run("r", tags={})
    fields, context = _dataset(seed=7)
    lock_path = sqlite_path(uri).with_name("mlflow.db.lock")

    done = threading.Event()
    errors: list[BaseException] = []

    def log() -> None:
        try:
            tracker.log_datasets(run_id, [(fields, context)])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            done.set()

    with open(lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=log, daemon=True)
        worker.start()
        finished_while_held = done.wait(timeout=2.0)
        fcntl.flock(held, fcntl.LOCK_UN)
    assert not finished_while_held, "log_datasets wrote to the store while another process held its lock"
    assert done.wait(timeout=120) and not errors, errors
    inputs = tracker.client.get_run(run_id).inputs.dataset_inputs
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [(fields["name"], fields["digest"])]


def test_a_store_that_is_not_sqlite_has_no_lock_file():
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("sqlite:////tmp/x/mlflow.db?timeout=5").name == "mlflow.db"
