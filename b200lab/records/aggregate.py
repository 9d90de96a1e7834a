"""Per-rank results -> one job's metrics, with an explicit rule for every metric.

Rules (DESIGN.md: never double-count a replicated request or token):
- step time: per timed step, the slowest rank (a step is done when every rank is done);
- tokens: summed over distinct data shards only; ranks that share a shard (replicas, or
  tensor-parallel peers) count their tokens once;
- timed span: the longest rank's; tokens_per_s = tokens per step x steps / span;
- tflops: model FLOPs of all ranks per step x steps / span / ranks (achieved, per GPU; each
  rank reports its share, so tensor-parallel peers are not counted twice); mfu is that over
  the datasheet peak the precision recipe names (``effective.precision.peak_key``) on the card
  (measure/peaks.py), plus ``mfu_vs_<key>_peak`` for each of its ``extra_peak_keys``;
- energy: joules summed over ranks (every GPU of the job), avg_power_w summed, tokens_per_j =
  tokens in the timed region / energy;
- memory peaks: max over ranks; everything else by RULES, or by the rule its workload declares
  (``Workload.metric_rules``); a metric with no rule is listed under ``unaggregated``;
- curves (per-step series): step by step over the ranks that have the step, by the curve's rule
  (mean without one).
"""

from __future__ import annotations

from b200lab.measure.step_stats import step_stats
from b200lab.records.rank_report import RankReport, RankReportError

RULES = {
    "peak_mem_allocated_gb": "max",
    "peak_mem_reserved_gb": "max",
    "peak_rss_gb": "max",
    "nvml_used_gb": "max",
    "alloc_retries": "sum",
    "setup_s": "max",
}
STATUS_ORDER = ["interrupted", "error", "oom", "ok"]  # the job takes its worst rank's status


PER_RANK = ("peak_mem_allocated_gb", "peak_mem_reserved_gb", "nvml_used_gb", "peak_rss_gb")  # also logged rank by rank


def _combine(rule: str, values: list[float]) -> float:
    if rule == "max":
        return max(values)
    if rule == "sum":
        return sum(values)
    if rule == "min":
        return min(values)
    if rule == "mean":
        return sum(values) / len(values)
    raise ValueError(f"unknown aggregation rule {rule!r}")


def aggregate(ranks: list[dict]) -> dict:
    """Return {status, error, metrics, effective, env, info, step_ms, curves, unaggregated} for the job.
    A malformed rank report makes the job an error that names it; the others are still read."""
    parsed, bad = [], []
    for i, r in enumerate(ranks):
        try:
            parsed.append(RankReport.from_dict(r, f"rank report {i}").to_json_dict())
        except RankReportError as exc:
            bad.append(str(exc))
    if not parsed:
        return {
            "status": "error",
            "error": "; ".join(bad),
            "metrics": {},
            "effective": {},
            "env": {},
            "unaggregated": [],
            "info": {},
            "step_ms": [],
            "curves": {},
        }
    ranks = sorted(parsed, key=lambda r: r["rank"])
    expected = max(r.get("world_size", 1) for r in ranks)
    missing = sorted(set(range(expected)) - {r["rank"] for r in ranks})
    if missing:  # e.g. another node's ranks whose files never reached the shared job dir
        bad.append(f"ranks {', '.join(map(str, missing))} of {expected} did not report (nothing in ranks/)")
    status = "error" if bad else min((r["status"] for r in ranks), key=STATUS_ORDER.index)
    errors = bad + [f"rank {r['rank']}: {r['error']}" for r in ranks if r.get("error")]
    n = min(len(r["step_ms"]) for r in ranks)
    step_ms = [max(r["step_ms"][i] for r in ranks) for i in range(n)]
    tokens_by_shard = {r["data_shard"]: r["tokens_per_step"] for r in ranks}
    tokens_per_step = sum(tokens_by_shard.values())
    span_s = max(r["span_s"] for r in ranks)
    world = len(ranks)

    metrics = step_stats(step_ms)
    if n:
        metrics["timed_span_s"] = span_s
    if n and tokens_per_step and span_s > 0:
        metrics["tokens_per_s"] = tokens_per_step * n / span_s
        metrics["tokens_per_s_per_gpu"] = metrics["tokens_per_s"] / world
        unit = (ranks[0].get("effective", {}).get("model") or {}).get("unit")
        if unit and unit != "token":  # a family whose "token" is an image or a sample (docs/families.md)
            metrics["samples_per_s"] = metrics["tokens_per_s"]
            if unit != "sample":
                metrics[f"{unit}s_per_s"] = metrics["tokens_per_s"]
    metrics["tokens_per_step"] = tokens_per_step
    warmup = [max(r["warmup_ms"][i] for r in ranks) for i in range(min(len(r["warmup_ms"]) for r in ranks))]
    if warmup:
        metrics["warmup_s"] = sum(warmup) / 1e3
        metrics["first_step_ms"] = warmup[0]
        if ranks[0].get("effective", {}).get("compiled") and "step_ms_p50" in metrics:
            metrics["compile_s"] = sum(max(0.0, w - metrics["step_ms_p50"]) for w in warmup) / 1e3
    rules = {**ranks[0].get("metric_rules", {}), **RULES}
    for key, rule in rules.items():
        values = [r["metrics"][key] for r in ranks if key in r.get("metrics", {})]
        if values:
            metrics[key] = _combine(rule, values)
    metrics["world_size"] = world
    if world > 1:  # the job's figure above is the worst rank's; every rank's own, so an uneven layout shows
        for r in ranks:
            for key in PER_RANK:
                if key in r.get("metrics", {}):
                    metrics[f"{key}_rank{r['rank']}"] = r["metrics"][key]
    metrics.update(_trial_spread(ranks, tokens_per_step))
    info = _compute_and_energy(ranks, metrics, n, span_s, tokens_per_step)
    unaggregated = sorted({k for r in ranks for k in r.get("metrics", {})} - set(rules))
    return {
        "status": status,
        "error": "; ".join(errors) or None,
        "metrics": metrics,
        "effective": ranks[0].get("effective", {}),
        "env": ranks[0].get("env", {}),
        "unaggregated": unaggregated,
        "info": info,
        "step_ms": step_ms,
        "curves": _curves(ranks, rules),
    }


def _curves(ranks: list[dict], rules: dict) -> dict:
    names = sorted({name for r in ranks for name in r.get("curves", {})})
    out = {}
    for name in names:
        by_step: dict = {}
        for r in ranks:
            for step, value in r.get("curves", {}).get(name, []):
                by_step.setdefault(step, []).append(value)
        out[name] = [[step, _combine(rules.get(name, "mean"), values)] for step, values in sorted(by_step.items())]
    return out


def _trial_spread(ranks: list[dict], tokens_per_step: int) -> dict:
    """With workload.trials > 1: each trial's step p50 (slowest rank per step) and throughput
    (tokens x steps / longest span), then their min / max / std across trials."""
    import numpy as np

    counts = [r.get("trial_steps") or [len(r["step_ms"])] for r in ranks]
    n_trials = min(len(c) for c in counts)
    if n_trials < 2:
        return {}
    p50s, rates, offset = [], [], 0
    for k in range(n_trials):
        n = min(c[k] for c in counts)
        steps = [max(r["step_ms"][offset + i] for r in ranks) for i in range(n)]
        offset += counts[0][k]
        span = max(r["trial_spans"][k] for r in ranks)
        p50s.append(float(np.percentile(steps, 50)))
        if tokens_per_step and span > 0:
            rates.append(tokens_per_step * n / span)
    out = {"trials": n_trials}
    for name, values in (("trial_step_ms_p50", p50s), ("trial_tokens_per_s", rates)):
        if len(values) == n_trials:
            p10, median, p90 = (float(v) for v in np.percentile(values, [10, 50, 90]))
            out.update(
                {
                    f"{name}_min": min(values),
                    f"{name}_p10": p10,
                    f"{name}_median": median,
                    f"{name}_p90": p90,
                    f"{name}_max": max(values),
                    f"{name}_std": float(np.std(values, ddof=1)),
                }
            )
    return out


def peak_keys(effective: dict) -> tuple[str, list[str]]:
    """The peak MFU is measured against, and the extra ones, from what the run recorded (rank
    reports before schema 2 named only the compute dtype)."""
    prec = effective.get("precision", {})
    if prec.get("peak_key"):
        return prec["peak_key"], list(prec.get("extra_peak_keys") or [])
    key = prec.get("compute_dtype") or effective.get("peak_key") or effective.get("dtype", "")
    return key, ["bf16"] if key == "fp8" else []


def _compute_and_energy(ranks: list[dict], metrics: dict, n: int, span_s: float, tokens_per_step: int) -> dict:
    """Adds tflops / mfu / energy metrics; returns the explanations (tags, not numbers)."""
    from b200lab.measure.peaks import lookup

    info: dict = {}
    flops = sum(r.get("flops_per_step", 0) for r in ranks)
    if flops and n and span_s > 0:
        metrics["tflops"] = flops * n / span_s / len(ranks) / 1e12
        gpu = ranks[0].get("env", {}).get("gpu")
        key, extra = peak_keys(ranks[0].get("effective", {}))
        peak, why = lookup(gpu, key)
        info["mfu_basis" if peak else "mfu_unavailable"] = why
        if peak:
            metrics["mfu"] = metrics["tflops"] / peak
            metrics["peak_tflops"] = peak
            median_rate = metrics.get("trial_tokens_per_s_median")
            if median_rate and metrics.get("tokens_per_s"):  # the headline: the median trial, not the pooled run
                metrics["mfu_trial_median"] = metrics["mfu"] * median_rate / metrics["tokens_per_s"]
        for other in extra:
            other_peak, _ = lookup(gpu, other)
            if other_peak:
                metrics[f"mfu_vs_{other}_peak"] = metrics["tflops"] / other_peak
    energies = [r.get("energy", {}) for r in ranks]
    for key in ("sm_clock_mhz_min", "sm_clock_mhz_max", "sm_clock_mhz_mean"):
        values = [e[key] for e in energies if key in e]
        if values:
            metrics[key] = (
                min(values)
                if key.endswith("min")
                else max(values)
                if key.endswith("max")
                else sum(values) / len(values)
            )
    if energies and energies[0].get("clock_limits"):
        info["clock_limits"] = energies[0]["clock_limits"]
    if all("energy_j" in e for e in energies) and energies:
        metrics["energy_j"] = sum(e["energy_j"] for e in energies)
        if len(ranks) > 1:
            metrics.update({f"energy_j_rank{r['rank']}": e["energy_j"] for r, e in zip(ranks, energies)})
        metrics["avg_power_w"] = sum(e["avg_power_w"] for e in energies)
        if all("energy_j_sampled" in e for e in energies):
            metrics["energy_j_sampled"] = sum(e["energy_j_sampled"] for e in energies)
        if tokens_per_step and n:
            metrics["tokens_per_j"] = tokens_per_step * n / metrics["energy_j"]
        info["energy_method"] = energies[0].get("energy_method")
        if energies[0].get("energy_note"):
            info["energy_note"] = energies[0]["energy_note"]
    elif energies and energies[0].get("energy_unavailable"):
        info["energy_unavailable"] = energies[0]["energy_unavailable"]
    return info
