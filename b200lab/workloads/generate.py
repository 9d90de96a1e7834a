"""Generation: prefill a batch of prompts, then decode one token per step from a static KV cache.

One step of this workload is one whole generation: the prefill of ``seq.batch`` prompts of
``options.prompt_len`` tokens (default ``seq.len``) with logits of the last position only, the
first token, then ``options.output_len - 1`` decode steps. The cache holds ``max_len`` =
prompt_len + output_len slots (``options.max_len`` to widen it), written at a position tensor, so
the decode step has the same shapes at every position: with ``compile`` it compiles once, and on
a GPU it is captured in a CUDA graph (``options.cuda_graph``, default on for CUDA) and replayed,
its next token, position and output column updated inside the graph; the host only replays and
records an event per step (no sync inside the loop). ``compile=reduce-overhead`` leaves the graphs
to torch.compile instead.

Metrics (b200lab/serving/latency.py's percentiles): ``ttft_ms_*`` (prefill and first token of a
generation), ``tpot_ms_*`` ((e2e - ttft) / (output_len - 1) per generation), ``itl_ms_*`` (every
decode step), ``prefill_tokens_per_s``, ``decode_tokens_per_s``, and on a GPU ``hbm_bw_util``:
the weight and KV bytes of the decode steps over their time over the card's copy bandwidth
measured in the same job before the model is built (b200lab/serving/bandwidth.py; or
``options.copy_gbps`` from a recorded ``workload=hbm`` run, recorded as given). docs/serving.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from b200lab.components import CheckContext
from b200lab.precision.te_support import te_decode_rows_problem
from b200lab.serving import bandwidth
from b200lab.serving.decoder import StaticDecoder
from b200lab.serving.latency import percentiles
from b200lab.serving.ranks import shard_leader
from b200lab.serving.sampling import SAMPLING, next_token
from b200lab.workloads.base import Workload, WorkloadConfig, build_model

NO_DECODE = {"b200lab.attention.TEAttention": "Transformer Engine's DotProductAttention here runs whole causal sequences only"}
DECODE_FAMILIES = ("b200lab.models.gpt.GPTFamily", "b200lab.models.moe.MoEFamily")


@dataclass
class GenerateOptions:
    prompt_len: Optional[int] = None  # null: seq.len
    output_len: int = 128  # tokens generated per sequence (the first by the prefill), at least 2
    max_len: Optional[int] = None  # cache slots; null: prompt_len + output_len (every decode step reads all of them)
    sampling: str = "greedy"  # greedy | sample
    temperature: float = 1.0
    top_k: Optional[int] = None  # sample among the k likeliest tokens (null: all)
    cuda_graph: Optional[bool] = None  # capture the decode step in a CUDA graph; null: on a GPU
    copy_gbps: Optional[float] = None  # the card's copy bandwidth (GB/s) from a recorded workload=hbm run; null: measured here (GPU)
    copy_size_mb: Optional[float] = None  # buffer size of the in-job copy measurement; null: workload=hbm's default


@dataclass
class GenerateConfig(WorkloadConfig):
    options: GenerateOptions = field(default_factory=GenerateOptions)


def decode_problems(cfg, ctx: CheckContext, workload: str) -> list[str]:
    """What any decode workload refuses: model families and attention backends without a decode
    path, packed documents, sequence parallel."""
    problems = []
    model_target = str(ctx.cfg.model.get("_target_", ""))
    if model_target not in DECODE_FAMILIES:
        problems.append(f"workload={workload} needs a model with a KV-cache decode path (model=gpt family or moe); "
                        f"model={ctx.cfg.model.name} ({model_target}) has none")
    attention = ctx.cfg.attention
    if str(attention.get("_target_", "")) in NO_DECODE:
        problems.append(f"attention={attention.name} has no decode path for workload={workload}: "
                        f"{NO_DECODE[str(attention._target_)]}; use attention=sdpa or flex")
    if attention.get("documents"):
        problems.append(f"attention={attention.name} keeps packed documents apart; workload={workload} decodes whole "
                        "prompts: use attention=sdpa, flex or flex_sliding")
    if (ctx.cfg.parallelism or {}).get("sequence_parallel"):
        problems.append(f"parallelism.sequence_parallel=true cannot split a one-token decode step over the sequence; "
                        f"turn it off for workload={workload}")
    return problems + te_decode_problems(ctx, workload)


TE_PRECISION = "b200lab.precision.te_fp8.TEFP8Precision"


def te_decode_problems(ctx: CheckContext, workload: str) -> list[str]:
    """A Transformer Engine recipe whose FP8 GEMMs cannot run this workload's decode steps, refused
    before anything runs (not an assertion inside TE at the first step). fp8_auto takes its next
    path there instead (b200lab/precision/fp8_auto.py)."""
    precision = ctx.cfg.precision
    if str(precision.get("_target_", "")) != TE_PRECISION:
        return []
    why = te_decode_rows_problem(ctx.cfg)
    if why is None:
        return []
    return [f"precision={precision.name}: {why}; use precision=fp8_weight_only (e4m3 weights, bf16 compute), fp8_auto or bf16"
            + (", or a seq.batch that is a multiple of TE's alignment" if workload == "generate" else "")]


def decode_precision(ctx) -> dict:
    """Overrides for the precision this decode workload builds: fp8_auto is told why Transformer
    Engine cannot run the steps, so it takes its next path and says why."""
    if not str(ctx.cfg.precision.get("_target_", "")).endswith("FP8AutoPrecision"):
        return {}
    why = te_decode_rows_problem(ctx.cfg)
    return {"avoid_te": why} if why else {}


def sequence_limit_problems(ctx: CheckContext, tokens: int, what: str) -> list[str]:
    model = ctx.cfg.model
    if model.get("pos") == "learned" and tokens > model.get("max_seq_len", tokens):
        return [f"{what} = {tokens} exceeds model.max_seq_len={model.max_seq_len} (model.pos=learned has no positions past it)"]
    return []


def sampling_problems(o, prefix: str) -> list[str]:
    problems = []
    if o.sampling not in SAMPLING:
        problems.append(f"{prefix}.sampling={o.sampling!r}: choose {' or '.join(SAMPLING)}")
    if o.temperature <= 0:
        problems.append(f"{prefix}.temperature={o.temperature}: must be > 0 (greedy is sampling=greedy)")
    if o.top_k is not None and o.top_k < 1:
        problems.append(f"{prefix}.top_k={o.top_k}: must be a positive integer or null")
    return problems


class _Marks:
    """Points in a generation: CUDA events (read after the worker's end-of-trial sync) or host
    clock readings on a CPU, where ops run synchronously."""

    def __init__(self, cuda: bool):
        self.cuda, self.points = cuda, []

    def record(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append(event)
        else:
            self.points.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """Each point's time after the first."""
        if self.cuda:
            return [self.points[0].elapsed_time(e) / 1e3 for e in self.points]
        return [t - self.points[0] for t in self.points]


class Generate(Workload):
    Config = GenerateConfig
    uses_model = True
    metric_rules = {
        **{f"{m}_ms_{p}": "max" for m in ("ttft", "tpot", "itl") for p in ("p50", "p90", "p99", "mean")},
        "prefill_tokens_per_s": "sum", "decode_tokens_per_s": "sum",  # from each data shard's first rank only
        "hbm_bw_util": "mean", "hbm_bw_util_min": "min", "hbm_bw_util_max": "max", "decode_gbps": "mean", "copy_gbps": "mean",
        "decode_bytes_per_step": "sum",
    }

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx) + decode_problems(cfg, ctx, "generate")
        o = cfg.options
        prompt = o.prompt_len if o.prompt_len is not None else ctx.cfg.seq.len
        if prompt is None or prompt < 1:
            problems.append(f"workload.options.prompt_len={prompt}: must be a positive integer")
        if o.output_len is None or o.output_len < 2:
            problems.append(f"workload.options.output_len={o.output_len}: must be at least 2 (the prefill gives the first "
                            "token; workload=generate times the decode steps after it)")
        need = (prompt or 0) + (o.output_len or 0)
        if o.max_len is not None and o.max_len < need:
            problems.append(f"workload.options.max_len={o.max_len} cannot hold prompt_len + output_len = {prompt} + "
                            f"{o.output_len} = {need} tokens; raise it or leave it null (= the sum)")
        problems += sequence_limit_problems(ctx, o.max_len or need, "the cache (prompt_len + output_len)")
        problems += sampling_problems(o, "workload.options")
        if o.cuda_graph and ctx.device != "cuda":
            problems.append(f"workload.options.cuda_graph=true needs a CUDA GPU and this job runs on {ctx.device}")
        if o.copy_gbps is not None and o.copy_gbps <= 0:
            problems.append(f"workload.options.copy_gbps={o.copy_gbps}: must be > 0 (GB/s), or null to measure it")
        if o.copy_size_mb is not None and o.copy_size_mb <= 0:
            problems.append(f"workload.options.copy_size_mb={o.copy_size_mb}: must be > 0")
        return problems

    def setup(self) -> None:
        from b200lab.workloads.hbm import AUTO_SIZE_MB

        cfg, ctx, o = self.ctx.cfg, self.ctx, self.options
        device = ctx.device
        cuda = device.type == "cuda"
        self.batch, self.prompt_len, self.output_len = int(cfg.seq.batch), int(o.prompt_len or cfg.seq.len), int(o.output_len)
        self.max_len = int(o.max_len or self.prompt_len + self.output_len)
        self.copy = None
        if o.copy_gbps is not None:
            self.copy = {"gbps": float(o.copy_gbps), "source": "given (workload.options.copy_gbps)"}
        elif cuda:
            size = float(o.copy_size_mb or AUTO_SIZE_MB["cuda"])
            self.copy = {"gbps": bandwidth.copy_gbps(device, size), "source": f"measured in this job before the model was built "
                         f"(device copy of {size:g} MB, read + write, median of 20)"}
        self.built = build_model(ctx, training=False, compile_model=False, precision_overrides=decode_precision(ctx))
        model = self.built.model.eval()
        precision = self.built.precision
        inputs, _ = ctx.data.batch(self.batch, self.prompt_len, ctx.generator())
        self.prompts = inputs["idx"] if isinstance(inputs, dict) else inputs
        pick = lambda logits: next_token(logits, o.sampling, float(o.temperature), o.top_k)  # noqa: E731
        self.decoder = StaticDecoder(model, self.batch, self.prompt_len, self.output_len, self.max_len, precision.compute_dtype,
                                     pick, precision.autocast)
        self.cache = self.decoder.cache
        self.model = model
        mode = cfg.compile.mode if self.built.compiled else None
        graph = bool(o.cuda_graph if o.cuda_graph is not None else cuda)
        self.graph_by = "none"
        if graph and mode == "reduce-overhead":
            self.graph_by, graph = "torch.compile's CUDA graphs (compile.mode=reduce-overhead)", False
        if mode is not None:
            self.decoder.compile(mode, bool(cfg.compile.fullgraph), own_graph=graph)
        if graph:
            self.decoder.capture(self.prompts)
            self.graph_by = "a CUDA graph of the decode step (torch.cuda.CUDAGraph, captured after warm-up)"
        self.leader = shard_leader(ctx)
        self.generations: list[_Marks] = []
        self.tokens_per_step = self.batch * self.output_len
        self.weight_bytes = bandwidth.weight_bytes(model, self.batch)
        self.generation_bytes = bandwidth.generation_bytes(model, self.batch, self.prompt_len, self.output_len,
                                                           self.cache.k[0].element_size())
        self.effective = {
            "data": ctx.data.effective,
            "generate": {"batch": self.batch, "prompt_len": self.prompt_len, "output_len": self.output_len, "max_len": self.max_len,
                         "cache": "static (max_len slots, index_copy_ at a position tensor, length mask)",
                         "cache_dtype": str(self.cache.k[0].dtype).removeprefix("torch."), "cache_gb": self.cache.nbytes() / 1e9,
                         "sampling": o.sampling, "compiled": mode and f"{mode} (inductor coordinate_descent_tuning)", "cuda_graph": self.graph_by,
                         "weight_bytes_per_step": self.weight_bytes},
            "copy_bandwidth": self.copy or {"source": None, "reason": "not measured on a CPU (no HBM; a tiny model sits in cache): "
                                            "hbm_bw_util is defined for GPUs; pass workload.options.copy_gbps to compute it anyway"},
        }
        if model.cfg.family == "moe":
            self.effective["copy_bandwidth"]["hbm_bw_util"] = "not computed: a MoE step reads only the experts its tokens route to"

    def step(self) -> None:
        marks = _Marks(self.ctx.device.type == "cuda")
        marks.record()
        self.decoder.generate(self.prompts, marks.record)
        self.generations.append(marks)

    def metrics(self, stats: dict) -> dict:
        n = int(stats.get("n_steps", 0))
        warm = int(self.cfg.warmup_steps)
        timed = [m.seconds() for m in self.generations[warm:warm + n]]
        if not timed:
            return {}
        ttft = [t[1] for t in timed]
        decode = [t[-1] - t[1] for t in timed]
        out = percentiles("ttft", ttft)
        out.update(percentiles("itl", [b - a for t in timed for a, b in zip(t[1:], t[2:])]))
        out.update(percentiles("tpot", [d / (self.output_len - 1) for d in decode]))
        if self.leader:
            out["prefill_tokens_per_s"] = self.batch * self.prompt_len * len(timed) / sum(ttft)
            out["decode_tokens_per_s"] = self.batch * (self.output_len - 1) * len(timed) / sum(decode)
        per_gen = self.generation_bytes
        out["decode_bytes_per_step"] = per_gen / (self.output_len - 1)
        out["decode_gbps"] = per_gen * len(timed) / sum(decode) / 1e9
        if self.copy is not None and self.model.cfg.family != "moe":
            out["copy_gbps"] = self.copy["gbps"]
            utils = [per_gen / d / 1e9 / self.copy["gbps"] for d in decode]
            out["hbm_bw_util"] = out["decode_gbps"] / self.copy["gbps"]
            out["hbm_bw_util_min"], out["hbm_bw_util_max"] = float(np.min(utils)), float(np.max(utils))
        return out

    def write_artifacts(self, out_dir) -> None:
        """The tokens of the last generation (a check that decoding ran, and what it produced)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savetxt(out_dir / "generated_tokens.txt", self.decoder.out.cpu().numpy(), fmt="%d")
