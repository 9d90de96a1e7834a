"""The component seams' bad input through the real CLI: the message the user sees, exit 2, and
nothing created (no MLflow run, no results, no torchrun)."""

from __future__ import annotations

import pytest

from support import run_cli, runs

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (
            ["workload._target_=os.system"],
            "workload._target_='os.system' is not a registered workload component, so it is not imported",
        ),
        (["model._target_=planted.Model"], "model._target_='planted.Model' is not a registered model component"),
        (["+seq.bach=4"], "seq.bach: not a field of SeqConfig"),
        (["+model.n_experts=8"], "mixture-of-experts is its own model family"),
        (["precision.compute_dtype=fp8"], "FP8 needs an FP8 recipe class"),
    ],
)
def test_seam_refusals_exit_2_and_create_nothing(overrides, needle, tmp_path, store):
    marker = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    proc = run_cli(overrides, tmp_path, {**store, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2, proc.output
    assert needle in proc.stderr
    assert not marker.exists()
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("ranks"))  # no job, no torchrun
    assert runs(store["MLFLOW_TRACKING_URI"]) == []


def test_unknown_field_without_plus_is_a_composition_error_with_exit_2(tmp_path, store):
    proc = run_cli(["model.n_experts=8"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert "n_experts" in proc.stderr and not (tmp_path / "outputs").exists()
