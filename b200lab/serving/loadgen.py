"""Seeded request traces: arrival times and prompt/output lengths.

Arrivals are a renewal process at ``qps`` requests per second: ``poisson`` (exponential gaps) or
``gamma`` with shape ``burstiness`` (gaps of mean 1/qps; shape < 1 is burstier than Poisson, > 1
more regular; 1 is Poisson), as vLLM's benchmark draws them, started at t = 0 (the first request
arrives after its own gap). The arrival times are then rescaled so the last of the N requests
arrives at exactly N / qps, as vLLM's benchmark normalises them: the offered rate is the rate the
run is labelled with, whatever the draws (unnormalised, a seeded trace of 64 requests at 4/s
offered 3.45/s). ``qps = inf`` sends everything at t = 0 (then ``max_concurrency`` is what limits
the load). Lengths are ``fixed`` at their mean, or
``uniform`` over mean x [1 - spread, 1 + spread], or ``lognormal`` with sigma = spread, each
clamped to [1, max]. The trace stops at ``num_requests`` or at ``duration_s`` of arrivals,
whichever comes first. The same seed gives the same trace on every rank and every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from b200lab.workloads.config.serve import ARRIVALS, LENGTHS


@dataclass(frozen=True)
class RequestSpec:
    id: int
    arrival_s: float  # offset from the start of the run
    prompt: tuple[int, ...]  # token ids
    output_len: int  # tokens to generate (no end-of-sequence token: the length is the request's)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)


def lengths(rng: np.random.Generator, n: int, mean: int, dist: str, spread: float, maximum: int) -> np.ndarray:
    if dist == "fixed":
        values = np.full(n, float(mean))
    elif dist == "uniform":
        values = rng.uniform(mean * (1 - spread), mean * (1 + spread), n)
    elif dist == "lognormal":  # median = mean x exp(-sigma^2 / 2) keeps the mean at ``mean``
        values = rng.lognormal(math.log(mean) - spread**2 / 2, spread, n)
    else:
        raise ValueError(f"length distribution {dist!r}: choose {', '.join(LENGTHS)}")
    return np.clip(np.rint(values), 1, maximum).astype(int)


def arrival_times(rng: np.random.Generator, n: int, qps: float, process: str, burstiness: float) -> np.ndarray:
    if math.isinf(qps):
        return np.zeros(n)
    if process == "poisson":
        gaps = rng.exponential(1.0 / qps, n)
    elif process == "gamma":
        gaps = rng.gamma(burstiness, 1.0 / (qps * burstiness), n)
    else:
        raise ValueError(f"arrival process {process!r}: choose {', '.join(ARRIVALS)}")
    times = np.cumsum(gaps)
    return times * (n / qps / times[-1])  # the last arrives at n / qps: the offered rate is qps


def offered_rate(trace: list[RequestSpec]) -> float:
    """Requests per second the trace offers: its requests over the time its last one arrives
    (inf when every request arrives at t = 0)."""
    last = max((s.arrival_s for s in trace), default=0.0)
    return len(trace) / last if last > 0 else math.inf


def make_trace(
    seed: int,
    num_requests: int,
    duration_s: float,
    qps: float,
    process: str,
    burstiness: float,
    prompt_len: int,
    prompt_dist: str,
    output_len: int,
    output_dist: str,
    spread: float,
    max_prompt: int,
    max_output: int,
    vocab_size: int,
) -> list[RequestSpec]:
    rng = np.random.default_rng(seed)
    arrivals = arrival_times(rng, num_requests, qps, process, burstiness)
    prompts = lengths(rng, num_requests, prompt_len, prompt_dist, spread, max_prompt)
    outputs = lengths(rng, num_requests, output_len, output_dist, spread, max_output)
    trace = []
    for i in range(num_requests):
        if arrivals[i] > duration_s:
            break
        tokens = tuple(int(t) for t in rng.integers(0, vocab_size, int(prompts[i])))
        trace.append(RequestSpec(i, float(arrivals[i]), tokens, int(outputs[i])))
    return trace
