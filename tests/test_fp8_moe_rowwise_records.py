"""The figures docs/measurements/2026-12-07-fp8-moe-rowwise states in prose, recomputed from its
files: fp8_block against the plain Transformer Engine model (median job of three), and what each
run says it ran (the experts' path, the compile, the commit, the card)."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "2026-12-07-fp8-moe-rowwise"
README = (FOLDER / "README.md").read_text()


def _record(run: str) -> dict:
    found = [
        r
        for r in (json.loads(p.read_text()) for p in (FOLDER / "runs").glob("*.results.json"))
        if r["mlflow"]["run_id"].startswith(run)
    ]
    assert len(found) == 1, run
    return found[0]


def _reference_jobs(commit: str) -> list[dict]:
    path = FOLDER / "runs" / f"{commit}_te_reference_block.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("commit,lab_run", [("802ad5c", "4cba49f2"), ("3d793e1", "f75a774d")])
def test_fp8_block_against_the_plain_te_model_is_the_stated_ratio(commit, lab_run):
    jobs = _reference_jobs(commit)
    assert len(jobs) == 3 and {j["recipe"] for j in jobs} == {"block"}
    median = statistics.median(j["tokens_per_s"] for j in jobs)
    median_job = next(j for j in jobs if j["tokens_per_s"] == median)
    lab = _record(lab_run)
    assert lab["env"]["gpu_uuid"] == median_job["env"]["gpu_uuid"] and lab["env"]["git_sha"].startswith(commit)
    assert median_job["env"]["git_sha"].startswith(commit)
    ratio = lab["metrics"]["trial_tokens_per_s_median"] / median
    stated = re.search(rf"{median:,.0f} tokens/s \({median_job['run_id'][:8]};.*?\*\*([0-9.]+)x\*\*", README, re.S)
    assert stated, f"the README states no ratio beside {median:,.0f} ({median_job['run_id'][:8]})"
    assert float(stated.group(1)) == pytest.approx(ratio, abs=0.0005)
    assert lab["effective"]["compiled"] is True and lab["config"]["precision"]["recipe"] == "block"


def test_the_commands_as_typed_ran_the_paths_the_readme_names():
    auto = _record("6be409f7")  # set B: precision=fp8, the experts' default
    assert auto["config"]["precision"]["moe_experts"] == "auto" and auto["effective"]["compiled"] is True
    assert auto["effective"]["precision"]["moe_experts"]["setting"] == "auto"
    assert auto["effective"]["precision"]["moe_experts"]["ran"] == "rowwise"
    for run, path in [("8f3ac935", "rowwise"), ("0ba120bf", "te"), ("5a1a82f6", "rowwise"), ("db5aab8e", "te")]:
        assert _record(run)["effective"]["precision"]["moe_experts"]["ran"] == path


def test_the_gpu_tests_failed_at_one_commit_and_passed_at_the_next_as_stated():
    before = (FOLDER / "gpu_tests_802ad5c.xml").read_text()
    after = (FOLDER / "gpu_tests_3d793e1.xml").read_text()
    assert 'failures="1"' in before and 'tests="2"' in before
    error = float(re.search(r"assert (0\.\d+) &lt; 0\.01", before).group(1))
    assert f"was {100 * error:.2f}% from the float64" in README.replace("\n  ", " ") and "1 of 2 failed" in README
    assert 'failures="0"' in after and 'errors="0"' in after and 'tests="2"' in after and 'skipped="0"' in after
