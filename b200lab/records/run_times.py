"""Start and end times of recorded runs, read from the tracking store that logged them.

Records written before results.json kept ``started_at_ms`` (2026-12-07) still have their times in
the store of the machine that ran them (a GPU host's ``mlflow.db``, brought back in its tarball).
``b200lab.records.run_times STORE FOLDER`` writes them beside the records as ``run_times.json``
(``{run id: {"start_ms", "end_ms"}}``, merged with what the file held), and ``b200lab import`` reads
that file for a record that kept no times of its own. The records are not touched.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

FILE = "run_times.json"


def from_store(uri: str, run_ids: set[str]) -> dict[str, dict[str, int]]:
    """{run id: {start_ms, end_ms}} of those of ``run_ids`` the store at ``uri`` holds, finished ones only."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found: dict[str, dict[str, int]] = {}
    for experiment in client.search_experiments():
        token = None
        while True:
            page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token)
            for run in page:
                if run.info.run_id in run_ids and run.info.start_time and run.info.end_time:
                    found[run.info.run_id] = {"start_ms": run.info.start_time, "end_ms": run.info.end_time}
            token = page.token
            if not token:
                break
    return found


def record_run_ids(folder: Path) -> set[str]:
    """The run ids the records under ``folder`` were logged under (results.json and reference lines)."""
    from b200lab.records import results as results_io

    good, _ = results_io.read_all(results_io.find([folder]))
    ids = {(r.get("mlflow") or {}).get("run_id") for _, r in good}
    for lines in folder.rglob("*.jsonl"):
        ids |= {json.loads(line).get("run_id") for line in lines.read_text().splitlines() if line.strip()}
    return {i for i in ids if i}


def read_beside(path: Path) -> dict[str, dict[str, int]]:
    """The run_times.json in the folder of ``path`` or in one of its two parents (a folder's
    ``runs/`` and ``rerun/`` share the folder's file), else {}."""
    for folder in [path.parent, *list(path.parents)[1:3]]:
        found = folder / FILE
        if found.is_file():
            return _read(found.absolute())
    return {}


@functools.lru_cache(maxsize=16)
def _read(path: Path) -> dict[str, dict[str, int]]:
    """One read per file for an import's many records (the records and this file are never written by it)."""
    return json.loads(path.read_text())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m b200lab.records.run_times", description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="tracking URI of the store that logged the runs, e.g. sqlite:///mlflow.db")
    parser.add_argument("folder", type=Path, help="the records' folder; run_times.json is written in it")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"run_times: no such folder: {args.folder}", file=sys.stderr)
        return 2
    out = args.folder / FILE
    held = json.loads(out.read_text()) if out.is_file() else {}
    found = from_store(args.store, record_run_ids(args.folder))
    merged = {**held, **found}
    out.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
    _read.cache_clear()  # a later import in this process reads what was just written
    print(f"run_times: {len(found)} run(s) found in {args.store}; {out} holds {len(merged)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
