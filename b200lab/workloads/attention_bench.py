"""Attention alone: the configured backend on random q, k, v, forward or forward + backward.

One step is one call of ``attention`` (the group's backend, its mask: causal, or
``attention.window``) on (seq.batch, heads, seq.len, head_dim) tensors in the precision's compute
dtype; with ``options.backward`` also the gradients of q, k and v (``torch.autograd.grad``, so
nothing accumulates between steps). FLOPs count the query-key pairs the mask keeps (4 x head_dim
per pair and head: QK^T and PV) and, for forward + backward, 3.5 x the forward (backward recomputes
the scores and does four more matmuls' worth, FlashAttention's convention).
``options.cuda_graph`` captures one step in a CUDA graph and replays it, which removes the host's
launch work from the timing: the difference is what launch overhead costs the backend at this size.

Before timing, the output rows of the first and last ``options.check_rows`` queries are compared
with the ``math`` reference in float32 (the rows cost little even at 32K); ``max_err_vs_math`` is
recorded and a difference beyond the dtype's tolerance fails the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from b200lab.attention.base import AttnMask, reference_attention
from b200lab.components import CheckContext, instantiate
from b200lab.measure.flops import causal_pairs
from b200lab.workloads.base import Workload, WorkloadConfig

TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3, torch.float64: 1e-9}
BACKWARD_MULTIPLE = 3.5  # forward + backward = 1 + 2.5 forwards


@dataclass
class AttentionBenchOptions:
    heads: int = 16
    kv_heads: Optional[int] = None  # None: heads (no grouped-query attention)
    head_dim: int = 128
    backward: bool = False  # forward + backward (gradients of q, k, v)
    cuda_graph: bool = False  # capture one step in a CUDA graph and replay it (GPU only)
    check_rows: int = 64  # output rows compared with the math reference at each end of the sequence


@dataclass
class AttentionBenchConfig(WorkloadConfig):
    options: AttentionBenchOptions = field(default_factory=AttentionBenchOptions)


class AttentionBench(Workload):
    Config = AttentionBenchConfig
    metric_rules = {"attn_tflops": "mean", "max_err_vs_math": "max"}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        o = cfg.options
        for key in ("heads", "head_dim", "check_rows"):
            if o[key] < 1:
                problems.append(f"workload.options.{key}={o[key]}: must be a positive integer")
        if o.kv_heads is not None and (o.kv_heads < 1 or o.heads % o.kv_heads):
            problems.append(f"workload.options.kv_heads={o.kv_heads} must divide workload.options.heads={o.heads}")
        if o.cuda_graph and ctx.device != "cuda":
            problems.append(f"workload.options.cuda_graph=true needs a CUDA GPU and this job runs on {ctx.device}")
        if o.backward and ctx.device != "cuda" and str(ctx.cfg.attention.get("_target_", "")).endswith("FlexAttention"):
            problems.append(f"workload.options.backward=true with attention={ctx.cfg.attention.name} on {ctx.device}: "
                            "PyTorch's FlexAttention has no backward pass there")
        if ctx.cfg.attention.get("documents"):
            problems.append(f"workload=attention draws no documents; use attention=flex or flex_sliding "
                            f"(attention={ctx.cfg.attention.name} needs packed data: workload=forward or train)")
        return problems

    def setup(self) -> None:
        cfg, device, o = self.ctx.cfg, self.ctx.device, self.options
        precision = instantiate("precision", cfg.precision, device.type, bool(o.backward))
        self.dtype = precision.compute_dtype
        self.attention = instantiate("attention", cfg.attention, device.type)
        self.attention.training = bool(o.backward)
        batch, t = int(cfg.seq.batch), int(cfg.seq.len)
        kv_heads = int(o.kv_heads or o.heads)
        g = self.ctx.generator()
        self.q = torch.randn(batch, o.heads, t, o.head_dim, device=device, generator=g, dtype=self.dtype)
        self.k = torch.randn(batch, kv_heads, t, o.head_dim, device=device, generator=g, dtype=self.dtype)
        self.v = torch.randn(batch, kv_heads, t, o.head_dim, device=device, generator=g, dtype=self.dtype)
        self.grad_out = torch.randn_like(self.q) if o.backward else None
        for x in (self.q, self.k, self.v):
            x.requires_grad_(bool(o.backward))
        self.attention.probe(self.q, self.k, self.v)
        self.max_err = self._check_against_math(min(int(o.check_rows), t))
        window = self.attention.window
        forward = 4 * batch * o.heads * o.head_dim * causal_pairs(t, window)
        self.flops_per_step = int(forward * (BACKWARD_MULTIPLE if o.backward else 1))
        self.graph = self._capture() if o.cuda_graph else None
        self.effective = {"shape": {"batch": batch, "heads": int(o.heads), "kv_heads": kv_heads, "seq": t, "head_dim": int(o.head_dim)},
                          "dtype": str(self.dtype).replace("torch.", ""), "pass": "forward+backward" if o.backward else "forward",
                          "pairs": causal_pairs(t, window), "cuda_graph": bool(o.cuda_graph),
                          "peak_key": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32"),
                          "max_err_vs_math": self.max_err, "check_rows": min(int(o.check_rows), t),
                          "attention": self.attention.effective, "precision": precision.record()}

    def _call(self):
        out = self.attention(self.q, self.k, self.v)
        if self.grad_out is not None:
            return torch.autograd.grad(out, (self.q, self.k, self.v), self.grad_out)
        return out

    def _check_against_math(self, rows: int) -> float:
        """Max |backend - math| over the first and last ``rows`` query rows, against all keys."""
        t = self.q.shape[-2]
        with torch.no_grad():
            out = self.attention(self.q.detach(), self.k.detach(), self.v.detach()).float()
        err = 0.0
        for begin in sorted({0, t - rows}):
            q_pos = torch.arange(begin, begin + rows, device=self.q.device)
            mask = AttnMask(window=self.attention.window, q_pos=q_pos)
            q = self.q.detach()[:, :, begin:begin + rows].float()
            ref = reference_attention(q, self.k.detach().float(), self.v.detach().float(), mask)
            err = max(err, float((out[:, :, begin:begin + rows] - ref).abs().max()))
        tolerance = TOLERANCE.get(self.dtype, 3e-2)
        if not err <= tolerance:
            raise RuntimeError(f"attention={self.attention.requested} differs from the math reference by {err:.3g} "
                               f"(tolerance {tolerance:g} for {self.dtype}): its output is wrong, not timed")
        return err

    def _capture(self):
        """One step in a CUDA graph, after warm-up calls on a side stream (CUDA graph rules)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.out = self._call()
        return graph

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.out = self._call()

    def metrics(self, stats: dict) -> dict:
        out = {"max_err_vs_math": self.max_err}
        if stats.get("n_steps"):
            out["attn_tflops"] = self.flops_per_step / (stats["step_ms_p50"] / 1e3) / 1e12
        return out
