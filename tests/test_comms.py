"""workload=comms on 2 gloo ranks: all-gather and reduce-scatter bus bandwidth with nccl-tests'
definitions, the size sweep as an MLflow curve (step = message bytes) and a chart artifact."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient

from support import job_records, run_cli, runs

pytestmark = pytest.mark.e2e

SIZES = [16384, 32768, 65536]


def test_all_gather_and_reduce_scatter_report_busbw_against_message_size(tmp_path, store):
    proc = run_cli(
        [
            "-m",
            "workload=comms",
            "parallelism.nproc=2",
            "workload.options.op=all_gather,reduce_scatter",
            f"workload.options.min_bytes={SIZES[0]}",
            f"workload.options.max_bytes={SIZES[-1]}",
            "workload.options.sweep_iters=3",
            "workload.options.sweep_warmup=1",
            "workload.steps=5",
            "workload.warmup_steps=1",
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    uri = store["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri)
    children = [r for r in runs(uri) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for _, res, ranks in job_records(tmp_path / "multirun"):
        op = res["config"]["workload"]["options"]["op"]
        prefix = op.replace("_", "")
        assert res["status"] == "ok" and res["effective"]["nccl_nvls_enable"] == "0"
        assert res["effective"]["size_bytes"] == SIZES[-1]
        # nccl-tests: algbw = size / time, busbw = algbw x (n - 1) / n for both; the slowest rank's
        busbw = min(SIZES[-1] / (np.median(r["step_ms"]) / 1e3) / 1e9 * (2 - 1) / 2 for r in ranks)
        assert res["metrics"][f"{prefix}_busbw_gbps"] == pytest.approx(busbw, rel=1e-6)
        assert res["metrics"][f"{prefix}_algbw_gbps"] == pytest.approx(2 * busbw, rel=1e-6)
        curve = res["curves"][f"{prefix}_busbw_gbps_by_size"]
        assert [s for s, _ in curve] == SIZES and all(bw > 0 for _, bw in curve)
        [run] = [r for r in children if r.data.params["workload.options.op"] == op]
        history = client.get_metric_history(run.info.run_id, f"{prefix}_busbw_gbps_by_size")
        assert sorted(m.step for m in history) == SIZES
        logged = {a.path for a in client.list_artifacts(run.info.run_id, "artifacts")}
        assert {f"artifacts/comms_{op}.png", f"artifacts/comms_{op}.csv"} <= logged
