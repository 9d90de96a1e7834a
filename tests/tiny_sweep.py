"""One real 4-point tiny sweep (seq.len 32, 64 x precision fp32, bf16) in a real sqlite MLflow store,
shared by the report, gate, MLflow-layout and browser tests: the first test that asks runs it (about
10 s), the others reuse it from the session's temp dir, on either pytest-xdist worker."""

from __future__ import annotations

import json
import os
from pathlib import Path

from filelock import FileLock

from support import INLINE, copy_store, run_cli

ARGS = [
    "-m",
    "seq=short",
    "seq.len=32,64",
    "precision=fp32,bf16",
    "workload.warmup_steps=1",
    "workload.steps=5",
    INLINE,
    "tracking.system_metrics=false",
]


def tiny_sweep(tmp_path_factory, template_store: Path) -> dict:
    """{uri, dir, sweep_dir, output, parent_run_id}; the sweep is run once per test session. Under
    pytest-xdist the workers share it: the first to ask runs it in the session's directory (above the
    workers' own), holding a lock that the others wait on."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's directory, shared by its workers
    with FileLock(base / "tiny_sweep.lock"):
        return _run_once(base / "tiny_sweep", template_store)


def _run_once(root: Path, template_store: Path) -> dict:
    done = root / "sweep.json"
    if done.exists():
        return json.loads(done.read_text())
    root.mkdir(exist_ok=True)
    uri = copy_store(template_store, root)
    proc = run_cli(ARGS, root, {"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.output
    [parent_file] = list((root / "multirun").rglob("mlflow_parent.json"))
    info = {
        "uri": uri,
        "dir": str(root),
        "sweep_dir": str(parent_file.parent),
        "output": proc.output,
        "parent_run_id": json.loads(parent_file.read_text())["run_id"],
    }
    done.write_text(json.dumps(info))
    return info
