"""The accuracy guard through the CLI: one reference training shared by every eval point, the table,
MLflow metrics and tags, and a failing guard's exit code."""

from __future__ import annotations

import math

import pytest

from support import parents_and_children, results_files, run_cli

pytestmark = pytest.mark.e2e
SMALL = [
    "experiment=accuracy_guard",
    "run.device=cpu",
    "run.launcher=inline",
    "model=tiny",
    "seq.len=64",
    "seq.batch=4",
    "workload.steps=2",
    "workload.warmup_steps=1",
    "workload.options.train_steps=20",
    "workload.options.train_precision=fp32",
    "data.val_tokens=2048",
]


def test_guard_compares_with_the_reference_and_fails_without_one(tmp_path, store):
    proc = run_cli(["-m", *SMALL, "precision=fp32,bf16", "guard.max_ppl_delta=0.5"], tmp_path, store, timeout=900)
    assert proc.returncode == 0, proc.output
    assert "accuracy guard: perplexity vs precision=fp32, limit +50.00%" in proc.stdout
    assert proc.stdout.count("training the reference checkpoint first") == 1 and "reusing run" in proc.stdout
    rows = {
        r["config"]["precision"]["name"]: r
        for r in results_files(tmp_path / "multirun")
        if r["config"]["workload"]["name"] == "eval"
    }
    ref, bf16 = rows["fp32"]["metrics"], rows["bf16"]["metrics"]
    trained = {r["effective"]["checkpoint"]["run_id"] for r in rows.values()}
    assert len(trained) == 1 and None not in trained  # one training, cited by both points
    parents, children = parents_and_children(store["MLFLOW_TRACKING_URI"])
    training = [p for p in parents if p.info.run_id in trained]
    assert len(training) == 1 and training[0].data.tags["preset"] == "accuracy_guard"
    [parent] = [p for p in parents if "sweep_dir" in p.data.tags]  # the training is a run of its own, not a sweep
    assert parent.data.tags["guard"] == "passed" and parent.info.status == "FINISHED"
    child = next(c for c in children if c.info.run_id == rows["bf16"]["mlflow"]["run_id"])
    assert math.isclose(
        child.data.metrics["ppl_delta"], bf16["perplexity"] / ref["perplexity"] - 1, rel_tol=1e-9, abs_tol=1e-12
    )
    assert math.isclose(
        child.data.metrics["speedup_vs_reference"], bf16["tokens_per_s"] / ref["tokens_per_s"], rel_tol=1e-9
    )
    assert child.data.tags["guard"] == "pass"

    (tmp_path / "again").mkdir()
    failing = run_cli(
        ["-m", *SMALL, "precision=bf16", "guard.max_ppl_delta=0.5"], tmp_path / "again", store, timeout=900
    )
    assert failing.returncode == 1, failing.output
    assert (
        "no point ran precision=fp32 with a perplexity" in failing.stdout
        and "the accuracy guard failed" in failing.stderr
    )
    assert "reusing run" in failing.stdout  # the same training, found in the store
    parents, _ = parents_and_children(store["MLFLOW_TRACKING_URI"])
    latest = max((p for p in parents if "sweep_dir" in p.data.tags), key=lambda p: p.info.start_time)
    assert latest.data.tags["guard"] == "failed" and latest.info.status == "FAILED"


def test_a_limit_without_a_reference_is_refused(tmp_path, store):
    proc = run_cli([*SMALL, "guard.reference=null", "guard.max_ppl_delta=0.01", "precision=fp32"], tmp_path, store)
    assert proc.returncode == 2
    assert "guard.max_ppl_delta needs guard.reference" in proc.stderr
