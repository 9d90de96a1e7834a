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

import numpy as np
import torch

from b200lab.measure.copy_bandwidth import job_copy_bandwidth
from b200lab.serving import bandwidth
from b200lab.serving.decoder import StaticDecoder
from b200lab.serving.latency import percentiles
from b200lab.serving.ranks import shard_leader
from b200lab.serving.sampling import next_token
from b200lab.workloads.base import Workload, build_model
from b200lab.workloads.config.generate import GenerateConfig


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
    metric_rules = {
        **{f"{m}_ms_{p}": "max" for m in ("ttft", "tpot", "itl") for p in ("p50", "p90", "p99", "mean")},
        "prefill_tokens_per_s": "sum",
        "decode_tokens_per_s": "sum",  # from each data shard's first rank only
        "hbm_bw_util": "mean",
        "hbm_bw_util_min": "min",
        "hbm_bw_util_max": "max",
        "decode_gbps": "mean",
        "copy_gbps": "mean",
        "decode_bytes_per_step": "sum",
    }

    def setup(self) -> None:
        cfg, ctx, o = self.ctx.cfg, self.ctx, self.options
        device = ctx.device
        cuda = device.type == "cuda"
        self.batch, self.prompt_len, self.output_len = (
            int(cfg.seq.batch),
            int(o.prompt_len or cfg.seq.len),
            int(o.output_len),
        )
        self.max_len = int(o.max_len or self.prompt_len + self.output_len)
        self.copy = job_copy_bandwidth(device, o.copy_gbps, o.copy_size_mb)
        self.built = build_model(
            ctx, training=False, compile_model=False, precision_overrides=GenerateConfig.precision_overrides(cfg)
        )
        model = self.built.model.eval()
        precision = self.built.precision
        decoder = self.built.family.decoder(model)
        inputs, _ = ctx.data.batch(self.batch, self.prompt_len, ctx.generator())
        self.prompts = inputs["idx"] if isinstance(inputs, dict) else inputs
        pick = lambda logits: next_token(logits, o.sampling, float(o.temperature), o.top_k)  # noqa: E731
        self.decoder = StaticDecoder(
            decoder,
            self.batch,
            self.prompt_len,
            self.output_len,
            self.max_len,
            precision.compute_dtype,
            pick,
            precision.autocast,
        )
        self.cache = self.decoder.cache
        self.reads_all_weights = decoder.reads_all_weights
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
        self.generation_bytes = bandwidth.generation_bytes(
            decoder, self.batch, self.prompt_len, self.output_len, self.cache.k[0].element_size()
        )
        self.effective = {
            "data": ctx.data.effective,
            "generate": {
                "batch": self.batch,
                "prompt_len": self.prompt_len,
                "output_len": self.output_len,
                "max_len": self.max_len,
                "cache": "static (max_len slots, index_copy_ at a position tensor, length mask)",
                "cache_dtype": str(self.cache.k[0].dtype).removeprefix("torch."),
                "cache_gb": self.cache.nbytes() / 1e9,
                "sampling": o.sampling,
                "compiled": mode and f"{mode} (inductor coordinate_descent_tuning)",
                "cuda_graph": self.graph_by,
                "weight_bytes_per_step": self.weight_bytes,
            },
            "copy_bandwidth": self.copy
            or {
                "source": None,
                "reason": "not measured on a CPU (no HBM; a tiny model sits in cache): "
                "hbm_bw_util is defined for GPUs; pass workload.options.copy_gbps to compute it anyway",
            },
        }
        if not self.reads_all_weights:
            self.effective["copy_bandwidth"]["hbm_bw_util"] = (
                "not computed: a decode step of this model reads only the weights "
                "its tokens route to (a mixture of experts)"
            )

    def step(self) -> None:
        marks = _Marks(self.ctx.device.type == "cuda")
        marks.record()
        self.decoder.generate(self.prompts, marks.record)
        self.generations.append(marks)

    def metrics(self, stats: dict) -> dict:
        n = int(stats.get("n_steps", 0))
        warm = int(self.cfg.warmup_steps)
        timed = [m.seconds() for m in self.generations[warm : warm + n]]
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
        if self.copy is not None and self.reads_all_weights:
            out["copy_gbps"] = self.copy["gbps"]
            utils = [per_gen / d / 1e9 / self.copy["gbps"] for d in decode]
            out["hbm_bw_util"] = out["decode_gbps"] / self.copy["gbps"]
            out["hbm_bw_util_min"], out["hbm_bw_util_max"] = float(np.min(utils)), float(np.max(utils))
        return out

    def write_artifacts(self, out_dir) -> None:
        """The tokens of the last generation (a check that decoding ran, and what it produced)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savetxt(out_dir / "generated_tokens.txt", self.decoder.out.cpu().numpy(), fmt="%d")
