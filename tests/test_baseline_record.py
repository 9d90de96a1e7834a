"""The committed GPU baseline (docs/measurements/2026-12-07-baseline) says what it is: its device calls
ran one lab source, the sha one call recorded names that source, baseline.json is its runs, and the
gate passes on the re-run at the baseline's commit."""

from __future__ import annotations

import json
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from b200lab.measure.environment import REPO_ROOT, SOURCE, tree_hash
from b200lab.reports.baseline import build

FOLDER = REPO_ROOT / "docs" / "measurements" / "2026-12-07-baseline"
CALL_1, CALL_2 = "be37e29", "6b2123c"  # call 1 recorded a725133+dirty.<tree of be37e29>; call 2 recorded 6b2123c


def _have(commit: str) -> bool:
    probe = subprocess.run(["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    return probe.returncode == 0


needs_history = pytest.mark.skipif(
    not (_have(CALL_1) and _have(CALL_2)), reason="needs the repository's history (a full clone, not a shallow one)"
)


def _records() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((FOLDER / "runs").glob("*.results.json"))]


@needs_history
def test_both_calls_ran_the_same_lab_code():
    diff = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "diff", "--stat", CALL_1, CALL_2, "--", "b200lab", "conf", "pyproject.toml"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert diff.stdout == ""


@needs_history
def test_the_dirty_sha_of_call_1_is_the_source_of_its_commit(tmp_path):
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", CALL_1, *SOURCE], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tmp_path, filter="data")
    shas = {r["env"]["git_sha"] for r in _records()}
    dirty = {s for s in shas if "+dirty." in s}
    assert dirty == {f"a725133f69cf59728b87553149006116fac35293+dirty.{tree_hash(Path(tmp_path))}"}
    assert {s[:7] for s in shas - dirty} == {CALL_2}


def test_baseline_json_holds_every_run_of_the_folder_as_recorded():
    committed = json.loads((FOLDER / "baseline.json").read_text())
    rebuilt = build(_records(), committed["source"])
    assert json.loads(json.dumps(rebuilt["points"])) == committed["points"]
    assert {p["status"] for p in committed["points"]} == {"ok"} and len(committed["points"]) == len(_records())
    assert all(p["env"]["gpu"] == "NVIDIA H100 80GB HBM3" for p in committed["points"])


def test_the_gate_passes_on_the_re_run_at_the_baseline_commit(capsys):
    """rerun/ ran the MoE pair and four attention points again at 6b2123c, the commit of the
    baseline's clean files: the gate run here on those files (not the committed gate.txt) passes,
    every gated metric checked."""
    from b200lab.reports.regression_gate import main as gate

    rerun = [json.loads(p.read_text()) for p in sorted((FOLDER / "rerun").glob("*.results.json"))]
    assert len(rerun) == 6 and {r["env"]["git_sha"][:7] for r in rerun} == {CALL_2}
    assert all(r["env"]["gpu"] == "NVIDIA H100 80GB HBM3" for r in rerun)
    assert gate(["--subset", "--baseline", str(FOLDER / "baseline.json"), str(FOLDER / "rerun")]) == 0
    out = capsys.readouterr().out
    # MoE: 5 metrics a point; attention: 4 (no MoE ratio), every one inside its band
    assert "gate: passed (26 ok, 0 improved" in out


def test_the_gpu_tier_of_the_baseline_passed_with_transformer_engine():
    import xml.etree.ElementTree as ET

    root = ET.parse(FOLDER / "gpu_tests.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
    cases = list(root.iter("testcase"))
    ran_te = [c for c in cases if "test_fp8_te" in c.get("classname") and c.find("skipped") is None]
    assert len(ran_te) >= 7 and all(c.find("failure") is None for c in ran_te)
    skipped = [c.find("skipped").get("message") for c in cases if c.find("skipped") is not None]
    assert all("torchao" in message for message in skipped)


def _record(run: str) -> dict:
    (found,) = [r for r in _records() if r["mlflow"]["run_id"].startswith(run)]
    return found


def test_readme_ratios_are_the_baselines_files():
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    median = lambda run: _record(run)["metrics"]["trial_tokens_per_s_median"]  # noqa: E731
    assert f"FP8 trains the hidden-4096 model at {median('ccc8a1e5') / median('f997350a'):.3f}x bf16" in readme
    lab = _record("beace53b")["metrics"]["samples_per_s"]
    (timm,) = [json.loads(line) for line in (FOLDER / "runs" / "reference_families.jsonl").read_text().splitlines()]
    assert timm["run_id"].startswith("8f973264") and timm["env"]["gpu"] == _record("beace53b")["env"]["gpu"]
    assert f"at {lab / timm['samples_per_s']:.3f}x timm's model" in readme
    assert f"({lab:.2f} vs {timm['samples_per_s']:.2f} images/s, pooled" in readme


def _te_reference() -> dict[str, list[dict]]:
    lines = [json.loads(line) for line in (FOLDER / "runs" / "te_reference.jsonl").read_text().splitlines()]
    by_recipe: dict[str, list[dict]] = {}
    for line in lines:
        by_recipe.setdefault(line["recipe"], []).append(line)
    return by_recipe


def _median_job(jobs: list[dict]) -> dict:
    return sorted(jobs, key=lambda job: job["tokens_per_s"])[len(jobs) // 2]


def test_the_plain_te_reference_is_three_jobs_a_recipe_and_readme_quotes_their_medians():
    by_recipe = _te_reference()
    assert sorted(by_recipe) == ["delayed", "none"] and all(len(jobs) == 3 for jobs in by_recipe.values())
    for jobs in by_recipe.values():
        assert {job["env"]["git_sha"][:7] for job in jobs} == {CALL_2}
        assert {job["env"]["transformer_engine"] for job in jobs} == {"2.20.2"}
        assert all(job["env"]["gpu"] == "NVIDIA H100 80GB HBM3" and job["run_id"] for job in jobs)
    bf16, fp8 = _median_job(by_recipe["none"]), _median_job(by_recipe["delayed"])
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    ratio = fp8["tokens_per_s"] / bf16["tokens_per_s"]
    assert f"gets {ratio:.3f}x from FP8 (median jobs, {fp8['run_id'][:8]} over {bf16['run_id'][:8]})" in readme
    lab_fp8 = _record("ccc8a1e5")["metrics"]["trial_tokens_per_s_median"]
    assert f"the lab's FP8 is {lab_fp8 / fp8['tokens_per_s']:.3f}x the plain model's" in readme


def _attention_ms(kernel: str, tokens: int) -> tuple[float, str]:
    (found,) = [
        r
        for r in _records()
        if r["config"]["workload"]["name"] == "attention"
        and r["effective"]["attention"]["kernel"] == kernel
        and r["config"]["seq"]["len"] == tokens
    ]
    return found["metrics"]["trial_step_ms_p50_median"], found["mlflow"]["run_id"][:8]


@pytest.mark.parametrize("tokens,label", [(4096, "4K"), (16384, "16K")])
def test_the_attention_speed_ratios_quoted_are_the_baselines_medians(tokens, label):
    sdpa, sdpa_run = _attention_ms("sdpa-cudnn", tokens)
    flash, flash_run = _attention_ms("flex-flash", tokens)
    triton, triton_run = _attention_ms("flex-triton", tokens)
    row = f"| {label} | {sdpa / flash:.3f}x | {sdpa / triton:.3f}x | {flash_run}, {triton_run}, {sdpa_run} |"
    assert row in (REPO_ROOT / "docs" / "attention.md").read_text()
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    if tokens == 16384:
        assert f"at 16K it is {sdpa / flash:.3f}x sdpa ({flash_run} vs {sdpa_run})" in readme
        assert f"{sdpa / triton:.3f}x ({triton_run})" in readme
    else:
        assert f"At 4K flex is {sdpa / flash:.3f}x sdpa on FLASH and {sdpa / triton:.3f}x on Triton" in readme


def test_serving_doc_quotes_the_baselines_serve_load_sweep():
    serving = " ".join((REPO_ROOT / "docs" / "serving.md").read_text().split())
    runs = ["c62ca54f", "0d419bd0", "6a0f5eeb"]
    metrics = [_record(run)["metrics"] for run in runs]
    assert [m["offered_qps"] for m in metrics] == pytest.approx([1.0, 2.0, 4.0], rel=0.02)
    first, second, third = (f"{m['request_throughput']:.2f}" for m in metrics)
    done = f"{first}, {second} and {third}"
    assert f"{done} completed requests/s at 1, 2 and 4 offered ({', '.join(runs)})" in serving
    assert "ttft p99 " + " / ".join(f"{m['ttft_ms_p99']:.1f}" for m in metrics) + " ms" in serving
    assert "tpot p50 " + " / ".join(f"{m['tpot_ms_p50']:.1f}" for m in metrics) + " ms" in serving
    assert all(m["goodput_fraction"] == 1.0 for m in metrics)  # "every request within the SLO"
