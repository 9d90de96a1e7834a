"""The mixture-of-experts GPT family (``model=moe``): the dense GPT with each block's MLP replaced
by a :class:`~b200lab.models.moe_layer.MoELayer`, so dense and MoE differ only in the MLP.

The model returns a :class:`MoEOutput`: the logits plus the routers' auxiliary losses and
per-layer expert loads, so the family's ``loss`` adds the load-balancing and z-loss terms and
``forward_stats`` hands the loads to the workload (nothing travels through globals). FLOPs count
the active parameters: the router, the ``top_k`` experts a token visits and the shared experts.
docs/moe.md describes the fields, the metrics and the presets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, NamedTuple, Optional

import torch
import torch.nn as nn

from b200lab.components import CheckContext
from b200lab.measure import flops as F_
from b200lab.models import moe_stats
from b200lab.models.gpt import GPT, GPTConfig, GPTFamily
from b200lab.models.moe_layer import MoELayer, grouped_kernel, layer_problems


@dataclass
class MoEConfig(GPTConfig):
    family: str = "moe"
    d_ff: int = 512  # the routed width a token passes through: top_k x d_ff_expert when d_ff_expert is null
    n_experts: int = 8
    top_k: int = 2
    d_ff_expert: Optional[int] = None  # null: d_ff / top_k, so a token's experts are as wide as a dense MLP of d_ff
    n_shared_experts: int = 0  # always-on experts of d_ff_expert each (DeepSeekMoE)
    router: str = "softmax"  # softmax | sigmoid scores
    renormalize: bool = True  # the top-k weights divided by their sum
    capacity_factor: Optional[float] = None  # null: dropless; else each expert keeps ceil(factor * T * k / E) rows
    aux_loss_coef: float = 0.01  # load-balancing loss per layer (Switch Transformer), training only
    z_loss_coef: float = 0.0  # router z-loss per layer (ST-MoE), training only
    expert_impl: str = "grouped"  # grouped (torch._grouped_mm) | loop (the per-expert reference)
    selection_bias: Optional[List[float]] = None  # per expert, added to the scores when choosing (not weighting)

    HINTS: ClassVar[dict] = {}


class MoEOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V)
    aux_loss: torch.Tensor  # load-balancing losses summed over layers (0 outside training)
    z_loss: torch.Tensor  # router z-losses summed over layers (0 outside training)
    routed: torch.Tensor  # (layers, experts) assignments routed to each expert
    kept: torch.Tensor  # (layers, experts) of those, kept under the capacity


class MoEGPT(GPT):
    def __init__(self, cfg, attention, d_ff_expert: int):
        def make_mlp(index: int) -> nn.Module:
            return MoELayer(cfg.d_model, cfg.n_experts, cfg.top_k, d_ff_expert, cfg.n_shared_experts, cfg.router,
                            cfg.renormalize, cfg.capacity_factor, cfg.expert_impl, cfg.selection_bias, cfg.norm_eps, cfg.norm)

        super().__init__(cfg, attention, make_mlp=make_mlp)

    def moe_layers(self) -> list[MoELayer]:
        return [block.mlp for block in self.blocks]

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for layer in self.moe_layers():
            layer.reset_parameters(residual_scale=(2 * self.cfg.n_layers) ** -0.5)

    def forward(self, idx: torch.Tensor, positions: Optional[torch.Tensor] = None, doc_ids: Optional[torch.Tensor] = None,
                cache=None, last_only: bool = False) -> MoEOutput:
        logits = super().forward(idx, positions, doc_ids, cache, last_only)
        layers = self.moe_layers()
        stats = [layer.stats for layer in layers]
        for layer in layers:
            layer.stats = None  # the output holds them now
        return MoEOutput(logits, torch.stack([s.aux_loss for s in stats]).sum(), torch.stack([s.z_loss for s in stats]).sum(),
                         torch.stack([s.routed for s in stats]), torch.stack([s.kept for s in stats]))


class MoEFamily(GPTFamily):
    """Decoder-only MoE language model on token ids; next-token cross-entropy plus router losses."""

    Config = MoEConfig
    metric_rules = moe_stats.METRIC_RULES

    def __init__(self, cfg):
        super().__init__(cfg)
        self.layers: list[MoELayer] = []

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx) + cls.positive(cfg, "n_experts", "top_k")
        if cfg.d_ff_expert is not None:
            problems += cls.positive(cfg, "d_ff_expert")
        if cfg.d_ff_expert is None and cfg.top_k >= 1 and cfg.d_ff >= 1 and cfg.d_ff % cfg.top_k:
            problems.append(f"model.d_ff={cfg.d_ff} is not divisible by model.top_k={cfg.top_k}: set model.d_ff_expert "
                            "(null means d_ff / top_k)")
        if cfg.bias:
            problems.append("model.bias=true: the MoE family has no biases (its experts are bias-free 3-D weights)")
        if cfg.checkpointing != "none":
            problems.append(f"model.checkpointing={cfg.checkpointing}: not built for the MoE family (its router statistics "
                            "leave each block as side outputs, which recomputation would count twice); use none")
        problems += [f"model.{k}={cfg[k]}: must be >= 0" for k in ("aux_loss_coef", "z_loss_coef") if cfg[k] < 0]
        if cfg.selection_bias is not None and len(cfg.selection_bias) != cfg.n_experts:
            problems.append(f"model.selection_bias has {len(cfg.selection_bias)} values; model.n_experts={cfg.n_experts} needs one per expert")
        width = cfg.d_ff_expert or (cfg.d_ff // cfg.top_k if cfg.top_k >= 1 and cfg.d_ff % cfg.top_k == 0 else 0)
        return problems + layer_problems("model", cfg.d_model, cfg.n_experts, cfg.top_k, width, cfg.n_shared_experts,
                                         cfg.router, cfg.expert_impl, cfg.capacity_factor)

    @property
    def d_ff_expert(self) -> int:
        return self.cfg.d_ff_expert or self.cfg.d_ff // self.cfg.top_k

    def build(self, attention) -> nn.Module:
        model = MoEGPT(self.cfg, attention, self.d_ff_expert)
        self.layers = model.moe_layers()  # the same modules after precision, DDP and compile wrap them
        return model

    def matmul_params(self) -> int:
        c, f = self.cfg, self.d_ff_expert
        per_layer = (F_.attention_proj_params(c.d_model, c.n_heads, c.n_kv_heads or c.n_heads)
                     + F_.moe_layer_params(c.d_model, c.n_experts, c.top_k, f, c.n_shared_experts))
        return c.n_layers * per_layer + c.vocab_size * c.d_model

    def loss(self, outputs: MoEOutput, targets: torch.Tensor) -> torch.Tensor:
        loss = super().loss(outputs.logits, targets) + self.cfg.aux_loss_coef * outputs.aux_loss
        return loss + self.cfg.z_loss_coef * outputs.z_loss if self.cfg.z_loss_coef else loss

    def forward_stats(self, outputs: MoEOutput) -> dict[str, torch.Tensor]:
        return {"routed": outputs.routed.detach(), "kept": outputs.kept.detach(),
                "aux_loss": outputs.aux_loss.detach().float(), "z_loss": outputs.z_loss.detach().float()}

    def summarize(self, stats: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        return moe_stats.summarize(stats)

    def artifacts(self, stats: list[dict[str, torch.Tensor]], out_dir) -> list:
        return moe_stats.write_artifacts(stats, out_dir, self.effective)

    @property
    def effective(self) -> dict:
        """What the experts ran as (after at least one forward): the path, its dtype and, for the
        grouped GEMM, which kernel torch picks for that device and dtype."""
        c = self.cfg
        out = {"expert_impl": c.expert_impl, "n_experts": c.n_experts, "top_k": c.top_k, "d_ff_expert": self.d_ff_expert,
               "n_shared_experts": c.n_shared_experts, "capacity_factor": c.capacity_factor, "router": c.router}
        ran = self.layers[0].ran if self.layers else None
        if ran is not None:
            path, dtype = ran
            out.update(expert_path=path, expert_dtype=str(dtype).removeprefix("torch."))
            if path != "loop":
                experts = self.layers[0].experts
                out["grouped_kernel"] = getattr(experts, "kernel", None) or grouped_kernel(next(experts.parameters()).device, dtype)
            if path != c.expert_impl:
                out["reason"] = {"loop": "torch grouped GEMM unavailable for this dtype (float64) or this torch",
                                 "grouped-eager": "torch.compile traces the grouped GEMM in bfloat16 only: it runs eagerly"}[path]
        return out
