"""The real CLI as a subprocess, real torchrun where ranks are the point, real sqlite MLflow stores."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import FAST, INLINE, parents_and_children, results_files, run_cli, runs

pytestmark = pytest.mark.e2e


def test_default_run_lands_in_the_default_store_with_its_provenance(tmp_path):
    proc = run_cli(
        [], tmp_path, {"NCCL_ALGO": "Ring", "TORCH_NCCL_USE_COMM_NONBLOCKING": "0"}
    )  # no MLFLOW_TRACKING_URI: the default sqlite:///mlflow.db here
    assert proc.returncode == 0, proc.output
    assert (tmp_path / "mlflow.db").exists()
    [run] = runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["tokens_per_s"] > 0
    assert run.data.params["model.d_model"] == "128" and run.data.params["seq.len"] == "1024"
    tags = run.data.tags
    assert tags["status"] == "ok" and tags["effective.precision"] == "float32" and tags["requested.precision"] == "auto"
    assert tags["device"] == "cpu" and tags["git_sha"]
    [res] = results_files(tmp_path / "outputs")
    assert tags["mlflow.source.git.commit"] == res["env"]["git_sha"] == tags["git_sha"]
    assert tags["mlflow.source.name"] == "b200lab" and tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    assert res["schema_version"] == 2
    assert res["mlflow"]["run_id"] == run.info.run_id and res["mlflow"]["synced"]
    assert run.info.start_time == res["started_at_ms"] < res["ended_at_ms"] == run.info.end_time
    for key in ("python", "torch", "hostname", "git_sha", "device", "gpu_count", "cpu_model"):
        assert key in res["env"]
    # the variables that change what a rank measures travel with the result, the unrelated ones do not
    assert {"NCCL_ALGO": "Ring", "TORCH_NCCL_USE_COMM_NONBLOCKING": "0"}.items() <= res["env"]["env_vars"].items()
    assert "MLFLOW_TRACKING_URI" not in res["env"]["env_vars"] and "PATH" not in res["env"]["env_vars"]
    assert res["effective"]["precision"]["reason"] == "auto on cpu means float32"
    assert len(res["step_ms"]) == res["metrics"]["n_steps"] >= 20
    assert "status=ok" in proc.stdout and "timed" in proc.stdout
    [run_dir] = [p.parent for p in (tmp_path / "outputs").rglob("results.json")]
    assert not (run_dir / "b200lab.log").exists(), "Hydra's job log file is off: its records go to the console"
    assert (run_dir / "job.log").read_text().strip(), "the job's console log (torchrun and its ranks) is its log"


def test_sweep_gives_a_parent_run_with_a_child_per_point(tmp_path, store):
    uri = store["MLFLOW_TRACKING_URI"]
    proc = run_cli(
        ["-m", "seq=1k,2k", "model=tiny", "workload.warmup_steps=1", "workload.steps=2", INLINE], tmp_path, store
    )
    assert proc.returncode == 0, proc.output
    [parent], children = parents_and_children(uri)
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children) and parent.info.status == "FINISHED"
    assert sorted(c.data.params["seq.len"] for c in children) == ["1024", "2048"]
    for r in (parent, *children):
        assert (
            r.data.tags["mlflow.source.git.commit"]
            and r.data.tags["mlflow.user"]
            and r.data.tags["mlflow.source.name"] == "b200lab"
        )
    files = sorted((tmp_path / "multirun").rglob("results.json"))
    assert len(files) == 2
    assert "seq=1k model=tiny" in proc.stdout and "seq=2k model=tiny" in proc.stdout
    with open(files[0].parents[1] / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert sorted(row["run_id"] for row in summary) == sorted(c.info.run_id for c in children)
    assert {row["gpu"] for row in summary} == {"cpu"}  # the hardware is named on a CPU too
    png = files[0].parents[1] / "summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.png"} <= logged
    # the results.json in MLflow is the final one: synced, with its own run ids
    child = children[0]
    (tmp_path / "dl").mkdir()
    uploaded = json.loads(
        Path(client.download_artifacts(child.info.run_id, "results.json", str(tmp_path / "dl"))).read_text()
    )
    assert uploaded["mlflow"]["synced"] is True
    assert (
        uploaded["mlflow"]["run_id"] == child.info.run_id and uploaded["mlflow"]["parent_run_id"] == parent.info.run_id
    )
    # the parent draws tokens/s against the swept length with no setup: a series stepped by seq.len
    line = client.get_metric_history(parent.info.run_id, "tokens_per_s")
    by_len = {int(c.data.params["seq.len"]): c.data.metrics["tokens_per_s"] for c in children}
    assert sorted((m.step, m.value) for m in line) == sorted(by_len.items())
    assert parent.data.tags["series.step"] == "seq.len"
    # the metrics a user sorts by, once more under one prefix
    assert all(c.data.metrics["key/tokens_per_s"] == c.data.metrics["tokens_per_s"] for c in children)


def test_two_gloo_ranks_report_global_throughput_once(tmp_path, store):
    proc = run_cli(["parallelism.nproc=2", "workload=train", *FAST], tmp_path, store)
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs").rglob("rank?.json"))]
    assert len(ranks) == 2 and {r["data_shard"] for r in ranks} == {0, 1}
    m = res["metrics"]
    assert m["world_size"] == 2
    assert m["tokens_per_step"] == 2 * 4 * 128  # two distinct batches of 4 x 128
    span = max(r["span_s"] for r in ranks)
    assert m["tokens_per_s"] == pytest.approx(m["tokens_per_step"] * m["n_steps"] / span)
    assert m["tokens_per_s_per_gpu"] * 2 == pytest.approx(m["tokens_per_s"])
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.data.metrics["tokens_per_s"] == pytest.approx(m["tokens_per_s"])
    assert "loss" in m and 5.0 < m["loss"] < 10.0  # random tokens: about ln(2048) = 7.6


def test_two_gloo_ranks_train_bf16_weights_with_float32_masters(tmp_path, store):
    proc = run_cli(
        ["parallelism.nproc=2", "workload=train", "precision=bf16", "workload.options.grad_accum=2", *FAST],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    prec = res["effective"]["precision"]
    assert (prec["param_dtype"], prec["master_dtype"], prec["grad_accum_dtype"], prec["autocast"]) == (
        "bfloat16",
        "float32",
        "float32",
        False,
    )
    assert (
        res["effective"]["ddp_sync"] == "every micro-batch"
    )  # each bf16 gradient is reduced before it moves to the masters
    assert res["metrics"]["tokens_per_step"] == 2 * 2 * 4 * 128
    assert 5.0 < res["metrics"]["loss"] < 10.0
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.data.tags["effective.master_dtype"] == "float32"


def test_compiled_run_reports_compile_time_apart(tmp_path, store):
    proc = run_cli(
        ["compile=default", "workload.warmup_steps=2", "workload.steps=3", "seq=short", INLINE], tmp_path, store
    )
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    assert res["effective"]["compiled"] is True
    m = res["metrics"]
    assert m["compile_s"] > 0.5  # inductor compiles in the first warm-up step
    assert m["step_ms_p50"] < m["first_step_ms"] / 5


def test_one_command_with_subcommands(tmp_path):
    script = Path(sys.executable).with_name("b200lab")  # the console script pip installed beside this python
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0
    for text in (
        "b200lab sync",
        "b200lab report",
        "b200lab power",
        "-m seq=1k,2k",
        "130",
        "bad configuration",
        "not in MLflow",
    ):
        assert text in usage.stdout
    hydra_help = run_cli(["run", "--help"], tmp_path)
    assert (
        hydra_help.returncode == 0
        and "== Configuration groups ==" in hydra_help.stdout
        and "model: " in hydra_help.stdout
        and "schema/" not in hydra_help.stdout  # the schemas are not groups to choose from
    )
    power = run_cli(["power", "--", sys.executable, "-c", "import sys; sys.exit(7)"], tmp_path)
    assert power.returncode == 7 and json.loads(power.stdout)["returncode"] == 7
    report = run_cli(["report", "table", str(tmp_path)], tmp_path)
    assert report.returncode == 2 and "no results.json" in report.stderr
    sync = run_cli(["sync", str(tmp_path)], tmp_path)
    assert sync.returncode == 0 and "nothing to upload" in sync.stdout
