"""Request-level serving metrics, with vLLM's definitions (benchmarks/serve.py, calculate_metrics):

- ``ttft``: first token time - arrival (queueing and prefill included);
- ``tpot``: (e2e - ttft) / (output_tokens - 1), per request with more than one token;
- ``itl``: every gap between consecutive tokens of a request, all requests pooled;
- ``e2e``: last token time - arrival;
- ``request_throughput`` and ``output_tokens_per_s``: completed requests and their output tokens
  over the run's duration (first arrival to last token);
- ``goodput``: completed requests per second that meet every SLO given (ttft_ms, tpot_ms; a
  request of one token counts tpot 0, as vLLM does).

Percentiles are numpy's linear interpolation (p50, p90, p99), in milliseconds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class RequestRecord:
    id: int
    arrival_s: float
    prompt_len: int
    output_len: int  # tokens asked for
    status: str = "waiting"  # waiting | queued | running | done | rejected
    reason: str | None = None  # why it was rejected
    admitted_s: float | None = None  # prefill began
    waited: bool = False  # found the running batch full or the pool short and stayed queued
    token_s: list[float] = field(default_factory=list)  # when each output token was ready (host clock, synced)
    tokens: list[int] = field(default_factory=list)

    @property
    def ttft_s(self) -> float:
        return self.token_s[0] - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.token_s[-1] - self.arrival_s

    @property
    def tpot_s(self) -> float:
        n = len(self.token_s)
        return (self.e2e_s - self.ttft_s) / (n - 1) if n > 1 else 0.0

    @property
    def itl_s(self) -> list[float]:
        return [b - a for a, b in zip(self.token_s, self.token_s[1:])]

    @property
    def queue_s(self) -> float:
        return (self.admitted_s if self.admitted_s is not None else self.arrival_s) - self.arrival_s

    def row(self) -> dict:
        """The request as a CSV row: its times in ms, and ``token_s``, every token's ready time
        (seconds on the run's clock, as ``arrival_s``), from which every latency metric can be
        recomputed with this module's definitions."""
        done = self.status == "done"
        ms = (lambda s: round(s * 1e3, 6)) if done else (lambda s: "")
        return {
            "id": self.id,
            "status": self.status,
            "reason": self.reason or "",
            "arrival_s": f"{self.arrival_s:.9f}",
            "prompt_len": self.prompt_len,
            "output_len": len(self.tokens) if done else self.output_len,
            "queue_ms": ms(self.queue_s),
            "ttft_ms": ms(self.ttft_s) if done else "",
            "tpot_ms": ms(self.tpot_s) if done else "",
            "e2e_ms": ms(self.e2e_s) if done else "",
            "itl_ms_max": ms(max(self.itl_s, default=0.0)) if done else "",
            "token_s": " ".join(f"{t:.9f}" for t in self.token_s) if done else "",
        }


def percentiles(name: str, values_s: list[float]) -> dict:
    if not values_s:
        return {}
    p50, p90, p99 = np.percentile(np.asarray(values_s) * 1e3, [50, 90, 99])
    return {
        f"{name}_ms_p50": float(p50),
        f"{name}_ms_p90": float(p90),
        f"{name}_ms_p99": float(p99),
        f"{name}_ms_mean": float(np.mean(values_s) * 1e3),
    }


def request_metrics(
    runs: list[list[RequestRecord]], slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None
) -> dict:
    """Metrics over one or more runs of a trace: percentiles pool every completed request; the
    rates divide by the runs' summed durations (each from its first arrival to its last token)."""
    records = [r for run in runs for r in run]
    done = [r for r in records if r.status == "done"]
    out = {
        "requests": len(records),
        "completed": len(done),
        "rejected": sum(r.status == "rejected" for r in records),
        "queued": sum(r.waited for r in records),
    }
    if not done:
        return out
    duration = sum(
        max(r.token_s[-1] for r in run if r.status == "done") - min(r.arrival_s for r in run)
        for run in runs
        if any(r.status == "done" for r in run)
    )
    tokens = sum(len(r.token_s) for r in done)
    out.update(percentiles("ttft", [r.ttft_s for r in done]))
    out.update(percentiles("tpot", [r.tpot_s for r in done if len(r.token_s) > 1]))
    out.update(percentiles("itl", [g for r in done for g in r.itl_s]))
    out.update(percentiles("e2e", [r.e2e_s for r in done]))
    out.update(percentiles("queue", [r.queue_s for r in done]))
    out["output_tokens"] = tokens
    out["input_tokens"] = sum(r.prompt_len for r in done)
    out["duration_s"] = duration
    if duration > 0:
        out["request_throughput"] = len(done) / duration
        out["output_tokens_per_s"] = tokens / duration
        if slo_ttft_ms is not None or slo_tpot_ms is not None:
            good = [
                r
                for r in done
                if (slo_ttft_ms is None or r.ttft_s * 1e3 <= slo_ttft_ms)
                and (slo_tpot_ms is None or r.tpot_s * 1e3 <= slo_tpot_ms)
            ]
            out["goodput"] = len(good) / duration
            out["goodput_fraction"] = len(good) / len(done)
    return out


def write_csv(runs: list[list[RequestRecord]], path: Path) -> None:
    """Every request of every run, one row each, with its run's index (``run``, 0 first): the
    metrics of results.json pool the same runs, so each one can be recomputed from this file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["run", *RequestRecord(0, 0.0, 0, 0).row()]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for i, records in enumerate(runs):
            writer.writerows({"run": i, **r.row()} for r in sorted(records, key=lambda r: r.id))
