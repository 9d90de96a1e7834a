"""Parallel layouts against one rank, through the real CLI: ``workload=validate`` on real gloo
ranks (torchrun) with real split GEMMs and collectives, as one sweep under submitit's local
launcher (the executor a SLURM user swaps for ``hydra/launcher=slurm``).

Layouts: tensor parallel over 2 ranks, DDP over 2 ranks, and 2-D (TP 2 inside, FSDP2 over 2
replicas: 4 gloo ranks, which a 2-core machine time-shares)."""

from __future__ import annotations

import pytest

from support import copy_store, job_records, parents_and_children, run_cli, runs

pytestmark = pytest.mark.e2e

LAYOUTS = ("tp", "ddp", "tp_fsdp")
# tiny GPT: d_model 128, 4 heads of 32, d_ff 512, vocab 2048; the GPT's fused qkv has 3 x 128 rows
FULL = {
    "embed.weight": [2048, 128],
    "blocks.0.qkv.weight": [384, 128],
    "blocks.0.out.weight": [128, 128],
    "blocks.0.mlp.up.weight": [512, 128],
    "blocks.0.mlp.down.weight": [128, 512],
    "head.weight": [2048, 128],
}
LOCAL = {
    "ddp": FULL,
    # column-parallel: rows halved; row-parallel: columns halved; embedding replicated
    "tp": {
        **FULL,
        "blocks.0.qkv.weight": [192, 128],
        "blocks.0.out.weight": [128, 64],
        "blocks.0.mlp.up.weight": [256, 128],
        "blocks.0.mlp.down.weight": [128, 256],
        "head.weight": [1024, 128],
    },
    # then FSDP2 halves dim 0 of every local shard over the 2 replicas
    "tp_fsdp": {
        "embed.weight": [1024, 128],
        "blocks.0.qkv.weight": [96, 128],
        "blocks.0.out.weight": [64, 64],
        "blocks.0.mlp.up.weight": [128, 128],
        "blocks.0.mlp.down.weight": [64, 256],
        "head.weight": [512, 128],
    },
}
SHARDS = {"tp": [0, 0], "ddp": [0, 1], "tp_fsdp": [0, 0, 1, 1]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, template_store):
    """(CLI process, tracking URI, {layout: (job dir, results.json, rank reports)})."""
    work = tmp_path_factory.mktemp("validate")
    uri = copy_store(template_store, work)
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "workload=validate",
            f"parallelism={','.join(LAYOUTS)}",
            "seq=short",
            "seq.batch=2",
            "workload.steps=1",
        ],
        work,
        {"MLFLOW_TRACKING_URI": uri},
    )
    jobs = {
        res["config"]["parallelism"]["name"]: (job, res, reports)
        for job, res, reports in job_records(work / "multirun")
    }
    return proc, uri, jobs


def test_the_sweep_runs_under_submitit_with_the_basic_launchers_mlflow_layout(sweep):
    proc, uri, jobs = sweep
    assert proc.returncode == 0, proc.output
    assert sorted(jobs) == sorted(LAYOUTS)
    [parent], children = parents_and_children(uri)
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted((c.data.params["parallelism.name"], c.info.status) for c in children) == sorted(
        (n, "FINISHED") for n in LAYOUTS
    )
    assert all(res["mlflow"]["synced"] for _, res, _ in jobs.values())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_matches_the_single_rank_logits_loss_and_gradients(sweep, layout):
    _, uri, jobs = sweep
    _, res, _ = jobs[layout]
    assert res["status"] == "ok", res["error"]
    m, tol = res["metrics"], res["effective"]["validate"]["tolerances"]
    assert tol["dtype"] == "float32" and tol["grad_max_rel_err"] == 1e-4  # the stated float32 tolerances
    for key in ("logits_max_rel_err", "loss_rel_err", "grad_max_rel_err"):
        assert 0 <= m[key] <= tol[key]
    assert m["validate_pass"] == 1.0
    [child] = [r for r in runs(uri) if r.data.params.get("parallelism.name") == layout]
    assert child.data.metrics["grad_max_rel_err"] == pytest.approx(m["grad_max_rel_err"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_rank_holds_its_split_and_ran_collectives(sweep, layout):
    _, _, jobs = sweep
    _, res, reports = jobs[layout]
    assert [r["data_shard"] for r in reports] == SHARDS[layout]
    for r in reports:
        shapes = r["effective"]["validate"]["local_shapes"]
        assert {k: shapes[k] for k in LOCAL[layout]} == LOCAL[layout], f"rank {r['rank']}"
    collectives = reports[0]["effective"]["validate"]["collectives"]
    if (
        layout == "tp"
    ):  # per block 2 all-reduces forward and 2 backward, 1 for the head's input gradient; logits all-gathered
        assert collectives == {"all_reduce": 9, "all_gather_into_tensor": 1}
    if layout == "tp_fsdp":
        assert collectives["all_reduce"] == 9 and any("reduce_scatter" in k for k in collectives)
    # a tensor-parallel group is one replica: its tokens count once, each rank does its share of FLOPs
    replicas = len(set(SHARDS[layout]))
    assert res["metrics"]["tokens_per_step"] == replicas * 2 * 128
    assert {r["flops_per_step"] for r in reports} == {jobs["ddp"][2][0]["flops_per_step"] * replicas // len(reports)}
