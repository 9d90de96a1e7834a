"""Sweep bookkeeping lives in files, so a Hydra launcher plugin that runs each job in its own
process (submitit's local executor, the one SLURM users swap for submitit_slurm) gives the same
MLflow layout and exit code as Hydra's basic in-process launcher."""

from __future__ import annotations

import pytest

from support import INLINE, copy_store, parents_and_children, results_files, run_cli

pytestmark = pytest.mark.e2e

POINT = ["seq=short", "workload.steps=2", "workload.warmup_steps=1", INLINE]


def layout(uri: str) -> dict:
    [parent], children = parents_and_children(uri)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    return {
        "parent": parent.info.status,
        "children": sorted((c.data.params["seq.batch"], c.info.status) for c in children),
    }


def sweep(tmp_path, template_store, launcher: str, batches: str) -> tuple[int, dict]:
    work = tmp_path / launcher
    work.mkdir()
    uri = copy_store(template_store, work)
    proc = run_cli(
        ["-m", f"hydra/launcher={launcher}", f"seq.batch={batches}", *POINT], work, {"MLFLOW_TRACKING_URI": uri}
    )
    records = results_files(work / "multirun")
    assert len(records) == 2 and len({r["sweep_id"] for r in records}) == 1, proc.output
    assert all(r["mlflow"]["synced"] for r in records)
    return proc.returncode, layout(uri)


def test_submitit_launcher_matches_the_basic_launcher_and_a_failing_point_fails_the_sweep(tmp_path, template_store):
    # seq.batch=0 fails validation inside its job (under submitit, in submitit's worker process): the
    # same exit code, parent and children under both launchers. One mixed sweep each covers what an
    # all-ok sweep and a failing one did apart; an all-ok sweep under submitit ends FINISHED with
    # exit 0 in test_parallel_validate.py.
    expected = {"parent": "FAILED", "children": [("0", "FAILED"), ("2", "FINISHED")]}
    assert (
        sweep(tmp_path, template_store, "basic", "2,0")
        == sweep(tmp_path, template_store, "submitit_local", "2,0")
        == (1, expected)
    )
