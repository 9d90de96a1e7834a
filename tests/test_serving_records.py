"""The request counts docs/measurements/2026-11-26-serving-preset states in prose, recomputed from
its per-request CSVs (the last timed run of a rate) and results.json files (all three runs)."""

from __future__ import annotations

import csv
import json

import pytest

from support import MEASUREMENTS, metric_of, one_line

FOLDER = MEASUREMENTS / "2026-11-26-serving-preset"
SLO_TTFT_MS, SLO_TPOT_MS = 500.0, 50.0  # experiments/serve_load.yaml
CLAIMS = [  # (the README's words, the CSV of the rate's last run, its run id, good in that run, good in all three runs)
    ("The last timed run at 1 request/s had 61 of its 64 requests meet the SLO", "serve_single_2", "e9ad77a1", 61, 127),
    ("At 2 requests/s: 20 of 64 in the last run, 30 of 192 in all three", "serve_single_1", "447e52da", 20, 30),
]


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c[2])
def test_requests_meeting_the_slo_stated_in_prose(claim):
    text, csv_name, run_id, good_last, good_all = claim
    assert one_line(text) in one_line((FOLDER / "README.md").read_text())
    rows = list(csv.DictReader(open(FOLDER / "runs" / f"{csv_name}.requests.csv")))
    good = [
        r
        for r in rows
        if float(r["ttft_ms"]) <= SLO_TTFT_MS and (not r["tpot_ms"] or float(r["tpot_ms"]) <= SLO_TPOT_MS)
    ]
    assert (len(rows), len(good)) == (64, good_last)
    assert metric_of(run_id, "completed") == 192
    assert round(metric_of(run_id, "goodput_fraction") * 192) == good_all


def test_the_misses_of_the_last_run_at_one_request_per_second_are_tpot_misses():
    rows = list(csv.DictReader(open(FOLDER / "runs" / "serve_single_2.requests.csv")))
    assert sum(float(r["ttft_ms"]) > SLO_TTFT_MS for r in rows) == 0
    assert sum(bool(r["tpot_ms"]) and float(r["tpot_ms"]) > SLO_TPOT_MS for r in rows) == 3
    assert "the 3 that missed, missed tpot" in (FOLDER / "README.md").read_text()


TP2 = MEASUREMENTS / "2026-11-26-serving-tp2"
FIRST_RUN_ROWS = {"cuDNN (default)": "kernels_cudnn", "memory-efficient": "kernels_efficient"}


def _first_run_table() -> dict:
    """The README's hand-laid first-run table: label -> (run 1, [runs 2, 3], excess, run id)."""
    rows = {}
    for line in (TP2 / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] in FIRST_RUN_ROWS:
            rows[cells[0]] = (float(cells[1]), [float(v) for v in cells[2].split(",")], float(cells[3]), cells[4])
    return rows


def test_first_run_table_matches_each_runs_step_times():
    rows = _first_run_table()
    assert set(rows) == set(FIRST_RUN_ROWS)
    for label, (first, later, excess, run_id) in rows.items():
        record = json.loads((TP2 / "runs" / f"{FIRST_RUN_ROWS[label]}.results.json").read_text())
        assert record["mlflow"]["run_id"].startswith(run_id)
        seconds = [ms / 1000 for ms in record["step_ms"]]
        assert len(seconds) == 3 and first == round(seconds[0], 2) and later == [round(s, 2) for s in seconds[1:]]
        assert excess == round(seconds[0] - sum(seconds[1:]) / 2, 2)


def test_first_run_prose_follows_from_the_table():
    rows = _first_run_table()
    (_, cudnn_later, cudnn_excess, _), (_, eff_later, eff_excess, _) = (
        rows["cuDNN (default)"],
        rows["memory-efficient"],
    )
    text = one_line((TP2 / "README.md").read_text())
    assert (
        f"run 1's excess is {cudnn_excess - eff_excess:.2f} s smaller ({cudnn_excess:.2f} against {eff_excess:.2f} s)"
        in text
    )
    saving = 1 - sum(cudnn_later) / sum(eff_later)
    assert f"the mean of runs 2 and 3 is {saving:.1%} shorter with cuDNN" in text


WARMUP = MEASUREMENTS / "2026-11-27-serving-warmup"
WARMUP_ROWS = {
    "compiled, cuDNN attention": "compiled",
    "eager, cuDNN attention": "eager_a",
    "eager, memory-efficient attention": "eager_efficient",
    "eager, cuDNN attention, 5 timed runs": "eager_b",
}


def _warmup_table() -> dict:
    """The replay record's table: label -> (warm-up run s, [timed runs s], run id)."""
    rows = {}
    for line in (WARMUP / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] in WARMUP_ROWS:
            rows[cells[0]] = (float(cells[1]), [float(v) for v in cells[2].split(",")], cells[3])
    return rows


def test_replay_warmup_table_matches_the_runs():
    rows = _warmup_table()
    assert set(rows) == set(WARMUP_ROWS)
    for label, (warm, timed, run_id) in rows.items():
        record = json.loads((WARMUP / "runs" / f"{WARMUP_ROWS[label]}.results.json").read_text())
        assert record["mlflow"]["run_id"].startswith(run_id)
        assert record["effective"]["serve"]["warmup"] == "1 replay(s) of the timed trace"
        assert warm == round(record["metrics"]["first_warmup_run_ms"] / 1000, 2)
        assert timed == [round(ms / 1000, 2) for ms in record["step_ms"]]


def test_replay_warmup_ratios_stated_in_prose():
    rows = _warmup_table()
    text = one_line((WARMUP / "README.md").read_text())
    compiled = rows["compiled, cuDNN attention"]
    raw = json.loads((WARMUP / "runs" / "compiled.results.json").read_text())["step_ms"]
    assert (
        f"within {max(raw) / min(raw) - 1:.1%} of each other" in text
    )  # from the raw step times, not the rounded cells
    assert f"{compiled[0]:.2f} s ({compiled[0] / sorted(compiled[1])[1]:.1f}x the timed median)" in text
    eager_a, eager_b = rows["eager, cuDNN attention"][1], rows["eager, cuDNN attention, 5 timed runs"][1]
    efficient = rows["eager, memory-efficient attention"][1]
    assert f"{eager_a[0] / eager_a[-1]:.2f}x the last in d4051129" in text
    assert f"{eager_b[0] / eager_b[-1]:.2f}x over five runs in f66016cd" in text
    assert f"memory-efficient kernel {efficient[0] / min(efficient):.2f}x its fastest" in text
    assert f"({eager_b[-1] / eager_a[-1]:.2f}x)" in text
    tp2 = json.loads((TP2 / "runs" / "tp2_qinf.results.json").read_text())["step_ms"]
    assert f"had been {tp2[0] / (sum(tp2[1:]) / 2):.1f}x its later ones" in text
