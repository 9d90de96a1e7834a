"""`b200lab baseline save` and `b200lab gate` on a real 4-point sweep: the sweep passes against its own
baseline; a candidate made slower fails with its offending rows printed; a changed GPU is flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_sweep import tiny_sweep

from support import run_cli

pytestmark = pytest.mark.e2e
RATES = ("tokens_per_s", "tokens_per_s_per_gpu", "tflops", "mfu")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, template_store):
    sweep = tiny_sweep(tmp_path_factory, template_store)
    out = tmp_path_factory.mktemp("baseline") / "baseline.json"
    proc = run_cli(
        ["baseline", "save", "--parent", sweep["parent_run_id"], "--out", str(out)],
        out.parent,
        {"MLFLOW_TRACKING_URI": sweep["uri"]},
    )
    assert proc.returncode == 0, proc.output
    return sweep, out


def _candidate(sweep: dict, tmp_path: Path, change) -> Path:
    """A copy of the sweep's results.json files with ``change`` applied to each record."""
    for path in Path(sweep["sweep_dir"]).rglob("results.json"):
        record = json.loads(path.read_text())
        change(record)
        target = tmp_path / "candidate" / path.parent.name / "results.json"
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(record))
    return tmp_path / "candidate"


def test_baseline_records_every_point_with_its_run_and_spread(baseline):
    sweep, path = baseline
    data = json.loads(path.read_text())
    assert len(data["points"]) == 4 and data["schema"] == "b200lab.reports.baseline/1"
    for p in data["points"]:
        assert p["key"].startswith("precision=") and p["run_id"] and p["card"] == "cpu" and p["git_sha"]
        assert p["metrics"]["tokens_per_s"] > 0 and p["band"][0] <= 1 <= p["band"][1] and p["n_steps"] == 5


def test_gate_passes_against_its_own_baseline(baseline):
    sweep, path = baseline
    proc = run_cli(
        ["gate", "--baseline", str(path), "--parent", sweep["parent_run_id"]],
        path.parent,
        {"MLFLOW_TRACKING_URI": sweep["uri"]},
    )
    assert proc.returncode == 0, proc.output
    assert "gate: passed" in proc.stdout and "REGRESSION" not in proc.output and "CHANGED" not in proc.output


def test_gate_fails_on_a_slower_candidate_and_prints_the_offending_rows(baseline, tmp_path):
    sweep, path = baseline

    [base] = [
        p for p in json.loads(path.read_text())["points"] if "precision=fp32" in p["key"] and "seq.len=64" in p["key"]
    ]
    factor = (
        3 * base["band"][1] / base["band"][0]
    )  # slower by three times the point's own p10..p90 spread (CPU steps are noisy)

    def slower(record):
        if "seq.len=64 precision=fp32" in record["point"]:
            record["step_ms"] = [t * factor for t in record["step_ms"]]
            for key in record["metrics"]:
                if key.startswith("step_ms_"):
                    record["metrics"][key] *= factor
                elif key in RATES:
                    record["metrics"][key] /= factor

    proc = run_cli(["gate", "--baseline", str(path), str(_candidate(sweep, tmp_path, slower))], tmp_path)
    assert proc.returncode == 1, proc.output
    offending = proc.stderr[proc.stderr.index("offending row(s):") :].splitlines()[3:]
    assert offending and all(
        "precision=fp32" in line and "seq.len=64" in line and "REGRESSION" in line for line in offending
    )
    assert {line.split()[2] for line in offending} >= {"tokens_per_s", "step_ms_p50"}  # point: the two keys that vary
    assert all(len(line) <= 120 for line in proc.stderr.splitlines() + proc.stdout.splitlines() if "  " in line)


def test_gate_flags_a_changed_gpu_instead_of_comparing(baseline, tmp_path):
    sweep, path = baseline

    def on_h100(record):
        record["env"].update(gpu="NVIDIA H100 80GB HBM3", gpu_count=1)

    proc = run_cli(["gate", "--baseline", str(path), str(_candidate(sweep, tmp_path, on_h100))], tmp_path)
    assert proc.returncode == 4, proc.output
    assert "HARDWARE CHANGED gpu: None -> NVIDIA H100 80GB HBM3" in proc.stderr and "no verdict" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--baseline", "missing.json", "."], "cannot read baseline missing.json"),
        (["--baseline", "BASE", "--threshold", "tokens_per_s=fast", "."], "'fast' is not a number"),
    ],
)
def test_gate_bad_input_says_why_and_exits_2(baseline, tmp_path, args, message):
    _, path = baseline
    proc = run_cli(["gate", *[str(path) if a == "BASE" else a for a in args]], tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.output


def test_gate_subset_lists_points_not_run_and_still_fails_on_a_regression(baseline, tmp_path):
    sweep, path = baseline
    keep = "seq.len=64 precision=fp32"

    def only_one_point(record):
        if keep not in record["point"]:
            record["status"] = "drop"

    folder = _candidate(sweep, tmp_path, only_one_point)
    for results in folder.rglob("results.json"):
        if json.loads(results.read_text())["status"] == "drop":
            results.unlink()
    assert len(list(folder.rglob("results.json"))) == 1

    whole = run_cli(["gate", "--baseline", str(path), str(folder)], tmp_path)
    assert whole.returncode == 1 and "missing" in whole.stderr, whole.output
    subset = run_cli(["gate", "--baseline", str(path), str(folder), "--subset"], tmp_path)
    assert subset.returncode == 0, subset.output
    assert subset.stdout.count("not run") == 3 + 1 and "3 baseline point(s) not run" in subset.stdout

    record = json.loads(next(folder.rglob("results.json")).read_text())
    band = next(
        p["band"] for p in json.loads(path.read_text())["points"] if "precision=fp32" in p["key"] and "64" in p["key"]
    )
    factor = 3 * band[1] / band[0]
    record["metrics"]["tokens_per_s"] /= factor
    next(folder.rglob("results.json")).write_text(json.dumps(record))
    slower = run_cli(["gate", "--baseline", str(path), str(folder), "--subset"], tmp_path)
    assert slower.returncode == 1 and "REGRESSION" in slower.stderr, slower.output

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "0").mkdir(parents=True)
    record["point"] = "model=gpt_8b"
    (elsewhere / "0" / "results.json").write_text(json.dumps(record))
    none = run_cli(["gate", "--baseline", str(path), str(elsewhere), "--subset"], tmp_path)
    assert none.returncode == 2 and "no candidate point is a baseline point" in none.stderr, none.output
