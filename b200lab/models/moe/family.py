"""The mixture-of-experts family (``model=moe``): FLOPs of the active parameters (the router, the
``top_k`` experts a token visits and the shared experts), the loss with the router terms, routing
statistics. Fields and checks: b200lab/models/config/moe.py; docs/moe.md describes the metrics.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from b200lab.measure import flops as F_
from b200lab.models.config.moe import MoEConfig
from b200lab.models.gpt.family import GPTFamily
from b200lab.models.moe import stats as moe_stats
from b200lab.models.moe.layer import Experts, MoELayer, grouped_kernel
from b200lab.models.moe.model import MoEGPT, MoEOutput
from b200lab.models.patterns import GroupedExperts


class MoEFamily(GPTFamily):
    """Decoder-only MoE language model on token ids; next-token cross-entropy plus router losses."""

    Config = MoEConfig
    metric_rules = moe_stats.METRIC_RULES

    def __init__(self, cfg):
        super().__init__(cfg)
        self.layers: list[MoELayer] = []

    @property
    def d_ff_expert(self) -> int:
        return self.cfg.d_ff_expert or self.cfg.d_ff // self.cfg.top_k

    def build(self, attention) -> nn.Module:
        model = MoEGPT(self.cfg, attention, self.d_ff_expert)
        self.layers = model.moe_layers()  # the same modules after precision, DDP and compile wrap them
        return model

    def matmul_params(self) -> int:
        c, f = self.cfg, self.d_ff_expert
        per_layer = F_.attention_proj_params(c.d_model, c.n_heads, c.n_kv_heads or c.n_heads) + F_.moe_layer_params(
            c.d_model, c.n_experts, c.top_k, f, c.n_shared_experts
        )
        return c.n_layers * per_layer + c.vocab_size * c.d_model

    def loss(self, outputs: MoEOutput, targets: torch.Tensor) -> torch.Tensor:
        loss = super().loss(outputs.logits, targets) + self.cfg.aux_loss_coef * outputs.aux_loss
        return loss + self.cfg.z_loss_coef * outputs.z_loss if self.cfg.z_loss_coef else loss

    def prediction_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The cross-entropy of the logits, without the router terms."""
        return super().loss(outputs, targets)

    def fp8_patterns(self) -> dict:
        """The GPT's, and the experts' weights as grouped GEMMs where they run grouped (the loop is the reference)."""
        grouped = {Experts: GroupedExperts()} if self.cfg.expert_impl == "grouped" else {}
        return {**super().fp8_patterns(), **grouped}

    @staticmethod
    def logits_of(outputs: MoEOutput) -> torch.Tensor:
        return outputs.logits

    def forward_stats(self, outputs: MoEOutput) -> dict[str, torch.Tensor]:
        """This rank's loads and router losses; under expert parallel also the group's loads."""
        stats = {
            "routed": outputs.routed.detach(),
            "kept": outputs.kept.detach(),
            "aux_loss": outputs.aux_loss.detach().float(),
            "z_loss": outputs.z_loss.detach().float(),
        }
        if outputs.group_routed is not None:
            stats.update(group_routed=outputs.group_routed.detach(), group_kept=outputs.group_kept.detach())
        return stats

    @property
    def expert_parallel(self) -> int:
        """Ranks the experts are split over (1 without expert parallel)."""
        shard = getattr(self.layers[0].experts, "shard", None) if self.layers else None
        return shard.size if shard is not None else 1

    def summarize(self, stats: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        return moe_stats.summarize(stats, self.expert_parallel)

    def artifacts(self, stats: list[dict[str, torch.Tensor]], out_dir) -> list:
        return moe_stats.write_artifacts(stats, out_dir, self.effective, self.expert_parallel)

    @property
    def effective(self) -> dict:
        """What the experts ran as (after at least one forward): the path, its dtype and, for the
        grouped GEMM, which kernel torch picks for that device and dtype."""
        c = self.cfg
        out = {
            "expert_impl": c.expert_impl,
            "n_experts": c.n_experts,
            "top_k": c.top_k,
            "d_ff_expert": self.d_ff_expert,
            "n_shared_experts": c.n_shared_experts,
            "capacity_factor": c.capacity_factor,
            "router": c.router,
        }
        if self.expert_parallel > 1:
            out["expert_parallel"] = {
                "ranks": self.expert_parallel,
                "experts_per_rank": c.n_experts // self.expert_parallel,
                "dispatch": "all_to_all_single of the kept rows after an all_gather of the per-expert counts "
                "(one host read of the split sizes per layer and forward)",
            }
        ran = self.layers[0].ran if self.layers else None
        if ran is not None:
            path, dtype = ran
            out.update(expert_path=path, expert_dtype=str(dtype).removeprefix("torch."))
            if path != "loop":
                experts = self.layers[0].experts
                out["grouped_kernel"] = getattr(experts, "kernel", None) or grouped_kernel(
                    next(experts.parameters()).device, dtype
                )
            if path != c.expert_impl:
                out["reason"] = {
                    "loop": "torch grouped GEMM unavailable for this dtype (float64) or this torch",
                    "grouped-eager": "torch.compile traces the grouped GEMM in bfloat16 only: it runs eagerly",
                }[path]
        return out
