"""What this process has seen so far: read by the entry point to pick the exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

statuses: list[str] = []
unsynced: list[Path] = []  # results.json files that did not reach MLflow
sweep_dir: Optional[Path] = None
_probes: dict[str, Optional[str]] = {}


def probe_once(uri: str, timeout_s: float) -> Optional[str]:
    """Probe each tracking URI once per process; a sweep against a dead server waits once."""
    from b200lab.tracking import probe

    if uri not in _probes:
        _probes[uri] = probe(uri, timeout_s)
        if _probes[uri]:
            print(f"b200lab: {_probes[uri]}; measuring anyway, results.json is kept, upload later with `b200lab sync`")
    return _probes[uri]


def exit_code() -> int:
    if "interrupted" in statuses:
        return 130
    if "error" in statuses:
        return 1
    if unsynced:
        return 3
    return 0
