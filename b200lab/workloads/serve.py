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
request of every timed run goes to ``artifacts/requests.csv`` (a ``run`` column, and each token's
ready time in ``token_s``, so every metric can be recomputed from it), and ``options.on_complete``
(``module:function``) is called on rank 0 with each finished request's CSV row plus ``phase``
(warm-up, timed, or profiled: the runs ``profile=torch`` adds after the timed ones) and ``run``
(its run's index in that phase).

Ranks serve the same trace in lockstep (rank 0's clock): tensor-parallel peers split the model,
``parallelism=ddp`` replicas repeat the work. Request-level metrics come from rank 0 only and
tokens count on data shard 0 only, so nothing is counted twice (b200lab/serving/ranks.py).
"""

from __future__ import annotations

import importlib
import math
import time

import torch

from b200lab.measure.copy_bandwidth import job_copy_bandwidth
from b200lab.serving.bound import bound_metrics, bound_table
from b200lab.serving.bound import write_csv as write_bound_csv
from b200lab.serving.compiled import (
    CPU_DECODE_BACKEND,
    compile_decode,
    compile_step,
    cudagraph_skips,
    decode_bucket_sizes,
    graphs_compiled,
    mixed_bucket_sizes,
    shape_warmup_trace,
)
from b200lab.serving.engine import Engine, Limits, WallClock, last_logits
from b200lab.serving.latency import RequestRecord, request_metrics, write_csv
from b200lab.serving.loadgen import make_trace, offered_rate
from b200lab.serving.ranks import SyncedClock
from b200lab.serving.sampling import next_token
from b200lab.workloads.base import Workload, build_model
from b200lab.workloads.config.serve import ServeConfig, length_caps


def load_hook(spec: str):
    module, _, name = spec.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn) or not hasattr(fn, "__code__"):
        raise ValueError(f"workload.options.on_complete={spec!r} is not a Python function")
    return fn


REQUEST_METRICS = [
    *(f"{m}_ms_{p}" for m in ("ttft", "tpot", "itl", "e2e", "queue") for p in ("p50", "p90", "p99", "mean")),
    "request_throughput",
    "output_tokens_per_s",
    "goodput",
    "goodput_fraction",
    "requests",
    "completed",
    "rejected",
    "queued",
    "output_tokens",
    "input_tokens",
    "duration_s",
    "max_batch",
    "max_prefill_rows",
    "mixed_steps",
    "max_step_tokens",
    "max_queue_depth",
    "kv_blocks",
    "hook_s",
    "compiles_timed",
    "offered_qps",
    "decode_bw_util",
    "decode_bw_util_max_batch",
    "decode_step_ms_max_batch",
    "decode_bound_ms_max_batch",
]


def scheduling_note(o) -> str:
    """How an iteration feeds prompts and decodes (b200lab/serving/engine.py), for the record."""
    if o.token_budget is not None:
        chunk = f", each at most {o.prefill_chunk} tokens" if o.prefill_chunk else ""
        return (
            f"FIFO admission; one forward per iteration of up to {o.token_budget} tokens: every running request's "
            f"next token, then prompt chunks of the admitted requests in arrival order{chunk}, packed into one row"
        )
    if o.prefill_chunk is not None:
        return (
            f"FIFO admission; prompts fed {o.prefill_chunk} tokens per iteration, chunks of one length in one "
            "forward; then one decode step of the running batch"
        )
    return "FIFO admission, prefill one request at a time, then one decode step of the running batch"


class Serve(Workload):
    Config = ServeConfig
    metric_rules = {k: "max" for k in REQUEST_METRICS}  # only rank 0 reports them

    def setup(self) -> None:
        cfg, ctx, o = self.ctx.cfg, self.ctx, self.options
        device = ctx.device
        self.copy = job_copy_bandwidth(device, o.copy_gbps, o.copy_size_mb)  # before the model takes the memory
        self.built = build_model(
            ctx, training=False, compile_model=False, precision_overrides=ServeConfig.precision_overrides(cfg)
        )
        decoder = self.decoder = self.built.family.decoder(self.built.model.eval())
        mean_prompt, max_prompt, max_output = length_caps(o, cfg.seq.len)
        self.max_model_len = int(o.max_model_len or max_prompt + max_output)
        block_size = int(o.block_size)
        num_blocks = int(o.num_blocks or o.max_running * -(-self.max_model_len // block_size))
        if o.decode_graphs and o.num_blocks is None:
            num_blocks += 1  # the padding rows' scratch block, so max_running requests still fit
        in_place = o.kv_read == "in_place"
        self.pool = decoder.paged_cache(
            num_blocks, block_size, self.built.precision.compute_dtype, self.max_model_len, in_place
        )
        seed = int(cfg.run.seed)
        trace_args = dict(
            duration_s=float(o.duration_s),
            process=o.arrival,
            burstiness=float(o.burstiness),
            prompt_len=mean_prompt,
            prompt_dist=o.prompt_dist,
            output_len=int(o.output_len),
            output_dist=o.output_dist,
            spread=float(o.len_spread),
            max_prompt=max_prompt,
            max_output=max_output,
            vocab_size=decoder.vocab_size,
        )
        self.trace = make_trace(seed, int(o.num_requests), qps=float(o.qps), **trace_args)
        self.warmup_trace = (
            self.trace
            if o.warmup == "replay"
            else make_trace(seed + 1, int(o.warmup_requests), qps=math.inf, **trace_args)
        )
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
        limits = Limits(
            int(o.max_running), int(o.max_queue), o.max_concurrency, self.max_model_len, o.prefill_chunk, o.token_budget
        )
        forward = compile_step(cfg.compile.mode, bool(cfg.compile.fullgraph)) if self.built.compiled else last_logits
        buckets = decode_bucket_sizes(int(o.max_running)) if o.decode_graphs else None
        mixed = mixed_bucket_sizes(int(o.token_budget)) if buckets and o.token_budget is not None else None
        if buckets and device.type == "cuda":  # every recorded graph reads these in place, and writes the pool
            for t in (*self.pool.k, *self.pool.v, self.pool.slot_owner, self.pool.slot_pos):
                torch._dynamo.mark_static_address(t)
        self.engine = Engine(
            decoder,
            self.pool,
            limits,
            clock,
            pick,
            self.built.precision.autocast,
            on_complete,
            forward,
            decode_buckets=buckets,
            decode_forward=compile_decode(device.type, len(buckets) + len(mixed or ())) if buckets else None,
            mixed_buckets=mixed,
        )
        compiled = self._compile_shapes(mean_prompt, decoder.vocab_size) if self.built.compiled else None
        decode_graphs = self._warm_decode_graphs() if buckets else "off (decode steps at the batch's own size)"
        self.graphs_before_timed = None
        self.calls = 0
        self.report = ctx.rank == 0
        self.effective = {
            "serve": {
                "requests_in_trace": len(self.trace),
                "qps": float(o.qps),
                "offered_qps": offered_rate(self.trace),
                "arrivals": "normalised: the last of the trace's requests arrives at N / qps (as vLLM's benchmark)",
                "arrival": o.arrival,
                "max_model_len": self.max_model_len,
                "kv_pool": {
                    "blocks": self.pool.usable_blocks,  # what requests can be given
                    "reserved_blocks": self.pool.reserved,  # decode_graphs' scratch
                    "block_size": block_size,
                    "tokens": self.pool.usable_blocks * block_size,
                    "gb": sum(t.numel() * t.element_size() for t in (*self.pool.k, *self.pool.v)) / 1e9,
                },
                "attention_reads": (
                    "the pool in place: every slot's row and position in a FlexAttention mask, no copy"
                    if in_place
                    else "each row's blocks gathered into a right-aligned window per layer (a copy), masked by doc_ids"
                ),
                "scheduling": scheduling_note(o),
                "counted_by": "rank 0 (request metrics); tokens on data shard 0",
                "clock": "rank 0's, broadcast each iteration" if ctx.world_size > 1 else "wall clock (perf_counter)",
                "warmup": (
                    f"{cfg.workload.warmup_steps} replay(s) of the timed trace"
                    if o.warmup == "replay"
                    else f"{cfg.workload.warmup_steps} run(s) of {o.warmup_requests} requests at t = 0"
                ),
                "compiled": compiled or "no (eager)",
                "decode_graphs": decode_graphs,
            },
            "decode_bound": self._bound_note(),
        }
        self.decode_logs: list[list] = []  # each timed run's decode steps (rows, positions, seconds)

    def _bound_note(self) -> dict:
        if not self.decoder.reads_all_weights:
            return {"reason": "not computed: a decode step of this model reads only the weights its tokens route to"}
        if self.copy is None:
            return {
                "reason": "no copy bandwidth: not measured on a CPU; pass workload.options.copy_gbps to compute "
                "decode_bw_util anyway"
            }
        return {
            "copy_bandwidth": self.copy,
            "bytes": "per decode step: every weight this rank holds once (embedding tables one row per request) "
            "+ each row's keys and values up to its position, and the new one written (b200lab/serving/bound.py)",
            "time": "the step's wall time, its tokens copied to the host included",
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
        return {
            "mode": str(self.ctx.cfg.compile.mode),
            "dynamic_shapes": True,
            "graphs": graphs_compiled() - before,
            "compile_s": round(time.perf_counter() - begin, 2),
        }

    def _warm_decode_graphs(self) -> dict:
        """Compile (and on a GPU record) every bucket's decode step before anything is timed."""
        before, skips, begin = graphs_compiled(), cudagraph_skips(), time.perf_counter()
        self.engine.warm_decode_buckets()
        self.engine.warm_mixed_buckets()
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize()
        out = {
            "buckets": self.engine.buckets,
            # mixed steps (token_budget) padded to these token counts and max_running rows; null: no token budget
            "mixed_buckets": self.engine.mixed_buckets,
            "mode": "inductor, reduce-overhead: each bucket's step recorded as a CUDA graph"
            if self.ctx.device.type == "cuda"
            else f"{CPU_DECODE_BACKEND}: static graphs traced by dynamo, no inductor and no CUDA graphs on a CPU",
            "graphs": graphs_compiled() - before,
            "compile_s": round(time.perf_counter() - begin, 2),
            "scratch_block": self.engine.scratch[0],
            "padding": "rows (and a mixed step's tokens) up to the bucket read and write only the scratch block; "
            "their logits are dropped",
        }
        if self.ctx.device.type == "cuda":
            out["cudagraph_skips"] = cudagraph_skips() - skips  # > 0: inductor ran a graph without recording it
        return out

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
        logged = len(self.engine.decode_log)
        records = self.engine.run(self.trace)
        if not profiled:
            self.runs.append(records)
            self.decode_logs.append(self.engine.decode_log[logged:])
        tokens = sum(len(r.tokens) for r in records if r.status == "done")
        self.tokens_per_step = tokens if self.ctx.data_shard == 0 else 0

    def metrics(self, stats: dict) -> dict:
        if not self.report:
            return {}
        runs = self.runs[: int(stats.get("n_steps", len(self.runs)))]
        o = self.options
        out = request_metrics(runs, o.slo.ttft_ms, o.slo.tpot_ms)
        out.update(
            max_batch=self.engine.max_batch,
            max_prefill_rows=self.engine.max_prefill_rows,
            mixed_steps=self.engine.mixed_steps,
            max_step_tokens=self.engine.max_step_tokens,
            max_queue_depth=self.engine.max_queue_depth,
            kv_blocks=self.pool.usable_blocks,
            hook_s=self.engine.hook_s,
            compiles_timed=graphs_compiled() - (self.graphs_before_timed or 0),
        )
        offered = offered_rate(self.trace)
        if math.isfinite(offered):
            out["offered_qps"] = offered  # beside the label: what the trace offered (= qps, normalised arrivals)
        self.bound = self._bound_table(len(runs))
        out.update(bound_metrics(self.bound))
        return out

    def _bound_table(self, n_runs: int) -> list[dict]:
        if self.copy is None or not self.decoder.reads_all_weights:
            return []
        steps = [step for log in self.decode_logs[:n_runs] for step in log]
        return bound_table(steps, self.decoder, self.pool.k[0].element_size(), self.copy["gbps"])

    def write_artifacts(self, out_dir) -> None:
        if self.runs:
            write_csv(self.runs, out_dir / "requests.csv")
        if getattr(self, "bound", None):
            write_bound_csv(self.bound, out_dir / "decode_bound.csv")
