"""The accuracy guard: relative perplexity change and speedup against the reference precision."""

from __future__ import annotations

import random

from b200lab.reports import accuracy_guard as guard


def _record(precision: str, ppl, tps, seq: int = 1024, run_id: str = "r") -> dict:
    return {
        "config": {
            "precision": {"name": precision},
            "model": {"name": "m"},
            "seq": {"len": seq},
            "guard": {"reference": "fp32"},
        },
        "metrics": {"perplexity": ppl, "tokens_per_s": tps} if ppl is not None else {"tokens_per_s": tps},
        "effective": {"precision": {"compute_dtype": precision}},
        "mlflow": {"run_id": run_id + precision},
        "status": "ok",
    }


def test_delta_and_speedup_against_the_matching_reference():
    rng = random.Random(3)
    ref_ppl, ref_tps = rng.uniform(2, 5), rng.uniform(1e4, 2e4)
    fp8_ppl, fp8_tps = ref_ppl * (1 + rng.uniform(0.001, 0.02)), ref_tps * rng.uniform(1.2, 1.6)
    other_seq_ref = _record("fp32", ref_ppl * 2, ref_tps / 2, seq=2048)
    records = [
        _record("fp32", ref_ppl, ref_tps),
        _record("fp8", fp8_ppl, fp8_tps),
        other_seq_ref,
        _record("fp8", fp8_ppl * 2, fp8_tps / 2, seq=2048),
    ]
    report = guard.evaluate(records, "fp32", max_ppl_delta=0.05)
    rows = report.rows
    assert rows[0].status == "reference" and rows[0].ppl_delta == 0.0
    assert abs(rows[1].ppl_delta - (fp8_ppl / ref_ppl - 1)) < 1e-12 and abs(rows[1].speedup - fp8_tps / ref_tps) < 1e-12
    assert (
        rows[3].ppl_delta is not None and abs(rows[3].ppl_delta - (fp8_ppl * 2 / (ref_ppl * 2) - 1)) < 1e-12
    )  # its own seq's reference
    assert [r.status for r in rows] == ["reference", "pass", "reference", "pass"] and not report.failed


def test_exceeding_the_limit_or_missing_the_reference_fails():
    records = [_record("fp32", 3.0, 100.0), _record("bf16", 3.0 * 1.011, 150.0), _record("fp8", 3.0 * 1.009, 200.0)]
    report = guard.evaluate(records, "fp32", max_ppl_delta=0.01)
    assert [r.status for r in report.rows] == ["reference", "fail", "pass"] and report.failed
    assert "fail" in guard.table(report) and "+1.100%" in guard.table(report)
    assert guard.evaluate(records[1:], "fp32", 0.01).failed  # nothing to compare with
    assert not guard.evaluate(records, "fp32", None).failed  # no limit: a report, no verdict


def test_points_without_perplexity_are_listed_not_judged():
    report = guard.evaluate([_record("fp32", 3.0, 100.0), _record("fp8", None, 100.0)], "fp32", 0.01)
    assert report.rows[1].status == "no perplexity" and not report.failed
