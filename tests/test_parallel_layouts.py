"""Parallel layouts that cannot work are refused before anything runs (message, exit 2); the
fused qkv's tensor-parallel row order gives every rank its own query and K/V heads; the
multi-node torchrun command and the ranks' environment."""

from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf

from support import results_files, run_cli, runs


@pytest.mark.e2e
def test_an_impossible_layout_names_every_reason_and_exits_2(tmp_path, store):
    proc = run_cli(
        [
            "parallelism=tp",
            "parallelism.tp=3",
            "parallelism.dp=4096",
            "parallelism.sequence_parallel=true",
            "model.n_kv_heads=2",
            "seq=short",
            "seq.len=100",
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 2, proc.output
    err = proc.stderr
    for text in (
        "parallelism.tp=3 does not divide model.n_heads=4: each rank holds 1/3 of the query heads",
        "parallelism.tp=3 does not divide model.n_kv_heads=2",
        "parallelism.tp=3 does not divide model.d_ff=512",
        "parallelism.tp=3 does not divide model.vocab_size=2048",
        "parallelism.sequence_parallel=true: parallelism.tp=3 does not divide seq.len=100",
        "parallelism.nproc=12288 exceeds the",
    ):
        assert text in err
    assert "Traceback" not in proc.output
    assert runs(store["MLFLOW_TRACKING_URI"]) == [] and results_files(tmp_path) == []


@pytest.mark.e2e
def test_moe_under_tensor_parallel_and_a_wrong_nproc_are_refused(tmp_path, store):
    proc = run_cli(
        ["model=moe_tiny", "parallelism=tp", "parallelism.nproc=3", "workload=train", "parallelism.dp=2"],
        tmp_path,
        store,
    )
    assert proc.returncode == 2, proc.output
    assert (
        "parallelism.nproc=3 does not equal parallelism.tp x parallelism.dp = 2 x 2 = 4 (leave nproc out: it is "
        "derived)" in proc.stderr
    )
    proc = run_cli(["model=moe_tiny", "parallelism=tp", "workload=train", "parallelism.dp=2"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert (
        "parallelism.tp=2: model family 'moe' (model=moe_tiny) has no tensor-parallel plan; its experts are not split"
        in proc.stderr
    )
    assert (
        "parallelism.tp=2 with parallelism.dp=2 trains its replicas through FSDP2 over dp: set parallelism.fsdp=true"
        in proc.stderr
    )
    assert runs(store["MLFLOW_TRACKING_URI"]) == []
    proc = run_cli(["parallelism=tp", "precision=fp8_weight_only", "workload=forward"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert (
        "precision=fp8_weight_only with parallelism.tp=2: this recipe replaces nn.Linear with b200lab's "
        "FP8WeightLinear modules" in proc.stderr
    )


@pytest.mark.parametrize("heads,kv_heads,tp", [(4, 4, 2), (8, 2, 2), (12, 4, 4), (6, 6, 3)])
def test_interleaved_qkv_rows_give_each_rank_its_own_heads(heads, kv_heads, tp):
    from b200lab.models.gpt.parallel import interleave_order, plain

    head_dim = random.choice([2, 4, 8])
    # each row labelled (part, head, dim) from the fused layout [q heads; k heads; v heads]
    labels = [("q", h, d) for h in range(heads) for d in range(head_dim)]
    labels += [(part, h, d) for part in ("k", "v") for h in range(kv_heads) for d in range(head_dim)]
    order = interleave_order(heads, kv_heads, head_dim, tp)
    chunks = order.chunk(tp)  # what a column split (Shard(0)) hands each rank
    ql, kvl = heads // tp, kv_heads // tp
    for r, rows in enumerate(chunks):
        got = [labels[i] for i in rows.tolist()]
        want = [("q", h, d) for h in range(r * ql, (r + 1) * ql) for d in range(head_dim)]
        want += [(part, h, d) for part in ("k", "v") for h in range(r * kvl, (r + 1) * kvl) for d in range(head_dim)]
        assert got == want, f"rank {r}"
    weight = torch.randn(len(labels), 5)
    cfg = OmegaConf.create({"n_heads": heads, "n_kv_heads": kv_heads, "d_model": heads * head_dim})
    assert torch.equal(plain("blocks.3.qkv.weight", weight[order], cfg, tp), weight)
    assert torch.equal(plain("blocks.3.out.weight", weight, cfg, tp), weight)  # other parameters keep their layout


def test_multi_node_torchrun_uses_a_static_rendezvous_from_config_or_environment(tmp_path):
    from b200lab.parallel.rendezvous import rendezvous
    from b200lab.runner.launch import rank_env, torchrun_command

    p = OmegaConf.create({"nproc": 16, "nnodes": 2, "node_rank": None, "rdzv_endpoint": None})
    rdzv = rendezvous(p, {"SLURM_NODEID": "1", "MASTER_ADDR": "node-a", "MASTER_PORT": "29400"})
    assert (rdzv.per_node, rdzv.nnodes, rdzv.node_rank, rdzv.endpoint) == (8, 2, 1, "node-a:29400")
    cmd = torchrun_command(tmp_path, rdzv)
    assert "torch.distributed.run" in cmd[2]  # the bootstrap: python -c CODE, the working directory off sys.path
    assert cmd[3 : cmd.index("--no-python")] == [
        "--nnodes=2",
        "--node-rank=1",
        "--master-addr=node-a",
        "--master-port=29400",
        "--nproc-per-node=8",
    ]
    assert "b200lab.runner.rank" in cmd[cmd.index("--no-python") + 3] and cmd[-2:] == ["--job-dir", str(tmp_path)]
    p.update(node_rank=0, rdzv_endpoint="10.0.0.1:1234")
    assert rendezvous(p, {"NODE_RANK": "1"}).endpoint == "10.0.0.1:1234" and rendezvous(p, {}).node_rank == 0
    with pytest.raises(ValueError, match="parallelism.nnodes=2 needs node 0's host:port"):
        rendezvous(OmegaConf.create({"nproc": 4, "nnodes": 2}), {})
    single = rendezvous(OmegaConf.create({"nproc": 2}), {})
    assert "--standalone" in torchrun_command(tmp_path, single) and "--nproc-per-node=2" in torchrun_command(
        tmp_path, single
    )
    assert rank_env(2)["NCCL_NVLS_ENABLE"] == "0"  # NVLink SHARP multicast stays off


@pytest.mark.e2e
def test_two_nodes_record_one_job_with_every_rank(tmp_path, store):
    """Two b200lab processes on this machine stand in for two nodes (one gloo rank each, a static
    rendezvous at node 0, one shared job dir): node 0 writes the job's one results.json and MLflow
    run from both ranks; node 1 runs its rank and records nothing."""
    import socket

    from support import FAST, popen_cli

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job_dir = tmp_path / "job"
    common = [
        "model=tiny",
        "workload=forward",
        "parallelism=ddp",
        "parallelism.nproc=2",
        "parallelism.nnodes=2",
        f"parallelism.rdzv_endpoint=127.0.0.1:{port}",
        f"hydra.run.dir={job_dir}",
        *FAST,
    ]
    nodes = [popen_cli([*common, f"parallelism.node_rank={n}"], tmp_path, store) for n in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "node 1: running this node's ranks; node 0 records the job" in outputs[1]
    (record,) = results_files(job_dir)
    assert record["status"] == "ok", record["error"]
    m = record["metrics"]
    assert m["world_size"] == 2 and {"peak_rss_gb_rank0", "peak_rss_gb_rank1"} <= set(m)
    assert (
        m["tokens_per_step"] == 2 * record["config"]["seq"]["batch"] * record["config"]["seq"]["len"]
    )  # two data shards
    assert record["requested"]["parallelism"] == "ddp nproc=2 nnodes=2"
    (run,) = runs(store["MLFLOW_TRACKING_URI"])
    assert run.info.run_id == record["mlflow"]["run_id"]
