"""A sweep's position in the terminal: `[i/N]` when each point starts and ends, with the time
since the sweep began and an estimate of the time left from the points finished so far.

The sweep callback counts the points (Hydra's basic sweeper: the product of the swept values) and
writes the count, the keys that vary and the start time to progress.json in the sweep dir; each job reads that file
and counts the results.json files written since, so any launcher gives the same lines. Another
sweeper plugin's points are not counted: its lines say `[i]` and no time left.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from b200lab.records import results as results_io

FILENAME = "progress.json"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
WIDTH = 120


def plan(sweeper_target: str, swept: dict, overrides: list[str]) -> tuple[int | None, list[str]]:
    """The number of jobs Hydra's basic sweeper makes of the preset's sweep and the command line
    (the command line wins for a key both set, as in BasicSweeper.sweep) and the keys that vary;
    (None, []) for other sweepers."""
    if sweeper_target != BASIC_SWEEPER:
        return None, []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values: dict[str, int] = {}
    for override in OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in swept.items()), *overrides]):
        discrete = override.is_sweep_override() and override.is_discrete_sweep()
        values[override.get_key_element()] = len(list(override.sweep_string_iterator())) if discrete else 1
    return math.prod(values.values()), [k for k, n in values.items() if n > 1]


def start(sweep_dir: Path, n_points: int | None, varied: list[str]) -> None:
    (Path(sweep_dir) / FILENAME).write_text(
        json.dumps({"n_points": n_points, "varied": varied, "started": time.time()})
    )


def _read(sweep_dir: Path) -> dict | None:
    try:
        return json.loads((Path(sweep_dir) / FILENAME).read_text())
    except (OSError, ValueError):
        return None


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def line(sweep_dir: Path | None, job_num: int, point: str, text: str) -> str | None:
    """`[i/N] point: text  elapsed M:SS  left ~M:SS` for a job of a sweep (None outside one); the
    point shows only the keys that vary. The time left is the mean time per finished point times
    the points not yet finished; `left ?` before any."""
    info = _read(sweep_dir) if sweep_dir else None
    if info is None:
        return None
    varied = set(info.get("varied") or [])
    text = f"{' '.join(o for o in point.split() if o.split('=', 1)[0] in varied) or point}: {text}"
    now, n = time.time(), info.get("n_points")
    elapsed = now - info["started"]
    done = sum(1 for p in Path(sweep_dir).glob(f"*/{results_io.FILENAME}") if p.stat().st_mtime >= info["started"])
    position = f"[{job_num + 1}/{n}]" if n else f"[{job_num + 1}]"
    tail = f"  elapsed {clock(elapsed)}"
    if n:
        tail += f"  left ~{clock(elapsed / done * max(n - done, 0))}" if done else "  left ?"
    room = WIDTH - len(position) - len(tail) - 1
    text = text if len(text) <= room else text[: room - 1] + "…"
    return f"{position} {text}{tail}"


def say(sweep_dir: Path | None, job_num: int, point: str, text: str) -> None:
    text = line(sweep_dir, job_num, point, text)
    if text:
        print(text, flush=True)
