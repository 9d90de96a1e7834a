"""The terminal's position in a sweep: `[i/N]` when each point starts and ends, elapsed time and the
time left, through the real CLI; a single run prints none."""

from __future__ import annotations

import re

import pytest

from b200lab.runner.progress import BASIC_SWEEPER, plan
from support import INLINE, run_cli

FAST = ["seq=short", "workload.warmup_steps=1", "workload.steps=2", INLINE, "tracking.system_metrics=false"]
CLOCK = r"\d+:\d\d"


@pytest.mark.e2e
def test_sweep_prints_position_elapsed_and_time_left(tmp_path, store):
    proc = run_cli(["-m", "precision=fp32,bf16", *FAST], tmp_path, store)
    assert proc.returncode == 0, proc.output
    lines = [line for line in proc.stdout.splitlines() if re.match(r"\[\d+/", line)]
    assert [line[:5] for line in lines] == ["[1/2]", "[1/2]", "[2/2]", "[2/2]"], proc.output
    start1, end1, start2, end2 = lines
    assert re.fullmatch(rf"\[1/2\] precision=fp32: starts  elapsed {CLOCK}  left \?", start1), start1
    # after the first point the time left is estimated from it: one more point of the same kind
    assert re.search(rf"precision=fp32: ok in \d+\.\d s  elapsed {CLOCK}  left ~{CLOCK}$", end1), end1
    assert re.search(rf"left ~{CLOCK}$", start2) and re.search(r"ok in .* left ~0:00$", end2), (start2, end2)
    assert all(len(line) <= 120 for line in lines)


@pytest.mark.e2e
def test_single_run_prints_no_position(tmp_path, store):
    proc = run_cli(FAST, tmp_path, store)
    assert proc.returncode == 0, proc.output
    assert not re.search(r"^\[\d+(/\d+)?\]", proc.stdout, re.M), proc.stdout


@pytest.mark.parametrize(
    "swept,overrides,expected",
    [
        ({}, ["seq=short", "precision=fp32,bf16"], (2, ["precision"])),
        ({"workload": "forward,train", "attention": "sdpa,math"}, ["seq=1k,2k"], (8, ["workload", "attention", "seq"])),
        ({"workload": "forward,train"}, ["workload=train"], (1, [])),  # the command line wins over the preset's sweep
        ({"seq.len": "range(32,96,32)"}, [], (2, ["seq.len"])),
    ],
)
def test_plan_as_the_basic_sweeper_makes_them(swept, overrides, expected):
    assert plan(BASIC_SWEEPER, swept, overrides) == expected


def test_other_sweepers_are_not_counted():
    assert plan("hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", {}, ["seq=1k,2k"]) == (None, [])
