"""Every experiment preset runs once on CPU: CPU presets as they are, GPU presets on the tiny model."""

from __future__ import annotations

import pytest
import yaml

from support import REPO, results_files, run_cli, runs

PRESETS = sorted((REPO / "experiments").glob("*.yaml"))
pytestmark = pytest.mark.e2e
TINY = [
    "model=tiny",
    "seq=short",
    "run.device=cpu",
    "workload.warmup_steps=1",
    "workload.steps=2",
    "workload.min_time_s=0",
]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_runs_once(path, tmp_path, store):
    preset = yaml.safe_load(path.read_text())
    gpu_only = preset.get("run", {}).get("device") == "cuda"
    # in-process: the launcher is not what this test is about (test_cli runs torchrun)
    overrides = [*(TINY if gpu_only else []), "run.launcher=inline"]
    swept = preset.get("hydra", {}).get("sweeper", {}).get("params", {})
    if preset.get("workload", {}).get("options", {}).get("checkpoint") == "train":
        overrides = [
            *overrides,
            "workload.options.train_steps=5",
            "data.val_tokens=4096",
            "seq.len=64",
            "seq.batch=4",
        ]  # short training on short windows (the preset's own are 32 x 512 tokens), a slice of the held-out text
    if (preset.get("workload", {}).get("options", {}).get("grad_accum") or 1) > 2:
        # the accumulation path with 2 micro-batches; the preset's 8 add nothing but CPU time here
        overrides = [*overrides, "workload.options.grad_accum=2"]
    if gpu_only and any(
        p.startswith("fp8") and p not in ("fp8_auto", "fp8_weight_only")
        for p in str(swept.get("precision", "")).split(",")
    ):
        overrides = [*overrides, "precision=fp32,fp8_auto"]  # Transformer Engine needs a GPU; fp8_auto falls back here
    if gpu_only and "te" in str(swept.get("attention", "")).split(","):
        # attention=te needs CUDA and Transformer Engine, FlexAttention has no CPU backward: the
        # CPU-capable part of the sweep (both backends forward)
        overrides = [*overrides, "attention=sdpa,flex", "workload=forward"]
    if "experiment/nightly@_global_" in swept:
        # test_compose composes all of its points; one of each kind runs here (19 inline points cost a minute)
        overrides = [*overrides, "experiment/nightly@_global_=dense_1b_train,moe_e8k2,long_flex_32k_forward,fp8_te"]
    if "experiment/families@_global_" in swept:
        # the families' CPU-sized points (the tiny GPT's model/seq would replace the families)
        overrides = [o for o in overrides if not o.startswith(("model=", "seq="))]
        overrides = [*overrides, "experiment/families@_global_=vit_mini_forward,dit_mini_forward,dlrm_small_forward"]
    if {"override /workload": "serve"} in preset.get("defaults", []):
        # the load and its metrics, not a long run: the preset's GPU rates (1-4 requests/s) would wait
        # out real seconds here
        overrides = [*overrides, "workload.options.num_requests=8", "workload.options.qps=64,256"]
    if gpu_only and "compile" not in swept:
        # a GPU preset's fixed compile mode costs tens of seconds of CPU compiling per point here and
        # shows nothing its eager run does not (tests/test_cli.py runs a compiled job on CPU)
        overrides = [*overrides, "compile=none"]
    if "compile" in swept:
        # max-autotune's CPU autotuning costs minutes and shows nothing more than default does here
        overrides = [*overrides, "compile=none,default"]
    proc = run_cli(["-m", f"experiment={path.stem}", *overrides], tmp_path, store, timeout=900)
    assert proc.returncode == 0, proc.output
    rows = results_files(tmp_path / "multirun")
    assert rows and all(r["status"] == "ok" for r in rows)
    assert {r["config"]["preset"] for r in rows} == {path.stem}
    children = [r for r in runs(store["MLFLOW_TRACKING_URI"]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == len(rows) and all(c.data.tags["preset"] == path.stem for c in children)
