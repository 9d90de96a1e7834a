"""Attention alone: the configured backend on random q, k, v, forward or forward + backward.

One step is one call of ``attention`` (the group's backend, its mask: causal, or
``attention.window``) on (seq.batch, heads, seq.len, head_dim) tensors in the precision's compute
dtype; with ``options.backward`` also the gradients of q, k and v (``torch.autograd.grad``, so
nothing accumulates between steps). FLOPs count the query-key pairs the mask keeps (4 x head_dim
per pair and head: QK^T and PV) and, for forward + backward, 3.5 x the forward (backward recomputes
the scores and does four more matmuls' worth, FlashAttention's convention).
``options.cuda_graph`` captures one step in a CUDA graph and replays it, which removes the host's
launch work from the timing: the difference is what launch overhead costs the backend at this size.

Before timing, :func:`check_against_math` compares three blocks of ``options.check_rows`` query
rows (the first, a random one, the last) with the float32 ``math`` reference: the output, and dq
when timing the backward (the rows cost little even at 32K). ``out_rel_err_vs_math`` and
``dq_rel_err_vs_math`` are recorded; a difference beyond the dtype's tolerance fails the run.
The FLOP count (3.5 x forward with backward) includes the backward's recomputed scores: ``tflops``
and ``mfu`` of this workload are hardware utilisation, unlike training's model-FLOPs MFU (3 x).
"""

from __future__ import annotations

import torch

from b200lab.attention.base import AttnMask, reference_attention
from b200lab.core.registry import instantiate
from b200lab.measure.flops import causal_pairs
from b200lab.workloads.base import Workload
from b200lab.workloads.config.attention import AttentionBenchConfig

# (atol, rtol) of the output against the reference rounded to the dtype; dq: rtol of its largest value
TOLERANCE = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-3, 5e-3),
    torch.bfloat16: (1e-2, 2e-2),
}
DQ_RTOL = {torch.float64: 1e-8, torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}
BACKWARD_MULTIPLE = 3.5  # forward + backward = 1 + 2.5 forwards


def check_against_math(attention, q, k, v, grad_out, rows: int, generator) -> dict:
    """Compare the backend with :func:`reference_attention` (float32) on three blocks of ``rows``
    query rows: the first, one at a random place, and the last, each against every key. The output
    must match the reference rounded to its dtype within ``atol + rtol x`` the block's largest
    value; with ``grad_out``, dq of those rows (which depends only on them) within ``DQ_RTOL`` of
    its largest value. Raises when it does not: a wrong kernel is not timed."""
    t = q.shape[-2]
    middle = int(torch.randint(0, max(1, t - rows), (1,), generator=generator, device=generator.device))
    begins = sorted({0, middle, t - rows})
    q = q.detach().requires_grad_(grad_out is not None)
    out = attention(q, k, v)
    dq = torch.autograd.grad(out, q, grad_out)[0] if grad_out is not None else None
    out = out.detach()
    atol, rtol = TOLERANCE.get(q.dtype, TOLERANCE[torch.bfloat16])
    k32, v32 = k.float(), v.float()
    found = {"rows": [[b, b + rows] for b in begins], "out_err": 0.0, "out_rel_err": 0.0}
    failures = []
    for b in begins:
        q_blk = q.detach()[:, :, b : b + rows].float().requires_grad_(grad_out is not None)
        mask = AttnMask(window=attention.window, q_pos=torch.arange(b, b + rows, device=q.device))
        ref = reference_attention(q_blk, k32, v32, mask)
        scale = float(ref.abs().max())
        err = float((out[:, :, b : b + rows].float() - ref.detach().to(out.dtype).float()).abs().max())
        found["out_err"] = max(found["out_err"], err)
        found["out_rel_err"] = max(found["out_rel_err"], err / max(scale, 1e-30))
        if not err <= atol + rtol * scale:
            failures.append(f"output rows {b}..{b + rows}: |diff| {err:.3g} > {atol:g} + {rtol:g} x {scale:.3g}")
        if grad_out is not None:
            ref_dq = torch.autograd.grad(ref, q_blk, grad_out[:, :, b : b + rows].float())[0]
            dq_scale = float(ref_dq.abs().max())
            dq_err = float((dq[:, :, b : b + rows].float() - ref_dq).abs().max()) / max(dq_scale, 1e-30)
            found["dq_rel_err"] = max(found.get("dq_rel_err", 0.0), dq_err)
            if not dq_err <= DQ_RTOL.get(q.dtype, DQ_RTOL[torch.bfloat16]):
                failures.append(f"dq rows {b}..{b + rows}: relative error {dq_err:.3g}")
    if failures:
        raise RuntimeError(
            f"attention={attention.requested} differs from the math reference ({'; '.join(failures)}) "
            f"for {q.dtype}: its result is wrong, not timed"
        )
    return found


class AttentionBench(Workload):
    Config = AttentionBenchConfig
    metric_rules = {"attn_tflops": "mean", "out_rel_err_vs_math": "max", "dq_rel_err_vs_math": "max"}

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
        self.check = check_against_math(
            self.attention,
            self.q.detach(),
            self.k.detach(),
            self.v.detach(),
            self.grad_out,
            min(int(o.check_rows), t),
            g,
        )
        window = self.attention.window
        forward = 4 * batch * o.heads * o.head_dim * causal_pairs(t, window)
        self.flops_per_step = int(forward * (BACKWARD_MULTIPLE if o.backward else 1))
        self.graph = self._capture() if o.cuda_graph else None
        self.effective = {
            "shape": {
                "batch": batch,
                "heads": int(o.heads),
                "kv_heads": kv_heads,
                "seq": t,
                "head_dim": int(o.head_dim),
            },
            "dtype": str(self.dtype).replace("torch.", ""),
            "pass": "forward+backward" if o.backward else "forward",
            "pairs": causal_pairs(t, window),
            "cuda_graph": bool(o.cuda_graph),
            "peak_key": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32"),
            "check_vs_math": self.check,
            "attention": self.attention.effective,
            "precision": precision.record(),
        }

    def _call(self):
        out = self.attention(self.q, self.k, self.v)
        if self.grad_out is not None:
            return torch.autograd.grad(out, (self.q, self.k, self.v), self.grad_out)
        return out

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
        out = {f"{k}_vs_math": v for k, v in self.check.items() if k.endswith("rel_err")}
        if stats.get("n_steps"):
            out["attn_tflops"] = self.flops_per_step / (stats["step_ms_p50"] / 1e3) / 1e12
        return out
