"""``workload=serve``: an in-process server under a seeded load (b200lab/workloads/serve.py)."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass, field

from b200lab.core.component import CheckContext, DecodeRows
from b200lab.workloads.config.decode import (
    CopyBandwidthOptions,
    DecodeWorkloadConfig,
    copy_bandwidth_problems,
    sampling_problems,
    sequence_limit_problems,
)

ARRIVALS = ("poisson", "gamma")
LENGTHS = ("fixed", "uniform", "lognormal")
SERVE_COMPILE_MODES = ("default",)
WARMUPS = ("replay", "short")
KV_READS = ("gather", "in_place")


@dataclass
class Slo:
    ttft_ms: float | None = None  # a request is good when its ttft is at most this (null: no bound)
    tpot_ms: float | None = None  # ... and its tpot at most this


@dataclass
class ServeOptions(CopyBandwidthOptions):
    qps: float = 4.0  # mean arrival rate (requests/s); inf: all at t = 0
    arrival: str = "poisson"  # poisson | gamma
    burstiness: float = 1.0  # gamma shape (1 = Poisson; < 1 burstier)
    max_concurrency: int | None = None  # outstanding requests the client allows (null: no limit)
    num_requests: int = 64
    duration_s: float = 300.0  # no arrival after this
    prompt_len: int | None = None  # mean prompt tokens; null: seq.len
    prompt_dist: str = "uniform"  # fixed | uniform | lognormal
    output_len: int = 128  # mean output tokens
    output_dist: str = "uniform"
    len_spread: float = 0.5  # uniform: mean x [1 - spread, 1 + spread]; lognormal: sigma
    max_running: int = 32  # requests in the running batch
    # prompt tokens a request feeds per step, chunks of one length batched (null: each prompt whole, alone)
    prefill_chunk: int | None = None
    # tokens of one mixed step: every running request's next token, then prefill chunks up to the
    # budget, packed into one forward (null: prefill and decode apart); needs kv_read=in_place
    token_budget: int | None = None
    max_queue: int = 1024  # waiting requests; more are rejected
    block_size: int = 16  # tokens per KV block
    # gather: each row's blocks copied into a window per layer (any backend); in_place: the attention
    # reads the pool itself (a backend whose config reads_pages: attention=flex)
    kv_read: str = "gather"
    # decode steps padded to batch-size buckets (powers of two up to max_running), one static graph
    # each, on a GPU a CUDA graph (b200lab/serving/compiled.py); needs kv_read=in_place
    decode_graphs: bool = False
    num_blocks: int | None = None  # the pool; null: max_running requests of max_model_len
    max_model_len: int | None = None  # prompt + output of one request; null: the longest the trace can draw
    sampling: str = "greedy"  # greedy | sample
    temperature: float = 1.0
    top_k: int | None = None
    slo: Slo = field(default_factory=Slo)
    on_complete: str | None = None  # "package.module:function", called with each finished request's row (rank 0)
    warmup: str = "replay"  # replay: a warm-up step replays the timed trace; short: warmup_requests at t = 0
    warmup_requests: int = 4  # requests of a short warm-up step (all at t = 0)


@dataclass
class ServeConfig(DecodeWorkloadConfig):
    warmup_steps: int = 1
    steps: int = 1
    options: ServeOptions = field(default_factory=ServeOptions)

    target = "b200lab.workloads.serve.Serve"
    ALLOWS_INF = ("options.qps",)  # qps=inf sends every request at t = 0

    @classmethod
    def decode_rows(cls, cfg, job) -> DecodeRows:
        return DecodeRows(None, "as many rows as requests running, and a prefill as many as its prompt's tokens")

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx) + cls.decode_problems(cfg, ctx)
        o = cfg.options
        if not o.qps > 0:
            problems.append(
                f"workload.options.qps={o.qps}: must be > 0 requests per second (inf sends every request at t = 0)"
            )
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
            problems.append(
                f"workload.options.len_spread={o.len_spread}: lognormal lengths take it as sigma, which must be >= 0"
            )
        for key in ("num_requests", "output_len", "max_running", "max_queue", "block_size", "warmup_requests"):
            if o[key] < 1:
                problems.append(f"workload.options.{key}={o[key]}: must be a positive integer")
        for key in ("prompt_len", "num_blocks", "max_concurrency", "max_model_len", "prefill_chunk", "token_budget"):
            if o[key] is not None and o[key] < 1:
                problems.append(f"workload.options.{key}={o[key]}: must be a positive integer or null")
        problems += copy_bandwidth_problems(o)
        if o.warmup not in WARMUPS:
            problems.append(
                f"workload.options.warmup={o.warmup!r}: choose replay (warm-up steps replay the timed trace) "
                "or short (warmup_requests requests at t = 0)"
            )
        if o.kv_read not in KV_READS:
            problems.append(f"workload.options.kv_read={o.kv_read!r}: choose gather or in_place")
        elif o.kv_read == "in_place" and not ctx.spec("attention").reads_pages:
            problems.append(
                f"workload.options.kv_read=in_place with attention={ctx.cfg.attention.name}: this backend cannot "
                "read keys in place from the block pool; use attention=flex, or kv_read=gather"
            )
        if o.decode_graphs and o.kv_read != "in_place":
            problems.append(
                f"workload.options.decode_graphs=true with kv_read={o.kv_read}: a bucket is one static shape only "
                "when the attention reads the whole pool (the gathered window widens every step); set "
                "workload.options.kv_read=in_place with attention=flex"
            )
        capacity = ctx.cfg.model.get("capacity_factor")
        if o.decode_graphs and capacity is not None:
            problems.append(
                f"workload.options.decode_graphs=true with model.capacity_factor={capacity}: the padding rows and "
                "tokens of a graphed step count against the experts' capacity, so it could drop real tokens an "
                "unpadded step keeps; set model.capacity_factor=null (dropless) or decode_graphs=false"
            )
        if o.token_budget is not None and o.kv_read != "in_place":
            problems.append(
                f"workload.options.token_budget={o.token_budget} with kv_read={o.kv_read}: a mixed step packs "
                "requests of different lengths into one row, which only the in-place read can mask; set "
                "workload.options.kv_read=in_place with attention=flex"
            )
        if o.token_budget is not None and 1 <= o.token_budget <= o.max_running:
            problems.append(
                f"workload.options.token_budget={o.token_budget} with max_running={o.max_running}: a full batch "
                "of decode rows would leave no token for a prompt; set it above max_running"
            )
        if o.duration_s <= 0:
            problems.append(f"workload.options.duration_s={o.duration_s}: must be > 0")
        for key in ("ttft_ms", "tpot_ms"):
            if o.slo[key] is not None and o.slo[key] <= 0:
                problems.append(f"workload.options.slo.{key}={o.slo[key]}: must be > 0 ms or null")
        problems += sampling_problems(o, "workload.options")
        problems += hook_problems(o.on_complete)
        if ctx.cfg.profile.name == "torch" and cfg.min_time_s > 0:
            problems.append(
                f"profile=torch with workload.min_time_s={cfg.min_time_s}: the profiled runs follow the timed ones, "
                "whose number min_time_s leaves open, so they could not be told apart (requests.csv, the hook's "
                "phase); set workload.min_time_s=0 and workload.steps to the runs you want"
            )
        problems += compile_problems(
            ctx.cfg.compile.mode, ctx.cfg.compile.name, ctx.cfg.attention, ctx.spec("attention")
        )
        if not problems:
            _, max_prompt, max_output = length_caps(o, ctx.cfg.seq.len)
            max_model_len = o.max_model_len or max_prompt + max_output
            problems += sequence_limit_problems(ctx, max_model_len, "workload.options.max_model_len (prompt + output)")
            usable = None if o.num_blocks is None else o.num_blocks - int(bool(o.decode_graphs))
            if usable is not None and usable * o.block_size < min(max_model_len, max_prompt + 1):
                problems.append(
                    f"workload.options.num_blocks={o.num_blocks} x block_size={o.block_size} cannot hold one request "
                    f"of {min(max_model_len, max_prompt + 1)} tokens"
                    + (" (decode_graphs keeps one block as the padding rows' scratch)" if o.decode_graphs else "")
                )
        return problems


def length_caps(o, seq_len: int) -> tuple[int, int, int]:
    """(mean prompt, longest prompt, longest output) the trace can draw."""
    prompt = int(o.prompt_len or seq_len)
    grow = 1.0 + float(o.len_spread) if o.prompt_dist != "fixed" else 1.0
    grow_out = 1.0 + float(o.len_spread) if o.output_dist != "fixed" else 1.0
    if o.prompt_dist == "lognormal" or o.output_dist == "lognormal":  # a long tail: cap at 4 x the mean
        grow, grow_out = (
            (4.0 if o.prompt_dist == "lognormal" else grow),
            (4.0 if o.output_dist == "lognormal" else grow_out),
        )
    return prompt, max(1, math.ceil(prompt * grow)), max(1, math.ceil(int(o.output_len) * grow_out))


def hook_problems(spec: str | None) -> list[str]:
    if spec is None:
        return []
    module, _, name = str(spec).partition(":")
    if not module or not name.isidentifier():
        return [f"workload.options.on_complete={spec!r}: name a function as 'package.module:function'"]
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return [
            f"workload.options.on_complete={spec!r}: a hook is a function of your own package, not the standard library"
        ]
    if importlib.util.find_spec(top) is None:
        return [
            f"workload.options.on_complete={spec!r}: no module {top!r} is importable (install it or put it on "
            "PYTHONPATH; "
            "the working directory is not searched)"
        ]
    return []


def compile_problems(mode, name: str, attention, attention_spec) -> list[str]:
    """Why the serve step cannot compile with ``compile.mode`` and this attention option."""
    if mode is None:
        return []
    if mode not in SERVE_COMPILE_MODES:
        return [
            f"compile={name}: workload=serve compiles its step with symbolic shapes (the batch and the cache window "
            "change "
            f"every step), and mode {mode!r} captures CUDA graphs, which replay one shape; use compile=default or "
            "compile=none"
        ]
    if attention_spec.serve_compile_problem:
        return [
            f"compile=default with attention={attention.name}: {attention_spec.serve_compile_problem}; use "
            "attention=sdpa with "
            f"compile=default, or attention={attention.name} with compile=none"
        ]
    return []
