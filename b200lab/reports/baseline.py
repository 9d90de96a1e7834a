"""``b200lab baseline save``: a sweep's numbers as a baseline file the gate compares against.

The file is JSON meant to live in a repository (small, sorted, one entry per point):

    schema      "b200lab.reports.baseline/1"
    created     when it was saved (UTC); source: the runs it was read from
    points      per point: key (its overrides, sorted, bookkeeping dropped), point, status,
                run_id, card, git_sha, env (gpu, gpu_count, driver, cuda, torch,
                transformer_engine, python), metrics (the gated ones it has), band (step-time
                p10 / p50 and p90 / p50, widened to the spread between trials: the run's noise), n_steps
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from b200lab.records.points import card, overrides
from b200lab.reports.spread import noise_band

SCHEMA = "b200lab.reports.baseline/1"
ENV_KEYS = ("gpu", "gpu_count", "driver", "cuda", "torch", "transformer_engine", "python")
HARDWARE_KEYS = ("gpu", "gpu_count")
NOT_IDENTITY = ("hydra.", "tracking.", "run.launcher", "run.timeout_s")
# gated metrics: (direction, threshold) -- the relative worsening allowed beyond the measured spread
GATED = {
    "tokens_per_s": ("higher", 0.05),
    "tokens_per_s_per_gpu": ("higher", 0.05),
    "tflops": ("higher", 0.05),
    "mfu": ("higher", 0.05),
    "gemm_tflops": ("higher", 0.05),
    "hbm_gbps": ("higher", 0.05),
    "allreduce_busbw_gbps": ("higher", 0.05),
    "output_tokens_per_s": ("higher", 0.05),
    "tokens_per_j": ("higher", 0.05),
    "step_ms_p50": ("lower", 0.05),
    "peak_mem_allocated_gb": ("lower", 0.02),
    "perplexity": ("lower", 0.01),
    "moe_dense_ratio": ("higher", 0.05),
    "hbm_bw_util": ("higher", 0.05),
}
FROM_STEPS = {
    "tokens_per_s",
    "tokens_per_s_per_gpu",
    "tflops",
    "mfu",
    "gemm_tflops",
    "hbm_gbps",
    "allreduce_busbw_gbps",
    "output_tokens_per_s",
    "tokens_per_j",
    "step_ms_p50",
}  # their noise is the step-time spread


class BaselineError(ValueError):
    """A baseline file that cannot be read (exit 2)."""


def point_key(record: dict) -> str:
    """What makes two runs the same point: the overrides, sorted, without where and how they ran."""
    items = sorted((k, v) for k, v in overrides(record.get("point")).items() if not k.startswith(NOT_IDENTITY))
    return " ".join(f"{k}={v}" for k, v in items) or "(defaults)"


def entry(record: dict) -> dict:
    env = record.get("env") or {}
    metrics = record.get("metrics") or {}
    return {
        "key": point_key(record),
        "point": record.get("point"),
        "status": record.get("status"),
        "run_id": (record.get("mlflow") or {}).get("run_id"),
        "card": card(record),
        "git_sha": env.get("git_sha"),
        "env": {k: env.get(k) for k in ENV_KEYS if env.get(k) is not None},
        "metrics": {k: float(metrics[k]) for k in GATED if isinstance(metrics.get(k), (int, float))},
        "band": noise_band(record),
        "n_steps": metrics.get("n_steps"),
    }


def build(records: list[dict], source: str) -> dict:
    entries = [entry(r) for r in records]
    keys = [e["key"] for e in entries]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise BaselineError(
            f"several runs are the same point ({', '.join(repeated)}): select one sweep (--parent) or one folder"
        )
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "points": sorted(entries, key=lambda e: e["key"]),
    }


def load(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {path} ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise BaselineError(f"baseline {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("points"), list):
        raise BaselineError(
            f"{path} is not a b200lab baseline (expected schema {SCHEMA!r}; write one with `b200lab baseline save`)"
        )
    return data


def main(argv: list[str]) -> int:
    from b200lab.reports import selection

    parser = argparse.ArgumentParser(
        prog="b200lab baseline", description="Record a sweep as a baseline for `b200lab gate`."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    save = sub.add_parser("save", help="write a baseline JSON from results.json folders or MLflow runs")
    selection.add_arguments(save)
    save.add_argument(
        "--out", type=Path, required=True, help="the baseline file to write (e.g. baselines/nightly-h100.json)"
    )
    args = parser.parse_args(argv)
    try:
        records, source, skipped = selection.select(args)
        if skipped:
            raise BaselineError("unreadable results.json: " + "; ".join(skipped))
        baseline = build(records, source)
    except (selection.SelectionError, BaselineError) as exc:
        print(f"baseline: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(baseline, indent=1, sort_keys=True) + "\n")
    print(f"baseline: {args.out} ({len(baseline['points'])} points from {source})")
    return 0
