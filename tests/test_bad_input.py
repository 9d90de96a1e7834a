"""Bad input: the message the user sees and the exit code."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from support import FAST, INLINE, cli_env, popen_cli, results_files, run_cli, runs

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=nope", ["Could not find 'model/nope'", "gpt_1b", "tiny"]),  # Hydra lists the options
        ("modle=tiny", ["Could not override 'modle'", "+modle=tiny"]),
        ("seq.batch=abc", ["Value 'abc' of type 'str' could not be converted to Integer", "seq.batch"]),
    ],
)
def test_hydra_composition_errors_exit_2_before_anything_runs(tmp_path, store, override, message):
    proc = run_cli([override], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert proc.stderr.startswith("b200lab: ")
    for text in message:
        assert text in proc.stderr
    assert "Traceback" not in proc.output
    assert runs(store["MLFLOW_TRACKING_URI"]) == [] and not (tmp_path / "outputs").exists()


def test_a_bad_value_in_a_sweep_exits_2_and_creates_no_run(tmp_path, store):
    proc = run_cli(["-m", "seq.batch=4,abc", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert "b200lab: Error merging override seq.batch=abc" in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == [] and results_files(tmp_path) == []


@pytest.mark.parametrize(
    "override,needle",
    [
        ("~precision", "precision: Missing mandatory value"),  # the group removed: composes, cannot run
        ("seq.len=${nope}", "seq.len: Interpolation key 'nope' not found"),
        ("model.name=${oc.env:B200LAB_NO_SUCH_VARIABLE}", "Environment variable 'B200LAB_NO_SUCH_VARIABLE' not found"),
    ],
)
def test_what_composes_but_cannot_resolve_is_a_configuration_error(override, needle, tmp_path, store):
    proc = run_cli([override, *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == [] and results_files(tmp_path) == []


def test_impossible_values_name_their_keys_and_create_no_run(tmp_path, store):
    proc = run_cli(["seq.batch=0", "model.n_heads=5", "parallelism.nproc=4096"], tmp_path, store)
    assert proc.returncode == 2
    assert "seq.batch=0: must be a positive integer" in proc.stderr
    assert "model.n_heads=5 does not divide model.d_model=128" in proc.stderr
    assert "parallelism.nproc=4096 exceeds the" in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == []


def test_learned_positions_cap_the_sequence(tmp_path, store):
    proc = run_cli(["model.pos=learned", "model.max_seq_len=256", "seq=1k"], tmp_path, store)
    assert proc.returncode == 2
    assert "seq.len=1024 exceeds model.max_seq_len=256" in proc.stderr


def test_unwritable_output_dir(tmp_path, store):
    (tmp_path / "a_file").write_text("")
    proc = run_cli([f"hydra.run.dir={tmp_path}/a_file/out", *FAST], tmp_path, store)
    assert proc.returncode == 2
    assert "hydra.run.dir=" in proc.stderr and "is not a writable directory" in proc.stderr


def test_unreachable_store_is_stated_results_kept_and_synced_later(tmp_path, store):
    proc = run_cli([*FAST, INLINE], tmp_path, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert proc.returncode == 3, proc.output
    assert "tracking server http://127.0.0.1:9 did not answer" in proc.output
    assert (
        "1 result(s) not in MLflow (http://127.0.0.1:9: tracking server http://127.0.0.1:9 did not answer"
        in proc.stderr
    )
    assert "`b200lab sync` uploads each to the store its results.json records (--uri URI for another)" in proc.stderr
    [res] = results_files(tmp_path / "outputs")
    assert res["status"] == "ok" and res["mlflow"]["synced"] is False and res["metrics"]["tokens_per_s"] > 0

    def sync(*extra):
        return subprocess.run(
            [sys.executable, "-m", "b200lab", "sync", *extra],
            cwd=tmp_path,
            env=cli_env(store),
            capture_output=True,
            text=True,
            timeout=300,
        )

    still_down = sync()  # the recorded store, not $MLFLOW_TRACKING_URI: a sweep never splits over two stores
    assert still_down.returncode == 3 and "tracking server http://127.0.0.1:9 did not answer" in still_down.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == []
    moved = sync("--uri", store["MLFLOW_TRACKING_URI"])
    assert moved.returncode == 0, moved.stdout + moved.stderr
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["tokens_per_s"] == pytest.approx(res["metrics"]["tokens_per_s"])
    assert run.data.tags["mlflow.source.git.commit"] == res["env"]["git_sha"]
    [res] = results_files(tmp_path / "outputs")
    assert res["mlflow"]["synced"] and res["mlflow"]["run_id"] == run.info.run_id
    again = sync()
    assert again.returncode == 0 and "nothing to upload" in again.stdout


def test_sweep_records_failures_and_oom_and_goes_on(tmp_path, store):
    # point 0 measures, point 1 is impossible, point 2 cannot allocate its batch (oom), point 3 still runs
    proc = run_cli(
        ["-m", "seq.batch=4,0,4000000000,2", "seq.len=128", "workload.warmup_steps=1", "workload.steps=2", INLINE],
        tmp_path,
        store,
    )
    assert proc.returncode == 1, proc.output
    by_batch = {r["config"]["seq"]["batch"]: r for r in results_files(tmp_path / "multirun")}
    assert by_batch[4]["status"] == "ok" and by_batch[2]["status"] == "ok"
    assert by_batch[0]["status"] == "error" and "seq.batch=0" in by_batch[0]["error"]
    assert by_batch[4000000000]["status"] == "oom" and "allocate" in by_batch[4000000000]["error"]
    status = {
        r.data.params.get("seq.batch"): (r.info.status, r.data.tags.get("status"))
        for r in runs(store["MLFLOW_TRACKING_URI"])
        if "mlflow.parentRunId" in r.data.tags
    }
    assert status == {
        "4": ("FINISHED", "ok"),
        "0": ("FAILED", "error"),
        "4000000000": ("FINISHED", "oom"),
        "2": ("FINISHED", "ok"),
    }
    assert "oom" in proc.stdout and "error" in proc.stdout


def _interrupt_after_first_timed_step(proc: subprocess.Popen) -> str:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "timed" in line:
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
            break
    return "".join(seen) + proc.communicate(timeout=120)[0]


def test_ctrl_c_ends_the_run_killed_with_measurements_kept(tmp_path, store):
    p = popen_cli(["seq=short", "workload.steps=1000000"], tmp_path, store)
    out = _interrupt_after_first_timed_step(p)
    assert p.returncode == 130, out
    [res] = results_files(tmp_path / "outputs")
    assert res["status"] == "interrupted" and res["metrics"]["n_steps"] > 0
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.info.status == "KILLED" and run.data.metrics["n_steps"] == res["metrics"]["n_steps"]


def test_ctrl_c_in_a_sweep_kills_the_parent_run_too(tmp_path, store):
    p = popen_cli(["-m", "seq.batch=2,4", "seq=short", "workload.steps=1000000", INLINE], tmp_path, store)
    out = _interrupt_after_first_timed_step(p)
    assert p.returncode == 130, out
    [res] = results_files(tmp_path / "multirun")  # the second point never started
    assert res["status"] == "interrupted" and res["metrics"]["n_steps"] > 0
    statuses = {
        ("child" if "mlflow.parentRunId" in r.data.tags else "parent"): r.info.status
        for r in runs(store["MLFLOW_TRACKING_URI"])
    }
    assert statuses == {"parent": "KILLED", "child": "KILLED"}


def test_a_sweep_point_that_cannot_resolve_is_recorded_failed_and_the_sweep_goes_on(tmp_path, store):
    proc = run_cli(["-m", "seq.name=a,${oc.env:B200LAB_NO_SUCH_VARIABLE}", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 1, proc.output
    by_status = {
        r.data.tags["status"]: r for r in runs(store["MLFLOW_TRACKING_URI"]) if "mlflow.parentRunId" in r.data.tags
    }
    assert set(by_status) == {"ok", "error"}
    assert (
        "B200LAB_NO_SUCH_VARIABLE" in by_status["error"].data.tags["error"]
        and by_status["error"].info.status == "FAILED"
    )
    [parent] = [r for r in runs(store["MLFLOW_TRACKING_URI"]) if "mlflow.parentRunId" not in r.data.tags]
    assert {r.data.tags["mlflow.parentRunId"] for r in by_status.values()} == {parent.info.run_id}


def test_a_bare_number_for_a_group_option_says_what_to_type(tmp_path, store):
    proc = run_cli(["seq=2048"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert "options are names, never bare numbers" in proc.stderr and "seq.len=2048" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_version_names_the_lab(tmp_path):
    proc = run_cli(["--version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("b200lab ")
