"""A sweep's bookkeeping, kept in files under its dir so that any Hydra launcher (the basic one,
joblib, submitit on SLURM) gives the same MLflow layout and exit code.

    mlflow_parent.json   the sweep's id, store, parent run id and its state:
                         pending (no job yet) | created | unreachable (retried by the next job)
                         | failed (an error: the children are orphans, the exit code says 1)
    N/results.json       each job's record, stamped with the sweep's id

The first job to start creates the parent run (under a lock on the sweep dir), so a sweep that
fails to compose creates no run; whoever ends the sweep reads the results back to close the
parent and pick the exit code.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from b200lab.records import results as results_io
from b200lab.records.points import sweep_name
from b200lab.records.store_lock import file_lock
from b200lab.records.tracking import Tracker, probe, resolve_uri
from b200lab.reports.summary import table, write_csv

PARENT_FILE = "mlflow_parent.json"
LOCK_FILE = ".b200lab.lock"


def read_parent(sweep_dir: Path) -> dict | None:
    path = Path(sweep_dir) / PARENT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_parent(sweep_dir: Path, info: dict) -> None:
    path = Path(sweep_dir) / PARENT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(path)


def start(sweep_dir: Path, tracking, name: str, tags: dict) -> dict:
    """Record a new sweep; no MLflow call yet (see parent_run)."""
    from b200lab.measure.environment import git_sha

    info = {
        "sweep_id": uuid.uuid4().hex,
        "state": "pending",
        "tracking_uri": resolve_uri(tracking.uri),
        "experiment": tracking.experiment,
        "probe_timeout_s": float(tracking.probe_timeout_s),
        "run_id": None,
        "name": name,
        "tags": {**tags, "git_sha": git_sha()},
        "started_at_ms": results_io.now_ms(),
    }
    with file_lock(Path(sweep_dir) / LOCK_FILE):
        write_parent(sweep_dir, info)
    return info


def parent_run(sweep_dir: Path) -> dict:
    """The sweep's record, with the parent run created if this is the first job that can reach
    the store. Each job calls it; the lock makes exactly one of them create the run."""
    with file_lock(Path(sweep_dir) / LOCK_FILE):
        info = read_parent(sweep_dir)
        if info is None or info.get("state") not in ("pending", "unreachable"):
            return info or {}
        problem = probe(info["tracking_uri"], info.get("probe_timeout_s", 3.0))
        if problem:
            info.update(state="unreachable", error=problem)
        else:
            try:
                tracker = Tracker(info["tracking_uri"], info["experiment"], system_metrics=False)
                name = sweep_name(
                    [], info["tags"].get("preset"), info["tags"].get("overrides")
                )  # renamed from the points at the end
                run_id = tracker.create_run(
                    name,
                    {"sweep": "true", **info["tags"]},
                    git_sha=info["tags"].get("git_sha"),
                    start_ms=info.get("started_at_ms"),
                )
                info.update(
                    state="created", run_id=run_id, experiment_id=tracker.experiment_id, error=None, closed=False
                )
            except Exception as exc:
                info.update(state="failed", error=f"MLflow: {type(exc).__name__}: {exc}")
                print(
                    f"b200lab: could not create the sweep's parent run ({info['error']}); its points are logged "
                    "without a parent",
                    file=sys.stderr,
                )
        write_parent(sweep_dir, info)
        return info


def rows(sweep_dir: Path) -> tuple[list[dict], list[results_io.ResultsError]]:
    """This sweep's job records (an older sweep's files left in a reused dir are skipped)."""
    parent = read_parent(sweep_dir) or {}
    good, bad = results_io.read_all(results_io.find([sweep_dir]))
    mine = [r for _, r in good if r.get("sweep_id") == parent.get("sweep_id")]
    return sorted(mine, key=lambda r: r.get("job_num", 0)), bad


def finish(sweep_dir: Path, interrupted: bool = False) -> tuple[list[dict], list[results_io.ResultsError]]:
    """Summary table, CSV and chart; close the parent run with the sweep's status. Returns the
    records it read."""
    found, bad = rows(sweep_dir)
    if found:
        print("\n" + table(found))
    csv_path = write_csv(found, Path(sweep_dir) / "summary.csv")
    artifacts = [csv_path, Path(sweep_dir) / PARENT_FILE]
    try:
        from b200lab.reports.plot import plot

        plot(found, Path(sweep_dir) / "summary.png")
        artifacts.append(Path(sweep_dir) / "summary.png")
    except ValueError:
        pass  # no point measured a rate: nothing to draw
    except Exception as exc:  # a chart must never cost the sweep its bookkeeping
        print(f"b200lab: no summary.png ({type(exc).__name__}: {exc})")
    for err in bad:
        print(f"b200lab: skipped {err}", file=sys.stderr)
    statuses = [r["status"] for r in found]
    print(
        f"b200lab: sweep {sweep_dir}: {len(found)} points, "
        + ", ".join(f"{s} {statuses.count(s)}" for s in sorted(set(statuses)))
    )
    report = _guard(found, Path(sweep_dir), artifacts)
    close_parent(sweep_dir, statuses, artifacts, interrupted, report, found)
    return found, bad


def _guard(found: list[dict], sweep_dir: Path, artifacts: list[Path]):
    """The accuracy guard's report (b200lab/reports/accuracy_guard.py) when the sweep's config asks for one."""
    from b200lab.reports import accuracy_guard as guard

    asked = guard.settings(found)
    if asked is None:
        return None
    report = guard.evaluate(found, *asked)
    print("\n" + guard.table(report))
    artifacts.append(guard.write_csv(report, sweep_dir / "guard.csv"))
    if report.failed:
        print("b200lab: the accuracy guard failed", file=sys.stderr)
    with file_lock(sweep_dir / LOCK_FILE):
        parent = read_parent(sweep_dir)
        if parent:
            write_parent(sweep_dir, {**parent, "guard_failed": report.failed})
    return report


def close_parent(
    sweep_dir: Path,
    statuses: list[str],
    artifacts: list[Path],
    interrupted: bool = False,
    guard_report=None,
    records: list[dict] | None = None,
) -> bool:
    with file_lock(Path(sweep_dir) / LOCK_FILE):
        parent = read_parent(sweep_dir)
        if not parent or not parent.get("run_id"):
            return False
        status = (
            "interrupted" if interrupted else ("error" if "error" in statuses or "interrupted" in statuses else "ok")
        )
        if guard_report is not None and guard_report.failed and status == "ok":
            status = "error"
        try:
            tracker = Tracker(parent["tracking_uri"], parent["experiment"], system_metrics=False)
            if guard_report is not None:
                _log_guard(tracker, parent["run_id"], guard_report)
            tracker.set_tags(
                parent["run_id"],
                {"status": status, "n_points": len(statuses), **{f"n_{s}": statuses.count(s) for s in set(statuses)}},
            )
            artifacts = artifacts + _summary(tracker, parent, records or [], Path(sweep_dir), status)
            tracker.log_files(parent["run_id"], artifacts)
            ends = [r["ended_at_ms"] for r in records or [] if r.get("ended_at_ms")]
            tracker.end(parent["run_id"], status, max(ends) if ends else None)  # when its last point ended,
            parent.update(closed=True, close_error=None)  # also when `b200lab sync` closes it days later
        except Exception as exc:
            parent.update(closed=False, close_error=f"MLflow: {type(exc).__name__}: {exc}")
            print(
                f"b200lab: could not close the sweep's parent run ({parent['close_error']}); `b200lab sync` retries",
                file=sys.stderr,
            )
        write_parent(sweep_dir, parent)
        return bool(parent["closed"])


def _summary(tracker, parent: dict, records: list[dict], sweep_dir: Path, status: str) -> list[Path]:
    """The parent run as the sweep's summary (b200lab/reports/parent_summary.py); never at the cost of closing it."""
    from b200lab.reports import parent_summary

    if not records:
        return []
    try:
        return parent_summary.publish(
            tracker,
            parent["run_id"],
            records,
            sweep_dir,
            parent["tags"].get("preset"),
            parent["tags"].get("overrides"),
            status,
        )
    except Exception as exc:
        print(f"b200lab: the sweep's summary is incomplete ({type(exc).__name__}: {exc})", file=sys.stderr)
        return []


def _log_guard(tracker, parent_run_id: str, report) -> None:
    """Each point's change and speedup on its own run; the verdict on the parent."""
    for row in report.rows:
        if row.run_id and row.ppl_delta is not None:
            tracker.log_metrics(
                row.run_id,
                {"ppl_delta": row.ppl_delta, **({"speedup_vs_reference": row.speedup} if row.speedup else {})},
            )
        if row.run_id:
            tracker.set_tags(row.run_id, {"guard": row.status})
    tracker.set_tags(
        parent_run_id,
        {
            "guard": "failed" if report.failed else "passed",
            "guard.reference": report.reference,
            "guard.max_ppl_delta": report.max_ppl_delta,
        },
    )


def exit_code(records: list[dict], bad: list, parent: dict | None = None) -> int:
    """130 interrupted; 1 a point errored, the accuracy guard failed, a record is unreadable or
    the parent run could not be created; 3 something is not in MLflow; else 0."""
    statuses = [r["status"] for r in records]
    if "interrupted" in statuses:
        return 130
    if "error" in statuses or bad or (parent or {}).get("state") == "failed" or (parent or {}).get("guard_failed"):
        return 1
    if unsynced(records) or (parent or {}).get("closed") is False:
        return 3
    return 0


def unsynced(records: list[dict]) -> list[dict]:
    return [r for r in records if not r.get("mlflow", {}).get("synced")]
