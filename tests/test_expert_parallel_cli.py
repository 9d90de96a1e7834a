"""Expert parallel through the real CLI on 2 gloo ranks (torchrun): ``workload=validate`` against
one rank under ddp and fsdp with a fresh seed, training with the routing statistics per rank and
for the group in results.json and MLflow, and the refusals (exit 2, keys named, nothing created)."""

from __future__ import annotations

import json
import os

import pytest

from support import copy_store, job_records, run_cli, runs

pytestmark = pytest.mark.e2e

LAYOUTS = ("ddp", "fsdp")
GROUP_METRICS = (
    "moe_group_load_max_over_mean",
    "moe_group_load_max_over_mean_worst",
    "moe_ep_rank_load_max_over_mean",
    "moe_ep_rank_load_max_over_mean_worst",
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, template_store):
    """(CLI process, tracking URI, {(workload, layout): (job dir, results.json, rank reports)})."""
    work = tmp_path_factory.mktemp("expert_parallel")
    uri = copy_store(template_store, work)
    seed = int.from_bytes(os.urandom(2), "little")  # fresh inputs and weights every run
    proc = run_cli(
        [
            "-m",
            "model=moe_tiny",
            "workload=validate,train",
            f"parallelism={','.join(LAYOUTS)}",
            "parallelism.expert_parallel=2",
            "debug=fast",
            "seq.batch=2",
            f"run.seed={seed}",
        ],
        work,
        {"MLFLOW_TRACKING_URI": uri},
    )
    jobs = {
        (res["config"]["workload"]["name"], res["config"]["parallelism"]["name"]): (job, res, reports)
        for job, res, reports in job_records(work / "multirun")
    }
    return proc, uri, jobs, seed


def test_the_sweep_runs_every_point(sweep):
    proc, _, jobs, seed = sweep
    assert proc.returncode == 0, f"seed {seed}: {proc.output}"
    assert sorted(jobs) == sorted((w, layout) for w in ("train", "validate") for layout in LAYOUTS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_expert_parallel_matches_one_rank(sweep, layout):
    _, _, jobs, seed = sweep
    _, res, reports = jobs[("validate", layout)]
    assert res["status"] == "ok", f"seed {seed}: {res['error']}"
    m, tol = res["metrics"], res["effective"]["validate"]["tolerances"]
    assert tol["dtype"] == "float32"
    for key in ("logits_max_rel_err", "loss_rel_err", "grad_max_rel_err"):
        assert 0 <= m[key] <= tol[key], f"seed {seed}: {key}"
    assert m["validate_pass"] == 1.0
    assert res["effective"]["parallelism"]["expert_parallel"]["ranks"] == 2
    for r in reports:  # each rank holds 2 of the 4 experts, the one-rank reference all 4
        validate = r["effective"]["validate"]
        assert validate["local_shapes"]["blocks.0.mlp.experts.up"] == [2, 128, 128]
        # per layer: the rows to the experts and back, forward and backward
        assert validate["collectives"]["alltoall_base_"] == 2 * 2 * 2
    ranks_report = json.loads((jobs[("validate", layout)][0] / "artifacts" / "validate.json").read_text())
    assert ranks_report["global_shapes"]["blocks.0.mlp.experts.up"] == [4, 128, 128]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_reports_the_routing_per_rank_and_for_the_group(sweep, layout):
    _, uri, jobs, seed = sweep
    job_dir, res, reports = jobs[("train", layout)]
    assert res["status"] == "ok", f"seed {seed}: {res['error']}"
    m = res["metrics"]
    assert all(key in m for key in GROUP_METRICS) and not set(GROUP_METRICS) & set(res.get("unaggregated_metrics", []))
    assert 1.0 <= m["moe_ep_rank_load_max_over_mean"] <= m["moe_ep_rank_load_max_over_mean_worst"] <= 2.0
    assert 1.0 <= m["moe_group_load_max_over_mean"] <= m["moe_group_load_max_over_mean_worst"] <= 4.0
    # each rank reports its own tokens' loads, and the same group loads
    assert len(reports) == 2
    for key in GROUP_METRICS:
        assert reports[0]["metrics"][key] == reports[1]["metrics"][key]
    assert all("moe_load_max_over_mean" in r["metrics"] for r in reports)
    wrapped = res["effective"]["parallelism"]
    ignored = wrapped.get("ddp_ignores") or wrapped["fsdp"]["ignored_params"]
    assert ignored.startswith("4 expert weights")  # 2 layers x (up, down): not reduced
    routing = json.loads((job_dir / "artifacts" / "moe_routing.json").read_text())
    assert routing["loads"].startswith("the expert-parallel group's")
    assert routing["effective"]["expert_parallel"]["experts_per_rank"] == 2
    [run] = [r for r in runs(uri) if r.data.params.get("parallelism.name") == layout and "loss" in r.data.metrics]
    assert run.data.metrics["moe_ep_rank_load_max_over_mean"] == pytest.approx(m["moe_ep_rank_load_max_over_mean"])


def test_what_cannot_split_its_experts_exits_2_and_creates_nothing(tmp_path, store):
    proc = run_cli(["model=tiny", "parallelism=ddp", "parallelism.expert_parallel=2"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert "parallelism.expert_parallel=2: model family 'gpt' (model=tiny) has no experts to split" in proc.stderr
    proc = run_cli(
        ["model=moe_tiny", "parallelism=tp", "parallelism.expert_parallel=3", "workload=forward"], tmp_path, store
    )
    assert proc.returncode == 2, proc.output
    for text in (
        "parallelism.expert_parallel=3 must equal the data-parallel ranks (parallelism.dp=1)",
        "parallelism.expert_parallel=3 with parallelism.tp=2: expert parallel inside a tensor-parallel layout",
        "parallelism.expert_parallel=3 does not divide model.n_experts=4",
    ):
        assert text in proc.stderr
    assert "Traceback" not in proc.output
    assert runs(store["MLFLOW_TRACKING_URI"]) == [] and not (tmp_path / "outputs").exists()
