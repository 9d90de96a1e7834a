"""Summary statistics of timed steps (milliseconds): numpy only, so the runner's parent process,
which folds the ranks' reports together, never imports torch."""

from __future__ import annotations

import numpy as np


def step_stats(step_ms: list[float]) -> dict:
    a = np.asarray(step_ms, dtype=np.float64)
    if a.size == 0:
        return {"n_steps": 0}
    p10, p50, p90, p99 = np.percentile(a, [10, 50, 90, 99])
    return {
        "n_steps": int(a.size),
        "step_ms_mean": float(a.mean()),
        "step_ms_p10": float(p10),
        "step_ms_p50": float(p50),
        "step_ms_p90": float(p90),
        "step_ms_p99": float(p99),
        "step_ms_std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "step_ms_min": float(a.min()),
        "step_ms_max": float(a.max()),
    }
