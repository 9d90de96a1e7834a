"""Serving under load: an in-process server with continuous batching and a block KV cache, fed
by a seeded load generator (b200lab/serving/).

One step of this workload is one run of the whole trace (``options.num_requests`` requests
arriving at ``options.qps``, bounded by ``options.duration_s``). A warm-up step replays that trace
(``options.warmup=replay``), so the timed runs follow a run that met the trace's prompt lengths
and batch sizes (every shape, where the schedule does not depend on timing: ``qps=inf``); a first
contact (cuDNN's plans, the allocator's growth) would otherwise inflate the first timed run and the
pooled percentiles. Its cost stays visible as ``warmup_s``. ``options.warmup=short`` runs
``options.warmup_requests`` requests at t = 0 instead (quick, and the first timed run then pays
that first contact). The engine's counters (largest batch, longest queue, hook time) cover the
timed runs only. Metrics follow vLLM's definitions
(b200lab/serving/latency.py): ttft, tpot, itl and e2e percentiles, request_throughput,
output_tokens_per_s, goodput under ``options.slo``, completed / rejected / queued counts; every
request of the last timed run goes to ``artifacts/requests.csv``, and ``options.on_complete``
(``module:function``) is called on rank 0 with each finished request's CSV row plus ``phase``
(warm-up, timed, or profiled: the runs ``profile=torch`` adds after the timed ones) and ``run``
(its run's index in that phase).

Ranks serve the same trace in lockstep (rank 0's clock): tensor-parallel peers split the model,
``parallelism=ddp`` replicas repeat the work. Request-level metrics come from rank 0 only and
tokens count on data shard 0 only, so nothing is counted twice (b200lab/serving/ranks.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from b200lab.components import CheckContext
from b200lab.serving.compiled import compile_problems, compile_step, graphs_compiled, shape_warmup_trace
from b200lab.serving.engine import Engine, Limits, WallClock, last_logits
from b200lab.serving.latency import RequestRecord, request_metrics, write_csv
from b200lab.serving.loadgen import ARRIVALS, LENGTHS, make_trace
from b200lab.serving.paged import BlockPool
from b200lab.serving.ranks import SyncedClock
from b200lab.serving.sampling import next_token
from b200lab.workloads.base import Workload, WorkloadConfig, build_model
from b200lab.workloads.generate import decode_precision, decode_problems, sampling_problems, sequence_limit_problems

REQUEST_METRICS = [*(f"{m}_ms_{p}" for m in ("ttft", "tpot", "itl", "e2e", "queue") for p in ("p50", "p90", "p99", "mean")),
                   "request_throughput", "output_tokens_per_s", "goodput", "goodput_fraction", "requests", "completed",
                   "rejected", "queued", "output_tokens", "input_tokens", "duration_s", "max_batch", "max_queue_depth",
                   "kv_blocks", "hook_s", "compiles_timed"]
WARMUPS = ("replay", "short")


@dataclass
class Slo:
    ttft_ms: Optional[float] = None  # a request is good when its ttft is at most this (null: no bound)
    tpot_ms: Optional[float] = None  # ... and its tpot at most this


@dataclass
class ServeOptions:
    qps: float = 4.0  # mean arrival rate (requests/s); inf: all at t = 0
    arrival: str = "poisson"  # poisson | gamma
    burstiness: float = 1.0  # gamma shape (1 = Poisson; < 1 burstier)
    max_concurrency: Optional[int] = None  # outstanding requests the client allows (null: no limit)
    num_requests: int = 64
    duration_s: float = 300.0  # no arrival after this
    prompt_len: Optional[int] = None  # mean prompt tokens; null: seq.len
    prompt_dist: str = "uniform"  # fixed | uniform | lognormal
    output_len: int = 128  # mean output tokens
    output_dist: str = "uniform"
    len_spread: float = 0.5  # uniform: mean x [1 - spread, 1 + spread]; lognormal: sigma
    max_running: int = 32  # requests in the running batch
    max_queue: int = 1024  # waiting requests; more are rejected
    block_size: int = 16  # tokens per KV block
    num_blocks: Optional[int] = None  # the pool; null: max_running requests of max_model_len
    max_model_len: Optional[int] = None  # prompt + output of one request; null: the longest the trace can draw
    sampling: str = "greedy"  # greedy | sample
    temperature: float = 1.0
    top_k: Optional[int] = None
    slo: Slo = field(default_factory=Slo)
    on_complete: Optional[str] = None  # "package.module:function", called with each finished request's row (rank 0)
    warmup: str = "replay"  # replay: a warm-up step replays the timed trace; short: warmup_requests at t = 0
    warmup_requests: int = 4  # requests of a short warm-up step (all at t = 0)


@dataclass
class ServeConfig(WorkloadConfig):
    warmup_steps: int = 1
    steps: int = 1
    options: ServeOptions = field(default_factory=ServeOptions)


def length_caps(o, seq_len: int) -> tuple[int, int, int]:
    """(mean prompt, longest prompt, longest output) the trace can draw."""
    prompt = int(o.prompt_len or seq_len)
    grow = 1.0 + float(o.len_spread) if o.prompt_dist != "fixed" else 1.0
    grow_out = 1.0 + float(o.len_spread) if o.output_dist != "fixed" else 1.0
    if o.prompt_dist == "lognormal" or o.output_dist == "lognormal":  # a long tail: cap at 4 x the mean
        grow, grow_out = (4.0 if o.prompt_dist == "lognormal" else grow), (4.0 if o.output_dist == "lognormal" else grow_out)
    return prompt, max(1, math.ceil(prompt * grow)), max(1, math.ceil(int(o.output_len) * grow_out))


def hook_problems(spec: Optional[str]) -> list[str]:
    if spec is None:
        return []
    module, _, name = str(spec).partition(":")
    if not module or not name.isidentifier():
        return [f"workload.options.on_complete={spec!r}: name a function as 'package.module:function'"]
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return [f"workload.options.on_complete={spec!r}: a hook is a function of your own package, not the standard library"]
    if importlib.util.find_spec(top) is None:
        return [f"workload.options.on_complete={spec!r}: no module {top!r} is importable (install it or put it on PYTHONPATH; "
                "the working directory is not searched)"]
    return []


def load_hook(spec: str):
    module, _, name = spec.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn) or not hasattr(fn, "__code__"):
        raise ValueError(f"workload.options.on_complete={spec!r} is not a Python function")
    return fn


class Serve(Workload):
    Config = ServeConfig
    uses_model = True
    metric_rules = {k: "max" for k in REQUEST_METRICS}  # only rank 0 reports them

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx) + decode_problems(cfg, ctx, "serve")
        o = cfg.options
        if not o.qps > 0:
            problems.append(f"workload.options.qps={o.qps}: must be > 0 requests per second (inf sends every request at t = 0)")
        if o.arrival not in ARRIVALS:
            problems.append(f"workload.options.arrival={o.arrival!r}: choose {' or '.join(ARRIVALS)}")
        if o.burstiness <= 0:
            problems.append(f"workload.options.burstiness={o.burstiness}: must be > 0 (the gamma shape)")
        for key in ("prompt_dist", "output_dist"):
            if o[key] not in LENGTHS:
                problems.append(f"workload.options.{key}={o[key]!r}: choose {', '.join(LENGTHS)}")
        dists = (o.prompt_dist, o.output_dist)
        if not 0 <= o.len_spread < 1 and "uniform" in dists:
            problems.append(f"workload.options.len_spread={o.len_spread}: a uniform spread must be in [0, 1)")
        elif o.len_spread < 0 and "lognormal" in dists:
            problems.append(f"workload.options.len_spread={o.len_spread}: lognormal lengths take it as sigma, which must be >= 0")
        for key in ("num_requests", "output_len", "max_running", "max_queue", "block_size", "warmup_requests"):
            if o[key] < 1:
                problems.append(f"workload.options.{key}={o[key]}: must be a positive integer")
        for key in ("prompt_len", "num_blocks", "max_concurrency", "max_model_len"):
            if o[key] is not None and o[key] < 1:
                problems.append(f"workload.options.{key}={o[key]}: must be a positive integer or null")
        if o.warmup not in WARMUPS:
            problems.append(f"workload.options.warmup={o.warmup!r}: choose replay (warm-up steps replay the timed trace) "
                            "or short (warmup_requests requests at t = 0)")
        if o.duration_s <= 0:
            problems.append(f"workload.options.duration_s={o.duration_s}: must be > 0")
        for key in ("ttft_ms", "tpot_ms"):
            if o.slo[key] is not None and o.slo[key] <= 0:
                problems.append(f"workload.options.slo.{key}={o.slo[key]}: must be > 0 ms or null")
        problems += sampling_problems(o, "workload.options")
        problems += hook_problems(o.on_complete)
        if ctx.cfg.profile.name == "torch" and cfg.min_time_s > 0:
            problems.append(f"profile=torch with workload.min_time_s={cfg.min_time_s}: the profiled runs follow the timed ones, "
                            "whose number min_time_s leaves open, so they could not be told apart (requests.csv, the hook's "
                            "phase); set workload.min_time_s=0 and workload.steps to the runs you want")
        problems += compile_problems(ctx.cfg.compile.mode, ctx.cfg.compile.name, ctx.cfg.attention)
        if not problems:
            _, max_prompt, max_output = length_caps(o, ctx.cfg.seq.len)
            max_model_len = o.max_model_len or max_prompt + max_output
            problems += sequence_limit_problems(ctx, max_model_len, "workload.options.max_model_len (prompt + output)")
            if o.num_blocks is not None and o.num_blocks * o.block_size < min(max_model_len, max_prompt + 1):
                problems.append(f"workload.options.num_blocks={o.num_blocks} x block_size={o.block_size} cannot hold one request "
                                f"of {min(max_model_len, max_prompt + 1)} tokens")
        return problems

    def setup(self) -> None:
        cfg, ctx, o = self.ctx.cfg, self.ctx, self.options
        device = ctx.device
        self.built = build_model(ctx, training=False, compile_model=False, precision_overrides=decode_precision(ctx))
        model = self.built.model.eval()
        mean_prompt, max_prompt, max_output = length_caps(o, cfg.seq.len)
        self.max_model_len = int(o.max_model_len or max_prompt + max_output)
        model.ensure_positions(self.max_model_len)
        block_size = int(o.block_size)
        num_blocks = int(o.num_blocks or o.max_running * -(-self.max_model_len // block_size))
        head_dim = model.cfg.d_model // model.cfg.n_heads
        self.pool = BlockPool(model.cfg.n_layers, num_blocks, block_size, model.blocks[0].kv_heads, head_dim,
                              self.built.precision.compute_dtype, device)
        seed = int(cfg.run.seed)
        trace_args = dict(duration_s=float(o.duration_s), process=o.arrival, burstiness=float(o.burstiness), prompt_len=mean_prompt,
                          prompt_dist=o.prompt_dist, output_len=int(o.output_len), output_dist=o.output_dist, spread=float(o.len_spread),
                          max_prompt=max_prompt, max_output=max_output, vocab_size=int(model.cfg.vocab_size))
        self.trace = make_trace(seed, int(o.num_requests), qps=float(o.qps), **trace_args)
        self.warmup_trace = self.trace if o.warmup == "replay" else make_trace(seed + 1, int(o.warmup_requests), qps=math.inf, **trace_args)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        pick = lambda logits: next_token(logits, o.sampling, float(o.temperature), o.top_k, generator=gen)  # noqa: E731
        clock = SyncedClock(WallClock()) if ctx.world_size > 1 else WallClock()
        hook = load_hook(o.on_complete) if o.on_complete and ctx.rank == 0 else None
        self.runs: list[list[RequestRecord]] = []  # the timed runs
        # profile=torch runs the trace again after the timed runs (min_time_s = 0 is validated, so they are counted)
        self.timed_steps = int(cfg.workload.trials) * int(cfg.workload.steps) if cfg.profile.name == "torch" else None
        self.phase, self.run_index = "warm-up", 0
        on_complete = (lambda rec: hook({**rec.row(), "phase": self.phase, "run": self.run_index})) if hook else None
        limits = Limits(int(o.max_running), int(o.max_queue), o.max_concurrency, self.max_model_len)
        forward = compile_step(cfg.compile.mode, bool(cfg.compile.fullgraph)) if self.built.compiled else last_logits
        self.engine = Engine(model, self.pool, limits, clock, pick, self.built.precision.autocast, on_complete, forward)
        compiled = self._compile_shapes(mean_prompt, int(model.cfg.vocab_size)) if self.built.compiled else None
        self.graphs_before_timed = None
        self.calls = 0
        self.report = ctx.rank == 0
        self.effective = {
            "serve": {"requests_in_trace": len(self.trace), "qps": float(o.qps), "arrival": o.arrival, "max_model_len": self.max_model_len,
                      "kv_pool": {"blocks": num_blocks, "block_size": block_size, "tokens": num_blocks * block_size,
                                  "gb": sum(t.numel() * t.element_size() for t in (*self.pool.k, *self.pool.v)) / 1e9},
                      "attention_reads": "each row's blocks gathered into one right-aligned window per layer (a copy), masked by doc_ids",
                      "scheduling": "FIFO admission, prefill one request at a time, then one decode step of the running batch",
                      "counted_by": "rank 0 (request metrics); tokens on data shard 0",
                      "clock": "rank 0's, broadcast each iteration" if ctx.world_size > 1 else "wall clock (perf_counter)",
                      "warmup": (f"{cfg.workload.warmup_steps} replay(s) of the timed trace" if o.warmup == "replay"
                                 else f"{cfg.workload.warmup_steps} run(s) of {o.warmup_requests} requests at t = 0"),
                      "compiled": compiled or "no (eager)"},
        }

    def _compile_shapes(self, mean_prompt: int, vocab_size: int) -> dict:
        """Compile every graph a run needs before anything is timed (b200lab/serving/compiled.py):
        a scripted trace through prefill, many-row and one-row decode, with no hook called. It runs
        eagerly first, so the attention backend records the kernels of those calls (the compiled
        calls go to the same SDPA op, and a compiled call records nothing)."""
        hook, self.engine.on_complete = self.engine.on_complete, None
        trace = shape_warmup_trace(mean_prompt, self.max_model_len, vocab_size)
        compiled, self.engine.forward = self.engine.forward, last_logits
        self.engine.run(trace)
        self.engine.forward = compiled
        before, begin = graphs_compiled(), time.perf_counter()
        self.engine.run(trace)
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize()
        self.engine.on_complete = hook
        return {"mode": str(self.ctx.cfg.compile.mode), "dynamic_shapes": True, "graphs": graphs_compiled() - before,
                "compile_s": round(time.perf_counter() - begin, 2)}

    def step(self) -> None:
        self.calls += 1
        if self.calls <= int(self.cfg.warmup_steps):
            self.engine.run(self.warmup_trace)
            return
        n = self.calls - int(self.cfg.warmup_steps)
        if self.graphs_before_timed is None:  # the first timed run: what the warm-up counted is not the timed runs'
            self.graphs_before_timed = graphs_compiled()
            self.engine.reset_counters()
        profiled = self.timed_steps is not None and n > self.timed_steps
        self.phase, self.run_index = ("profiled", n - 1 - self.timed_steps) if profiled else ("timed", n - 1)
        records = self.engine.run(self.trace)
        if not profiled:
            self.runs.append(records)
        tokens = sum(len(r.tokens) for r in records if r.status == "done")
        self.tokens_per_step = tokens if self.ctx.data_shard == 0 else 0

    def metrics(self, stats: dict) -> dict:
        if not self.report:
            return {}
        runs = self.runs[:int(stats.get("n_steps", len(self.runs)))]
        o = self.options
        out = request_metrics(runs, o.slo.ttft_ms, o.slo.tpot_ms)
        out.update(max_batch=self.engine.max_batch, max_queue_depth=self.engine.max_queue_depth, kv_blocks=self.pool.num_blocks,
                   hook_s=self.engine.hook_s, compiles_timed=graphs_compiled() - (self.graphs_before_timed or 0))
        return out

    def write_artifacts(self, out_dir) -> None:
        if self.runs:
            write_csv(self.runs[-1], out_dir / "requests.csv")
