"""A sweep as a person reads it in MLflow: the parent named by what varied and carrying the sweep's
tables (note), headline metrics and report; children named by what varied and what ran; params
without the lab's bookkeeping; a terminal table that fits 120 columns."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from tiny_sweep import tiny_sweep

from support import parents_and_children

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, template_store):
    info = tiny_sweep(tmp_path_factory, template_store)
    [parent], children = parents_and_children(info["uri"])
    return info, parent, children, MlflowClient(tracking_uri=info["uri"])


def test_children_are_named_by_what_varied_and_what_ran(sweep):
    _, _, children, _ = sweep
    names = [c.info.run_name for c in children]
    assert len(set(names)) == len(names) == 4
    for c in children:
        ran = {"fp32": "float32", "bf16": "bfloat16"}[c.data.params["precision.name"]]
        # short words: seq.len reads seq, a precision option stands alone
        assert c.info.run_name.startswith(f"seq={c.data.params['seq.len']} {c.data.params['precision.name']} | {ran} ")
        assert c.data.tags["effective.attention_kernel"] in c.info.run_name and c.info.run_name.endswith(" eager")
        assert c.data.tags["point"].startswith("seq=short seq.len=") and c.data.tags["job_num"] in "0123"


def test_params_describe_the_experiment_not_the_lab(sweep):
    _, _, children, _ = sweep
    for c in children:
        assert {"seq.len", "model.d_model", "precision.name", "workload.steps"} <= set(c.data.params)
        noise = [k for k in c.data.params if k.startswith(("tracking.", "run.", "hydra.")) or k.endswith("_target_")]
        assert noise == []


def test_parent_carries_what_its_points_share_as_params_and_children_their_data(sweep):
    _, parent, children, _ = sweep
    params = parent.data.params
    assert params["model.name"] == children[0].data.params["model.name"] and params["workload.steps"] == "5"
    assert "seq.len" not in params and "precision.name" not in params  # what the sweep varied
    assert set(params) < set(children[0].data.params)
    digests = set()
    for c in children:
        (given,) = c.inputs.dataset_inputs
        assert (
            given.dataset.name == f"synthetic batch ({c.data.params['model.name']})"
            and given.tags[0].value == "benchmark"
        )
        assert json.loads(given.dataset.source)["seed"] == 1234
        digests.add(given.dataset.digest)
    assert len(digests) == 1  # same generator, model and seed: one dataset


def test_parent_is_the_sweeps_summary(sweep):
    info, parent, children, client = sweep
    # seq.len keeps its name here: the typed seq=short would read as the same key
    assert parent.info.run_name.startswith("seq.len=32,64 fp32,bf16 seq=short")
    note = parent.data.tags["mlflow.note.content"]
    for c in children:
        assert f"#/experiments/{c.info.experiment_id}/runs/{c.info.run_id}?workflowType=machine_learning" in note
    assert "fp32 → float32" in note and "bf16 → bfloat16" in note and "tokens/s (p10–p90 band)" in note
    rates = [c.data.metrics["tokens_per_s"] for c in children]
    assert parent.data.metrics["tokens_per_s_max"] == pytest.approx(max(rates))
    assert parent.data.metrics["tokens_per_s_min"] == pytest.approx(min(rates))
    assert parent.data.metrics["n_points_ok"] == 4
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "report")
    }
    assert {"summary.png", "report/report.md", "report/report.html", "report/charts"} <= logged
    charts = {a.path for a in client.list_artifacts(parent.info.run_id, "report/charts")}
    assert "report/charts/tokens_per_s_vs_seq_len.png" in charts
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_terminal_table_shows_what_ran_and_fits_120_columns(sweep):
    info, _, _, _ = sweep
    out = info["output"]
    table = out[out.index("\npoint ") :].splitlines()[1:7]
    assert all(len(line) <= 120 for line in table), table
    assert (
        "precision" in table[0] and "attention" in table[0] and "reserved" not in table[0]
    )  # empty for every point on CPU
    assert any("bfloat16" in line for line in table) and any("float32" in line for line in table)
    assert "INFO mlflow" not in out
