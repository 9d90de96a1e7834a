"""One mixture-of-experts layer against a dense MLP with the same active FLOPs, forward + backward.

A step is the forward and backward of one :class:`~b200lab.models.moe.layer.MoELayer` (RMSNorm,
router with its load-balancing loss, grouped expert GEMMs) on ``tokens`` random tokens of width
``d_model``; gradients reach the input and every weight (``torch.autograd.grad``, so nothing
accumulates between steps). After the timed steps the same timer (CUDA events on a GPU) times:

- the dense comparison, the GPT's own ``MLP`` (RMSNorm, up, GELU, down) of width
  ``top_k x d_ff_expert`` (+ the shared experts), the same active FLOPs but the router's;
- with ``phases`` and the grouped path, each phase alone, forward + backward: ``router`` (logits,
  top-k, the dispatch plan, the load-balancing loss), ``permute`` (the gather into expert order
  and the weighted gather back) and ``experts`` (the two grouped GEMMs and the GELU).

Metrics (median steps): ``moe_tflops`` and ``dense_tflops`` (each over its own active FLOPs),
``moe_dense_ratio``, ``moe_step_ms``/``dense_step_ms``, ``moe_{router,permute,experts}_ms`` and
their ``_share`` of the MoE step (``moe_other_share``: the rest, e.g. the norm and the gaps that
separate timing hides), ``moe_experts_tflops`` (the grouped GEMMs alone) and the layer's routing
balance (``moe_load_max_over_mean``) on these inputs.
"""

from __future__ import annotations

import torch

from b200lab.measure import flops as F_
from b200lab.measure.step_stats import step_stats
from b200lab.measure.timing import time_steps
from b200lab.models.gpt.model import MLP
from b200lab.models.moe import stats as moe_stats
from b200lab.models.moe.layer import (
    MoELayer,
    combine,
    dispatch,
    grouped_kernel,
    load_balancing_loss,
)
from b200lab.workloads.base import Workload
from b200lab.workloads.config.moe_layer import MoELayerConfig

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _grads(outputs: list, grad_outputs: list, inputs: list) -> list:
    return torch.autograd.grad(outputs, inputs, grad_outputs)


class MoELayerBench(Workload):
    Config = MoELayerConfig
    metric_rules = {
        k: "mean"
        for k in (
            "moe_tflops",
            "dense_tflops",
            "moe_dense_ratio",
            "moe_step_ms",
            "dense_step_ms",
            "moe_experts_tflops",
            *(f"moe_{p}_{u}" for p in ("router", "permute", "experts") for u in ("ms", "share")),
            "moe_other_share",
            "moe_load_max_over_mean",
            "moe_dropped_frac",
        )
    }

    def setup(self) -> None:
        o, device = self.options, self.ctx.device
        dtype = DTYPES[o.dtype]
        g = self.ctx.generator()
        self.moe = (
            MoELayer(
                o.d_model,
                o.n_experts,
                o.top_k,
                o.d_ff_expert,
                o.n_shared_experts,
                o.router,
                capacity_factor=o.capacity_factor,
                impl=o.expert_impl,
            )
            .to(device, dtype)
            .train()
        )
        self.moe.reset_parameters()
        dense_width = (o.top_k + o.n_shared_experts) * o.d_ff_expert
        self.dense = MLP(o.d_model, dense_width, 1e-5).to(device, dtype)
        for p in self.dense.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)
        self.x = torch.randn(1, o.tokens, o.d_model, device=device, generator=g).to(dtype).requires_grad_()
        self.grad_out = torch.randn(1, o.tokens, o.d_model, device=device, generator=g).to(dtype)
        compile_ = (lambda f: torch.compile(f, fullgraph=True)) if o.compile else (lambda f: f)
        self.moe_fn, self.dense_fn = compile_(self.moe), compile_(self.dense)
        self.compile_ = compile_
        moe_params = F_.moe_layer_params(o.d_model, o.n_experts, o.top_k, o.d_ff_expert, o.n_shared_experts)
        self.flops_per_step = o.tokens * F_.training_multiple(2 * moe_params, True)
        self.dense_flops = o.tokens * F_.training_multiple(2 * F_.mlp_params(o.d_model, dense_width), True)
        self.expert_flops = o.tokens * F_.training_multiple(2 * o.top_k * F_.mlp_params(o.d_model, o.d_ff_expert), True)
        path = self.moe.path(dtype)
        self.effective = {
            "dtype": o.dtype,
            "peak_key": o.dtype,
            "compiled": bool(o.compile),
            "dense_d_ff": dense_width,
            "expert_path": path,
            "phases": "each phase's forward + backward timed alone after the layer, same timer and steps",
        }
        if path != "loop":
            self.effective["grouped_kernel"] = grouped_kernel(device, dtype)

    def step(self) -> None:
        y = self.moe_fn(self.x)
        stats = self.moe.stats
        _grads([y, stats.aux_loss], [self.grad_out, torch.ones_like(stats.aux_loss)], [self.x, *self.moe.parameters()])
        self.last_stats = stats

    def _dense_step(self) -> None:
        y = self.dense_fn(self.x)
        _grads([y], [self.grad_out], [self.x, *self.dense.parameters()])

    def _phase_steps(self) -> dict:
        """Forward + backward of each phase alone, on the routing of the inputs."""
        layer, o = self.moe, self.options
        with torch.no_grad():
            h = layer.norm(self.x).reshape(-1, o.d_model)
            _, _, weights, _, plan = layer.route(h)
        h = h.detach().requires_grad_()
        rows = torch.randn(plan.row_token.shape[0], o.d_model, device=h.device, dtype=h.dtype)
        g_rows, g_out = torch.randn_like(rows), torch.randn_like(h)
        weights = weights.detach().requires_grad_()
        g_weights = torch.randn_like(weights)
        router_params = [h, *layer.router.parameters()]

        def route_fwd(h):
            _, _, w, scores, p = layer.route(h)
            return w, load_balancing_loss(scores, p.routed, layer.top_k, layer.score)

        route_fwd = self.compile_(route_fwd)
        permute_fwd = self.compile_(lambda h, r, w: (dispatch(h, plan, layer.top_k), combine(r, w, plan)))
        experts_fwd = self.compile_(lambda r: layer.experts.grouped(r, plan.offs))
        rows_in = rows.clone().requires_grad_()

        def router():
            w, aux = route_fwd(h)
            _grads([w, aux], [g_weights, torch.ones_like(aux)], router_params)

        def permute():
            dispatched, out = permute_fwd(h, rows_in, weights)
            _grads([dispatched, out], [g_rows, g_out], [h, rows_in, weights])

        def experts():
            _grads([experts_fwd(rows_in)], [g_rows], [rows_in, *layer.experts.parameters()])

        return {"router": router, "permute": permute, "experts": experts}

    def _time(self, fn) -> float:
        w = self.cfg
        timing = time_steps(fn, self.ctx.device, int(w.warmup_steps), int(w.steps))
        return step_stats(timing.step_ms)["step_ms_p50"]

    def metrics(self, stats: dict) -> dict:
        if not stats.get("n_steps"):
            return {}
        path, _ = self.moe.ran
        moe_ms, dense_ms = stats["step_ms_p50"], self._time(self._dense_step)
        out = {
            "moe_step_ms": moe_ms,
            "dense_step_ms": dense_ms,
            "moe_tflops": self.flops_per_step / moe_ms / 1e9,
            "dense_tflops": self.dense_flops / dense_ms / 1e9,
        }
        out["moe_dense_ratio"] = out["moe_tflops"] / out["dense_tflops"]
        if self.options.phases and path == "grouped":
            phase_ms = {name: self._time(fn) for name, fn in self._phase_steps().items()}
            for name, ms in phase_ms.items():
                out[f"moe_{name}_ms"], out[f"moe_{name}_share"] = ms, ms / moe_ms
            out["moe_other_share"] = 1.0 - sum(phase_ms.values()) / moe_ms
            out["moe_experts_tflops"] = self.expert_flops / phase_ms["experts"] / 1e9
        routed = self.last_stats.routed.detach()[None].double().cpu().numpy()
        kept = self.last_stats.kept.detach()[None].double().cpu().numpy()
        balance = moe_stats.load_metrics(routed, kept)
        out.update(
            moe_load_max_over_mean=balance["moe_load_max_over_mean"], moe_dropped_frac=balance["moe_dropped_frac"]
        )
        return out
