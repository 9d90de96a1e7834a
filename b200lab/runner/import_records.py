"""``b200lab import PATH...``: committed records (a docs/measurements folder, any results tree) into a
tracking store as they were, to browse them in MLflow's UI::

    b200lab import docs/measurements/2026-12-07-baseline       # into ./mlflow.db, experiment b200lab-records
    mlflow ui --backend-store-uri sqlite:///mlflow.db

- one run per results.json, under one parent run per sweep (the records that share a ``sweep_id``),
  named and summarised as the sweep named them: params, metrics with the step times and curves, the
  result tags, dataset inputs, the results.json itself as an artifact, the parent's note, shared
  params, headline metrics and report;
- each run starts and ends when its job did (``started_at_ms``/``ended_at_ms``, else the times the
  store that logged it kept, exported beside the records as ``run_times.json``); a record with
  neither starts at the date in its folder's name, 00:00 UTC; the tag ``b200lab.times`` says which;
- idempotent: each run carries the record's own run id (or, without one, its path and digest) in the
  tag ``b200lab.imported_from``; an import skips what an earlier one created;
- the record files are read, never written.
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from b200lab.records import results as results_io
from b200lab.records import run_times
from b200lab.records.tracking import Tracker, flatten, log_record, probe, resolve_uri, result_tags

ORIGIN = "b200lab.imported_from"
SWEEP_ORIGIN = "b200lab.imported_sweep"
DATE_IN_PATH = re.compile(r"(20\d\d-\d\d-\d\d)")


def origin(path: Path, record: dict) -> str:
    """What identifies a record across imports: the run id it was logged under, else its content."""
    run_id = (record.get("mlflow") or {}).get("run_id")
    return run_id or f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"


def times(path: Path, record: dict) -> tuple[int | None, int | None, str]:
    """(start ms, end ms, how they were known)."""
    start, end = record.get("started_at_ms"), record.get("ended_at_ms")
    if start:
        return int(start), int(end or start), "recorded"
    logged = run_times.read_beside(path).get((record.get("mlflow") or {}).get("run_id") or "")
    if logged:
        return logged["start_ms"], logged["end_ms"], f"recorded by the store that logged the run ({run_times.FILE})"
    for part in reversed(path.absolute().parts):
        found = DATE_IN_PATH.search(part)
        if found:
            day = calendar.timegm(time.strptime(found.group(1), "%Y-%m-%d")) * 1000
            return day, day, f"not recorded (before 2026-12-07): {found.group(1)} 00:00 UTC, the folder's date"
    return None, None, "not recorded: the import's time"


def _imported(tracker: Tracker) -> dict[str, str]:
    """{origin: run id} of what earlier imports put in this experiment (runs and sweep parents)."""
    found: dict[str, str] = {}
    token = None
    while True:
        page = tracker.client.search_runs([tracker.experiment_id], max_results=1000, page_token=token)
        for run in page:
            for tag in (ORIGIN, SWEEP_ORIGIN):
                if tag in run.data.tags:
                    found[run.data.tags[tag]] = run.info.run_id
        token = page.token
        if not token:
            return found


def _sweeps(good: list[tuple[Path, dict]]) -> dict[str | None, list[tuple[Path, dict]]]:
    groups: dict[str | None, list[tuple[Path, dict]]] = defaultdict(list)
    for path, record in good:
        groups[record.get("sweep_id")].append((path, record))
    return groups


def _import_run(tracker: Tracker, path: Path, record: dict, parent_id: str | None, name: str) -> str:
    start, end, how = times(path, record)
    tags = {
        **result_tags(record),
        ORIGIN: origin(path, record),
        "b200lab.imported_path": str(path),
        "b200lab.times": how,
    }
    sha = (record.get("env") or {}).get("git_sha") or "unknown"
    run_id = tracker.create_run(name, tags, parent_id, git_sha=sha, start_ms=start)
    tracker.log_params(run_id, flatten(record["config"]))
    log_record(tracker, run_id, record, name, [path], end)
    return run_id


def _import_sweep(tracker: Tracker, sweep_id: str, members: list[tuple[Path, dict]], done: dict[str, str]) -> int:
    """The sweep's parent (found or created) and its runs not yet imported; returns the runs created."""
    from b200lab.records.points import sweep_name, unique_names
    from b200lab.reports import parent_summary

    records = [r for _, r in members]
    preset = (records[0].get("config") or {}).get("preset")
    spans = [times(p, r) for p, r in members]
    starts = [s for s, _, _ in spans if s]
    ends = [e for _, e, _ in spans if e]
    parent_id = done.get(sweep_id)
    if parent_id is None:
        tags = {"sweep": "true", SWEEP_ORIGIN: sweep_id, "preset": preset, "b200lab.times": spans[0][2]}
        sha = (records[0].get("env") or {}).get("git_sha") or "unknown"
        parent_id = tracker.create_run(
            sweep_name(records, preset), tags, git_sha=sha, start_ms=min(starts) if starts else None
        )
        done[sweep_id] = parent_id
    created = 0
    imported = []
    for (path, record), name in zip(members, unique_names(records)):
        key = origin(path, record)
        if key not in done:
            done[key] = _import_run(tracker, path, record, parent_id, name)
            created += 1
        mlflow = {**(record.get("mlflow") or {}), "run_id": done[key], "experiment_id": tracker.experiment_id}
        imported.append({**record, "mlflow": mlflow})
    if created:
        statuses = {r["status"] for r in records}
        status = "ok" if statuses == {"ok"} or statuses == {"ok", "oom"} else "error"
        with tempfile.TemporaryDirectory() as tmp:  # the report is made here, never in the records' folder
            report = parent_summary.publish(tracker, parent_id, imported, Path(tmp), preset, None, status)
            tracker.log_files(parent_id, report)
        tracker.set_tags(parent_id, {"status": status, "n_points": len(records)})
        tracker.end(parent_id, status, max(ends) if ends else None)
    return created


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="b200lab import", description=__doc__.split("\n\n")[0].replace("``", "`"))
    parser.add_argument("paths", nargs="+", type=Path, help="results.json files or folders holding them")
    parser.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    parser.add_argument("--experiment", default="b200lab-records", help="experiment name (default: b200lab-records)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"b200lab import: no such path: {', '.join(missing)}", file=sys.stderr)
        return 2
    good, bad = results_io.read_all(results_io.find(args.paths))
    for err in bad:
        print(f"b200lab import: skipped {err}", file=sys.stderr)
    if not good:
        if not bad:
            print(f"b200lab import: no results.json under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2 if not bad else 1
    uri = args.uri or resolve_uri(None)
    problem = probe(uri, 5.0)
    if problem:
        print(f"b200lab import: {problem}", file=sys.stderr)
        return 3
    tracker = Tracker(uri, args.experiment, system_metrics=False)
    done = _imported(tracker)
    created = 0
    for sweep_id, members in _sweeps(good).items():
        if sweep_id:
            created += _import_sweep(tracker, sweep_id, members, done)
            continue
        for path, record in members:  # single runs
            key = origin(path, record)
            if key not in done:
                from b200lab.records.points import point_name

                done[key] = _import_run(tracker, path, record, None, point_name(record, []))
                created += 1
    skipped = len(good) - created
    print(
        f"b200lab import: {created} run(s) into {uri}, experiment {args.experiment}"
        + (f"; {skipped} imported before, left as they are" if skipped else "")
    )
    return 1 if bad else 0
