"""`b200lab import`: committed records into a real sqlite store as they were (parent/child layout,
start and end times, original run ids), twice without duplicates, the record files untouched."""

from __future__ import annotations

import calendar
import hashlib
import json
import random
import shutil
from pathlib import Path

from mlflow import MlflowClient

from b200lab.records import results as results_io
from b200lab.runner.import_records import ORIGIN, main

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "docs" / "measurements" / "2026-12-07-reverify"


def all_runs(uri: str, experiment: str = "b200lab-records") -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def digests(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_committed_folder_imports_once_with_its_layout_and_the_files_untouched(store, capsys):
    uri = store["MLFLOW_TRACKING_URI"]
    records = [results_io.read(p) for p in results_io.find([FOLDER])]
    before = digests(FOLDER)

    assert main([str(FOLDER), "--uri", uri]) == 0
    first = all_runs(uri)
    assert main([str(FOLDER), "--uri", uri]) == 0
    assert "imported before, left as they are" in capsys.readouterr().out
    again = all_runs(uri)
    assert digests(FOLDER) == before  # read, never written

    assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in first)
    children = [r for r in again if ORIGIN in r.data.tags]
    parents = [r for r in again if r.data.tags.get("sweep") == "true"]
    sweeps = {r["sweep_id"] for r in records if r.get("sweep_id")}
    assert len(children) == len(records) and len(parents) == len(sweeps)
    assert sorted(r.data.tags[ORIGIN] for r in children) == sorted(r["mlflow"]["run_id"] for r in records)
    by_origin = {r.data.tags[ORIGIN]: r for r in children}
    parent_of_sweep = {p.data.tags["b200lab.imported_sweep"]: p.info.run_id for p in parents}
    day = calendar.timegm((2026, 12, 7, 0, 0, 0)) * 1000  # the folder's date: these records kept no times
    for record in records:
        run = by_origin[record["mlflow"]["run_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent_of_sweep[record["sweep_id"]]
        assert run.info.start_time == day and "the folder's date" in run.data.tags["b200lab.times"]
        assert run.info.status == "FINISHED" and run.data.tags["git_sha"] == record["env"]["git_sha"]
        for name in ("tokens_per_s", "step_ms_p50"):
            if name in record["metrics"]:
                assert run.data.metrics[name] == record["metrics"][name]
    for parent in parents:
        assert parent.data.params  # the settings its points share


def test_recorded_start_and_end_times_are_the_runs_and_a_bad_file_is_named(store, tmp_path, capsys):
    uri = store["MLFLOW_TRACKING_URI"]
    source = results_io.find([FOLDER])[0]
    record = json.loads(source.read_text())
    start = random.randint(1_700_000_000_000, 1_800_000_000_000)
    end = start + random.randint(1_000, 3_600_000)
    record.update(started_at_ms=start, ended_at_ms=end, sweep_id=None)
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "one.results.json").write_text(json.dumps(record))
    (folder / "cut.results.json").write_text(source.read_text()[:200])  # truncated

    assert main([str(folder), "--uri", uri]) == 1  # imported what it could; the bad file is named
    assert "cut.results.json: not valid JSON" in capsys.readouterr().err
    [run] = all_runs(uri)
    assert (run.info.start_time, run.info.end_time) == (start, end)
    assert run.data.tags["b200lab.times"] == "recorded"
    history = MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "step_ms")
    assert history and {m.timestamp for m in history} == {end}


def test_bad_input_exits_2_saying_why(store, tmp_path, capsys):
    uri = store["MLFLOW_TRACKING_URI"]
    assert main([str(tmp_path / "nowhere"), "--uri", uri]) == 2
    assert "no such path" in capsys.readouterr().err
    empty = tmp_path / "empty"
    shutil.copytree(FOLDER, empty, ignore=shutil.ignore_patterns("*.results.json", "*.jsonl"))
    assert main([str(empty), "--uri", uri]) == 2
    assert "no results.json under" in capsys.readouterr().err


def test_times_the_logging_store_kept_are_exported_beside_the_records_and_imported(store, tmp_path, capsys):
    """A record from before results.json kept times: run_times exports its start and end from the
    store that logged it (a real sqlite store here), and import gives the run those, while a record
    the file does not name starts at its folder's date."""
    from b200lab.records import run_times

    device = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'device.db'}")  # the GPU host's store, brought back
    experiment = device.create_experiment("b200lab")
    start = random.randint(1_700_000_000_000, 1_800_000_000_000)
    end = start + random.randint(1_000, 3_600_000)
    logged = device.create_run(experiment, start_time=start)
    device.set_terminated(logged.info.run_id, end_time=end)

    source, other = results_io.find([FOLDER])[:2]
    timed = {**json.loads(source.read_text()), "sweep_id": None}
    timed["mlflow"] = {**timed["mlflow"], "run_id": logged.info.run_id}
    untimed = {**json.loads(other.read_text()), "sweep_id": None}
    folder = tmp_path / "2026-11-30-records"
    (folder / "runs").mkdir(parents=True)
    (folder / "runs" / "timed.results.json").write_text(json.dumps(timed))
    (folder / "runs" / "untimed.results.json").write_text(json.dumps(untimed))

    assert run_times.main([f"sqlite:///{tmp_path / 'device.db'}", str(folder)]) == 0
    written = json.loads((folder / run_times.FILE).read_text())
    assert written == {logged.info.run_id: {"start_ms": start, "end_ms": end}}  # the untimed record's run is not there
    assert run_times.main([f"sqlite:///{tmp_path / 'device.db'}", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err

    uri = store["MLFLOW_TRACKING_URI"]
    assert main([str(folder), "--uri", uri]) == 0
    by_origin = {r.data.tags[ORIGIN]: r for r in all_runs(uri)}
    run = by_origin[logged.info.run_id]
    assert (run.info.start_time, run.info.end_time) == (start, end)
    assert run.data.tags["b200lab.times"].startswith("recorded by the store that logged the run")
    day = calendar.timegm((2026, 11, 30, 0, 0, 0)) * 1000
    assert by_origin[untimed["mlflow"]["run_id"]].info.start_time == day


def test_the_baseline_folders_exported_times_name_its_records():
    """docs/measurements/2026-12-07-baseline/run_times.json came from the device calls' stores: every
    run it names is one of the folder's records, and each ran inside the folder's day."""
    from b200lab.records import run_times

    baseline = ROOT / "docs" / "measurements" / "2026-12-07-baseline"
    written = json.loads((baseline / run_times.FILE).read_text())
    assert written and set(written) <= run_times.record_run_ids(baseline)
    day = calendar.timegm((2026, 12, 7, 0, 0, 0)) * 1000
    assert all(day <= t["start_ms"] <= t["end_ms"] < day + 86_400_000 for t in written.values())
