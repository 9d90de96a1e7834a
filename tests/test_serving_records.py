"""The request counts docs/measurements/2026-11-26-serving-preset states in prose, recomputed from
its per-request CSVs (the last timed run of a rate) and results.json files (all three runs)."""

from __future__ import annotations

import csv

import pytest

from test_doc_tables import MEASUREMENTS, metric_of, one_line

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
    good = [r for r in rows if float(r["ttft_ms"]) <= SLO_TTFT_MS and (not r["tpot_ms"] or float(r["tpot_ms"]) <= SLO_TPOT_MS)]
    assert (len(rows), len(good)) == (64, good_last)
    assert metric_of(run_id, "completed") == 192
    assert round(metric_of(run_id, "goodput_fraction") * 192) == good_all


def test_the_misses_of_the_last_run_at_one_request_per_second_are_tpot_misses():
    rows = list(csv.DictReader(open(FOLDER / "runs" / "serve_single_2.requests.csv")))
    assert sum(float(r["ttft_ms"]) > SLO_TTFT_MS for r in rows) == 0
    assert sum(bool(r["tpot_ms"]) and float(r["tpot_ms"]) > SLO_TPOT_MS for r in rows) == 3
    assert "the 3 that missed, missed tpot" in (FOLDER / "README.md").read_text()
