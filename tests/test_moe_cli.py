"""The mixture-of-experts family through the real CLI: training into MLflow with the routing
metrics and the load histogram, two gloo ranks under DDP with an expert that gets no token, the
layer microbenchmark, and a refused configuration."""

from __future__ import annotations

import json

import pytest

from support import FAST, INLINE, results_files, run_cli, runs

pytestmark = pytest.mark.e2e

LOAD_METRICS = (
    "moe_load_max_over_mean",
    "moe_load_max_over_mean_worst",
    "moe_load_entropy",
    "moe_dropped_frac",
    "moe_idle_experts",
    "moe_aux_loss",
    "moe_z_loss",
)


def test_a_tiny_moe_trains_and_logs_its_routing_and_load_histogram(tmp_path, store):
    proc = run_cli(["model=moe_tiny", "workload=train", "model.capacity_factor=1.0", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    m = res["metrics"]
    assert all(key in m for key in LOAD_METRICS) and not set(LOAD_METRICS) & set(res.get("unaggregated_metrics", []))
    assert 1.0 <= m["moe_load_max_over_mean"] <= m["moe_load_max_over_mean_worst"] <= 4.0
    assert 0.0 < m["moe_load_entropy"] <= 1.0 and 0.0 <= m["moe_dropped_frac"] < 1.0 and m["moe_aux_loss"] >= 1.0 - 1e-6
    assert 5.0 < m["loss"] < 10.0 and m["tflops"] > 0
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.data.metrics["moe_load_entropy"] == pytest.approx(m["moe_load_entropy"])
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store["MLFLOW_TRACKING_URI"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "artifacts")}
    assert {"artifacts/moe_expert_load.png", "artifacts/moe_expert_load.csv", "artifacts/moe_routing.json"} <= logged
    routing = json.loads(
        open(client.download_artifacts(run.info.run_id, "artifacts/moe_routing.json", str(tmp_path))).read()
    )
    assert routing["effective"]["expert_path"] == "grouped" and routing["effective"]["capacity_factor"] == 1.0
    rows = (
        open(client.download_artifacts(run.info.run_id, "artifacts/moe_expert_load.csv", str(tmp_path)))
        .read()
        .splitlines()
    )
    assert len(rows) == 1 + 2 * 4  # a row per layer and expert


def test_two_gloo_ranks_train_with_an_expert_that_receives_no_token(tmp_path, store):
    """The last expert's selection bias keeps every token away from it: DDP must still reduce its
    (zero) gradients every step instead of failing on a parameter that took no part."""
    proc = run_cli(
        [
            "model=moe_tiny",
            "workload=train",
            "parallelism=ddp",
            "model.selection_bias=[0,0,0,-10000]",
            "workload.options.grad_accum=2",
            *FAST,
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs").rglob("rank?.json"))]
    assert len(ranks) == 2 and all(r["status"] == "ok" for r in ranks)
    assert all(r["metrics"]["moe_idle_experts"] == 2 for r in ranks)  # expert 3 of both layers, on each rank
    assert res["effective"]["parallelism"]["wrapper"] == "DistributedDataParallel"
    assert res["metrics"]["n_steps"] == 3 and 5.0 < res["metrics"]["loss"] < 10.0


def test_the_moe_layer_microbenchmark_reports_both_rates_and_the_phase_shares(tmp_path, store):
    options = [
        "workload.options.d_model=64",
        "workload.options.tokens=256",
        "workload.options.d_ff_expert=64",
        "workload.options.dtype=fp32",
        "workload.min_time_s=0",
    ]
    proc = run_cli(["workload=moe_layer", *options, *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    m, eff = res["metrics"], res["effective"]
    flops = 256 * 3 * 2 * (64 * 8 + 2 * 2 * 64 * 64)  # tokens x (forward + backward) x 2 x (router + top-2 experts)
    dense_flops = 256 * 3 * 2 * (2 * 64 * 128)
    assert m["moe_tflops"] == pytest.approx(flops / m["moe_step_ms"] / 1e9)
    assert m["dense_tflops"] == pytest.approx(dense_flops / m["dense_step_ms"] / 1e9)
    assert m["moe_dense_ratio"] == pytest.approx(m["moe_tflops"] / m["dense_tflops"])
    shares = [m[f"moe_{p}_share"] for p in ("router", "permute", "experts")]
    assert all(s > 0 for s in shares) and m["moe_other_share"] == pytest.approx(1 - sum(shares))
    assert eff["expert_path"] == "grouped" and eff["dense_d_ff"] == 128 and eff["peak_key"] == "fp32"
    assert m["moe_dropped_frac"] == 0.0 and m["moe_load_max_over_mean"] >= 1.0


def test_a_moe_that_cannot_route_exits_2_and_creates_nothing(tmp_path, store):
    proc = run_cli(["model=moe", "model.top_k=9"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert "model.top_k=9 exceeds model.n_experts=8" in proc.stderr
    assert not list(tmp_path.rglob("results.json")) and runs(store["MLFLOW_TRACKING_URI"]) == []
