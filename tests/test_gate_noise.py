"""The noise a gate allows: the step-time band, widened to the spread between trials."""

from __future__ import annotations

import random

import pytest

from b200lab.reports.baseline import entry
from b200lab.reports.regression_gate import compare


def _record(steps: list[float], rate: float, trials: tuple[float, float] | None) -> dict:
    metrics = {"tokens_per_s": rate, "step_ms_p50": sorted(steps)[len(steps) // 2]}
    if trials:
        metrics.update(trial_tokens_per_s_min=trials[0], trial_tokens_per_s_max=trials[1], trials=3)
    return {"point": "model=gpt_1b", "status": "ok", "step_ms": steps, "metrics": metrics, "env": {}, "mlflow": {}}


def _percentile(values: list[float], q: float) -> float:  # numpy's default: linear between closest ranks
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def test_a_steady_run_whose_trials_differ_gets_the_trials_spread():
    rng = random.Random()
    steps = [100.0 + rng.uniform(-0.1, 0.1) for _ in range(30)]  # +-0.1%: steady steps
    slow, fast = 0.97 * 1000.0, 1.02 * 1000.0  # but one trial 3% slow, another 2% fast
    band = entry(_record(steps, 1000.0, (slow, fast)))["band"]
    assert band == pytest.approx((1000.0 / fast, 1000.0 / slow))
    without = entry(_record(steps, 1000.0, None))["band"]
    p10, p50, p90 = (_percentile(steps, q) for q in (0.1, 0.5, 0.9))
    assert without == pytest.approx((p10 / p50, p90 / p50))


def test_a_noisy_run_keeps_its_wider_step_band():
    rng = random.Random()
    steps = [100.0 * rng.uniform(0.8, 1.25) for _ in range(40)]
    band = entry(_record(steps, 1000.0, (995.0, 1004.0)))["band"]
    p10, p50, p90 = (_percentile(steps, q) for q in (0.1, 0.5, 0.9))
    assert band == pytest.approx((p10 / p50, p90 / p50))


def test_a_candidate_inside_the_baselines_trial_spread_is_not_a_regression_and_one_beyond_it_is():
    steps = [100.0] * 20
    base = {"points": [entry(_record(steps, 1000.0, (960.0, 1010.0)))]}
    # allowed worsening: 1 - (1 - 5%) x (candidate's best factor 1) / (baseline's worst 1000/960)
    allowed = 1 - 0.95 * 960.0 / 1000.0
    inside = entry(_record(steps, 1000.0 * (1 - allowed) * 1.001, None))
    beyond = entry(_record(steps, 1000.0 * (1 - allowed) * 0.999, None))
    verdict = {r.metric: r.verdict for r in compare(base, [inside], {})}
    assert verdict["tokens_per_s"] == "ok"
    verdict = {r.metric: r.verdict for r in compare(base, [beyond], {})}
    assert verdict["tokens_per_s"] == "REGRESSION"
