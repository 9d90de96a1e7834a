"""The seams, proven from outside the package: a vision model family, a precision recipe, a masked
attention backend and a parallelism strategy, each one module plus one YAML under tests/plugins/,
registered through entry points (tests/plugins/lab_plugins-0.1.dist-info, what `pip install` of
a plugin package would write) and found through PYTHONPATH and hydra.searchpath. Nothing in
b200lab is edited for them."""

from __future__ import annotations

import json

import pytest

from support import FAST, REPO, results_files, run_cli, runs

PLUGINS = REPO / "tests" / "plugins"
SEARCH = f"hydra.searchpath=[file://{PLUGINS / 'conf'}]"
SHORT = FAST

pytestmark = pytest.mark.e2e


def plugin_env(store: dict) -> dict:
    return {**store, "PYTHONPATH": str(PLUGINS)}


def one_result(root):
    [res] = results_files(root)
    ranks = [json.loads(p.read_text()) for p in sorted(root.rglob("rank*.json"))]
    return res, ranks


def test_a_vision_family_trains_with_its_own_fields_and_flops(tmp_path, store):
    proc = run_cli(
        [
            SEARCH,
            "model=vit_tiny",
            "model.patch_size=4",
            "workload=train",
            "seq.batch=4",
            *SHORT,
            "run.launcher=inline",
        ],
        tmp_path,
        plugin_env(store),
    )
    assert proc.returncode == 0, proc.output
    res, [rank] = one_result(tmp_path / "outputs")
    assert res["effective"]["model"] == {"family": "vit", "target": "lab_vit.TinyViT"}
    # 32x32 images in 4x4 patches: 64 patches a sample, 4 samples a step
    assert res["metrics"]["tokens_per_step"] == 4 * 64
    # written out: per patch 2 * (patch embedding 3*16*64 + 2 layers * (4*64^2 + 2*64*128)) = 137216,
    # attention over all 64 patches 4 * 2 * 64 * 64 = 32768; per image 64 * 169984 + head 2*64*10;
    # training x3; 4 images
    assert rank["flops_per_step"] == 4 * 3 * (64 * (137216 + 32768) + 1280)
    assert 1.0 < res["metrics"]["loss"] < 4.0  # 10 random classes: about ln 10 = 2.3
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FINISHED" and run.data.params["model.patch_size"] == "4"
    assert run.data.metrics["tokens_per_s"] > 0


def test_a_plugin_component_validates_its_own_fields(tmp_path, store):
    proc = run_cli([SEARCH, "model=vit_tiny", "model.patch_size=5"], tmp_path, plugin_env(store))
    assert proc.returncode == 2
    assert "model.patch_size=5 does not divide model.image_size=32" in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == []


def test_a_precision_recipe_and_a_masked_backend_plug_in(tmp_path, store):
    proc = run_cli(
        [SEARCH, "precision=bf16_keep_norms", "attention=window8", *SHORT, "run.launcher=inline"],
        tmp_path,
        plugin_env(store),
    )
    assert proc.returncode == 0, proc.output
    res, _ = one_result(tmp_path / "outputs")
    prec, attn = res["effective"]["precision"], res["effective"]["attention"]
    # tiny: two RMSNorm weights of 128 per block, 2 blocks, and the final norm
    assert (prec["weight_dtype"], prec["fp32_params"], prec["peak_key"]) == ("bfloat16", 2 * 2 * 128 + 128, "bf16")
    assert attn["kernel"] == "sdpa with a dense sliding-window mask (window 8)"
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.data.tags["effective.attention_kernel"] == attn["kernel"] and run.data.params["attention.window"] == "8"
    # a recipe with no compute_dtype field is tagged by its name and its MFU basis
    assert (run.data.tags["effective.precision"], run.data.tags["effective.peak_key"]) == ("bf16_keep_norms", "bf16")


def test_all_four_plugins_in_one_two_rank_sweep(tmp_path, store):
    """The replicated strategy: both ranks read shard 0, so the job's tokens are one batch's, not two."""
    proc = run_cli(
        [
            "-m",
            SEARCH,
            "model=vit_tiny",
            "precision=bf16_keep_norms",
            "attention=window8",
            "parallelism=replicated",
            "workload=train",
            "seq.batch=2",
            *SHORT,
        ],
        tmp_path,
        plugin_env(store),
    )
    assert proc.returncode == 0, proc.output
    res, ranks = one_result(tmp_path / "multirun")
    assert [r["data_shard"] for r in ranks] == [0, 0]
    assert res["metrics"]["world_size"] == 2 and res["metrics"]["tokens_per_step"] == 2 * 16
    assert res["effective"]["parallelism"] == {"name": "replicated", "ranks": 2, "replicas": 2}
    children = [r for r in runs(store["MLFLOW_TRACKING_URI"]) if "mlflow.parentRunId" in r.data.tags]
    assert [c.info.status for c in children] == ["FINISHED"]
