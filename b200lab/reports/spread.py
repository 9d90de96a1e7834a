"""The spread of a point's numbers, from its timed steps.

Every rate the lab reports (tokens/s, TFLOP/s, MFU, GB/s) is work per unit of step time, so the
step times' p10..p90 give the rate's band: value x p50 / p90 .. value x p50 / p10. Step-time
metrics get p10..p90 directly. Other metrics (memory, energy) carry no band.
"""

from __future__ import annotations

import numpy as np

RATES = (
    "tokens_per_s",
    "tokens_per_s_per_gpu",
    "tflops",
    "mfu",
    "gemm_tflops",
    "hbm_gbps",
    "allreduce_busbw_gbps",
    "output_tokens_per_s",
)


def step_percentiles(record: dict) -> tuple[float, float, float] | None:
    """(p10, p50, p90) of the timed steps, from ``step_ms`` or, without it, the recorded metrics."""
    steps = record.get("step_ms") or []
    if len(steps) >= 2:
        p10, p50, p90 = np.percentile(steps, [10, 50, 90])
        return float(p10), float(p50), float(p90)
    m = record.get("metrics") or {}
    if all(k in m for k in ("step_ms_p10", "step_ms_p50", "step_ms_p90")):
        return float(m["step_ms_p10"]), float(m["step_ms_p50"]), float(m["step_ms_p90"])
    return None


def band(record: dict, metric: str) -> tuple[float, float] | None:
    """(low, high) of ``metric`` over the step-time spread, or None where it has none."""
    value = (record.get("metrics") or {}).get(metric)
    q = step_percentiles(record)
    if value is None or q is None or min(q) <= 0:
        return None
    p10, p50, p90 = q
    if metric in RATES:
        return value * p50 / p90, value * p50 / p10
    if metric == "step_ms_p50":
        return p10, p90
    return None


def band_ratios(record: dict) -> tuple[float, float] | None:
    """(p10 / p50, p90 / p50) of the step times: the band as factors, the noise a comparison must allow."""
    q = step_percentiles(record)
    if q is None or min(q) <= 0:
        return None
    return q[0] / q[1], q[2] / q[1]


def noise_band(record: dict) -> tuple[float, float] | None:
    """The band a gate allows, as step-time factors (low <= 1 <= high): the step-time band, widened
    to the spread between trials where the run had them. Two trials can differ more than the steps
    inside one (clocks settle, the allocator, other tenants), and that is noise too."""
    steps = band_ratios(record)
    m = record.get("metrics") or {}
    rate, fastest, slowest = (m.get(k) for k in ("tokens_per_s", "trial_tokens_per_s_max", "trial_tokens_per_s_min"))
    if not (rate and fastest and slowest):
        return steps
    trials = (rate / fastest, rate / slowest)  # a rate's factor is the inverse of a step time's
    if steps is None:
        return trials
    return min(steps[0], trials[0]), max(steps[1], trials[1])
