"""The parent's metric series over the swept value, from committed GPU records: each point of each
series is one record's metric at its swept value, grouped by the other swept keys."""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from pathlib import Path

from b200lab.records import results as results_io
from b200lab.reports.parent_summary import HEADLINE, series

ROOT = Path(__file__).resolve().parents[1]


def sweeps(folder: str) -> list[list[dict]]:
    good, _ = results_io.read_all(results_io.find([ROOT / "docs" / "measurements" / folder]))
    groups: dict[str, list[dict]] = defaultdict(list)
    for _, record in good:
        groups[record["sweep_id"]].append(record)
    return list(groups.values())


def test_series_follow_the_swept_length_one_line_per_backend_and_direction():
    [records] = [s for s in sweeps("2026-11-26-attention") if len(s) == 12]  # seq x attention x backward
    lines, tags = series(records)
    assert tags == {"series.step": "seq.len", "series.groups": "attention backward"}
    expected: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        point = dict(word.split("=", 1) for word in r["point"].split())
        group = f"attention:{point['attention']} backward:{point['workload.options.backward']}"
        for metric in HEADLINE:
            if metric in r["metrics"]:
                expected[f"{metric}/{group}"].append((r["config"]["seq"]["len"], r["metrics"][metric]))
    assert {k: sorted(v) for k, v in lines.items()} == {k: sorted(v) for k, v in expected.items()}
    assert len({k.split("/")[1] for k in lines}) == 4  # sdpa and flex, forward and backward


def test_a_non_integer_axis_steps_by_rank_and_says_so():
    [records] = [s for s in sweeps("2026-11-26-attention") if len(s) == 12]
    rates = sorted(random.sample([0.25, 0.5, 1.5, 2.5, 3.75], 3))
    lens = sorted({r["config"]["seq"]["len"] for r in records})
    fake = []
    for r in records:  # the same records with the length renamed to a fractional request rate
        r = copy.deepcopy(r)
        rate = rates[lens.index(r["config"]["seq"]["len"])]
        r["config"]["workload"].setdefault("options", {})["qps"] = rate
        r["point"] = (
            " ".join(w for w in r["point"].split() if not w.startswith("seq")) + f" workload.options.qps={rate}"
        )
        fake.append(r)
    lines, tags = series(fake)
    assert tags["series.step"] == "rank of workload.options.qps: " + ", ".join(
        f"{i}={q:g}" for i, q in enumerate(rates)
    )
    assert all({step for step, _ in points} <= {0, 1, 2} for points in lines.values())


def test_nothing_to_draw_without_a_numeric_swept_key_or_two_points():
    [records] = [s for s in sweeps("2026-11-26-attention") if len(s) == 12]
    assert series(records[:1]) == ({}, {})
    same_len = [r for r in records if r["config"]["seq"]["len"] == records[0]["config"]["seq"]["len"]]
    lines, tags = series(
        [dict(r, point=" ".join(w for w in r["point"].split() if not w.startswith("seq"))) for r in same_len]
    )
    assert (lines, tags) == ({}, {})  # attention and backward vary, neither is a number
