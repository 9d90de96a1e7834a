"""results.json as a typed, versioned record: readers name a bad file and go on with the rest.
In-process (sync and report's main), with a real sqlite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from b200lab.records import results as results_io
from b200lab.reports import report
from b200lab.runner import sync
from support import parents_and_children


def record(job_num: int, batch: int) -> dict:
    """A results.json as a job writes it, measured but never uploaded."""
    names = {"model": "tiny", "workload": "forward", "seq": "short", "precision": "auto", "attention": "sdpa"}
    config = {group: {"name": name} for group, name in names.items()}
    config["seq"]["batch"] = batch
    config["tracking"] = {"experiment": "b200lab"}
    return {
        "schema_version": 2,
        "status": "ok",
        "error": None,
        "point": f"seq.batch={batch}",
        "job_num": job_num,
        "requested": {"precision": "auto", "attention": "sdpa"},
        "effective": {},
        "config": config,
        "env": {"git_sha": "abc"},
        "metrics": {"tokens_per_s": 1000.0 * batch, "n_steps": 2},
        "step_ms": [1.0, 1.5],
        "mlflow": {
            "tracking_uri": None,
            "experiment_id": None,
            "run_id": None,
            "parent_run_id": None,
            "synced": False,
            "error": "x",
        },
    }


def test_a_truncated_results_json_is_named_and_the_others_still_go(tmp_path, store, capsys):
    for i, batch in enumerate((2, 4, 8)):
        (tmp_path / str(i)).mkdir()
        text = json.dumps(record(i, batch))
        (tmp_path / str(i) / "results.json").write_text(text[: len(text) // 2] if i == 1 else text)
    bad = tmp_path / "1" / "results.json"

    assert sync.main([str(tmp_path), "--uri", store["MLFLOW_TRACKING_URI"]]) == 1
    err = capsys.readouterr().err
    assert f"skipped {bad}: not valid JSON" in err
    uploaded = parents_and_children(store["MLFLOW_TRACKING_URI"])[0]
    assert sorted(r.data.params["seq.batch"] for r in uploaded) == ["2", "8"]
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.source.git.commit"] == "abc" for r in uploaded)

    assert report.main(["table", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert f"skipped {bad}" in err
    assert "seq.batch=2" in out and "seq.batch=8" in out and "seq.batch=4" not in out


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda r: r.pop("status"), "status: Field required"),
        (lambda r: r.update(status="fine"), "status: Input should be"),
        (lambda r: r.update(step_ms="fast"), "step_ms: Input should be a valid list"),
        (lambda r: r.update(schema_version=99), "schema_version 99 is newer"),
    ],
)
def test_a_record_that_does_not_match_names_its_file_and_field(tmp_path, damage, reason):
    rec = record(0, 2)
    damage(rec)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(results_io.ResultsError) as info:
        results_io.read(path)
    assert str(info.value).startswith(str(path)) and reason in str(info.value)


def test_records_keep_every_key_and_version_1_files_still_read(tmp_path):
    rec = record(0, 2)
    rec["measurement"] = {"timing": "perf_counter"}
    del rec["schema_version"]  # written before the field existed
    results_io.write(tmp_path, dict(rec))
    back = results_io.read(tmp_path / "results.json")
    assert back["schema_version"] == results_io.SCHEMA_VERSION and back["measurement"] == rec["measurement"]
    path = tmp_path / "old.results.json"
    path.write_text(json.dumps(rec))
    assert results_io.read(path)["metrics"] == rec["metrics"]


def test_the_recorded_measurements_still_read():
    files = results_io.find([Path(__file__).resolve().parents[1] / "docs" / "measurements"])
    good, bad = results_io.read_all(files)
    assert files and not bad
