"""precision=fp8_auto runs bf16 where a record shows FP8 losing to bf16 for the job's model and
workload (conf/precision/fp8_auto.yaml, ``fp8_lost``), says so in effective.reason, and every entry
of that table is a recorded same-card pair whose ratio the table states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from b200lab.precision.config.autocast import AutocastConfig
from b200lab.precision.config.fp8_auto import FP8AutoConfig
from support import FAST, INLINE, compose, results_files, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _job(*overrides: str):
    return compose(["precision=fp8_auto", *overrides])


def test_a_recorded_loss_makes_fp8_auto_run_bf16_and_name_the_record():
    job = _job("model=vit_l16", "seq=img224", "workload=train")
    overrides = FP8AutoConfig.job_overrides(job.precision, job)
    assert overrides["avoid_fp8"].startswith("recorded slower than bf16 for model=vit_l16 workload=train: 0.731x")
    assert "76a3ffbb bf16 vs 3acb80a5 fp8" in overrides["avoid_fp8"]
    config, passed = FP8AutoConfig.candidates(OmegaConf.merge(job.precision, overrides), "cuda", training=True)
    assert config is AutocastConfig and passed == [f"fp8: {overrides['avoid_fp8']}"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=gpt_1b", "workload=train"],  # a recorded win (docs/measurements/2026-11-26-fp8-moe)
        ["model=vit_l16", "seq=img224", "workload=attention"],  # no record of this workload
        ["model=vit_mini", "seq=img32", "workload=train"],  # nor of this size
    ],
)
def test_without_a_recorded_loss_fp8_auto_tries_fp8_first(overrides):
    job = _job(*overrides)
    assert FP8AutoConfig.job_overrides(job.precision, job) == {"compiled_model": False}
    _, passed = FP8AutoConfig.candidates(job.precision, "cuda", training=True)
    assert not any(reason.startswith("fp8: recorded") for reason in passed)


def test_every_recorded_loss_is_a_same_card_pair_of_records_with_the_stated_ratio():
    table = OmegaConf.load(ROOT / "conf" / "precision" / "fp8_auto.yaml").fp8_lost
    assert table
    for loss in table:
        records = [json.loads(p.read_text()) for p in (ROOT / loss.record / "runs").glob("*.results.json")]
        by_run = {r["mlflow"]["run_id"][:8]: r for r in records}
        bf16_run, fp8_run = loss.runs.split(" bf16 vs ")[0], loss.runs.split(" bf16 vs ")[1].split(" fp8")[0]
        bf16, fp8 = by_run[bf16_run], by_run[fp8_run]
        for record, precision in ((bf16, "bf16"), (fp8, "fp8")):
            assert record["config"]["precision"]["name"] == precision and record["status"] == "ok"
            assert (record["config"]["model"]["name"], record["config"]["workload"]["name"]) == (
                loss.model,
                loss.workload,
            )
        assert bf16["env"]["gpu_uuid"] == fp8["env"]["gpu_uuid"]  # the same card
        ratio = fp8["metrics"]["samples_per_s"] / bf16["metrics"]["samples_per_s"]
        assert f"{ratio:.3f}" == f"{loss.ratio:.3f}" and ratio < 1.0


@pytest.mark.e2e
def test_the_run_records_the_recorded_loss_as_its_reason(tmp_path, store):
    """On a CPU fp8_auto falls back anyway (no FP8 here); with a loss recorded for this job, the
    reason it records is that record, checked before Transformer Engine is even asked."""
    loss = "{model: tiny, workload: forward, ratio: 0.5, runs: 'a bf16 vs b fp8', record: somewhere}"
    done = run_cli(
        ["model=tiny", "workload=forward", "precision=fp8_auto", f"precision.fp8_lost=[{loss}]", INLINE, *FAST],
        tmp_path,
        store,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (record,) = results_files(tmp_path / "outputs")  # the run's own (its MLflow artifact copy is elsewhere)
    effective = record["effective"]["precision"]
    assert effective["ran"] == "no fp8 (precision=auto)" and effective["fallback"] is True
    assert effective["reason"] == (
        "fp8: recorded slower than bf16 for model=tiny workload=forward: 0.500x (a bf16 vs b fp8; somewhere); "
        "precision=fp8 runs it anyway"
    )
