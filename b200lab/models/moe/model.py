"""The mixture-of-experts GPT: the dense GPT with each block's MLP replaced by a
:class:`~b200lab.models.moe.layer.MoELayer`, so dense and MoE differ only in the MLP.

The model returns a :class:`MoEOutput`: the logits plus the routers' auxiliary losses and
per-layer expert loads, so the family (family.py) adds the load-balancing and z-loss terms to the
loss and hands the loads to the workload (nothing travels through globals).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from b200lab.models.gpt.model import GPT
from b200lab.models.moe.layer import MoELayer


class MoEOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V)
    aux_loss: torch.Tensor  # load-balancing losses summed over layers (0 outside training)
    z_loss: torch.Tensor  # router z-losses summed over layers (0 outside training)
    routed: torch.Tensor  # (layers, experts) assignments routed to each expert
    kept: torch.Tensor  # (layers, experts) of those, kept under the capacity
    # expert parallel: the same summed over the expert-parallel ranks (None on one rank)
    group_routed: torch.Tensor | None = None
    group_kept: torch.Tensor | None = None


class MoEGPT(GPT):
    def __init__(self, cfg, attention, d_ff_expert: int):
        def make_mlp(index: int) -> nn.Module:
            return MoELayer(
                cfg.d_model,
                cfg.n_experts,
                cfg.top_k,
                d_ff_expert,
                cfg.n_shared_experts,
                cfg.router,
                cfg.renormalize,
                cfg.capacity_factor,
                cfg.expert_impl,
                cfg.selection_bias,
                cfg.norm_eps,
                cfg.norm,
            )

        super().__init__(cfg, attention, make_mlp=make_mlp)

    def moe_layers(self) -> list[MoELayer]:
        return [block.mlp for block in self.blocks]

    @torch.no_grad()
    def init_parameter(self, name: str, p: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """The GPT's init (the router, shared experts and norms included: MoELayer.reset_parameters'
        distributions), and the experts' 3-D weights: N(0, 0.02), the down projections scaled as
        the GPT's residual projections."""
        if name.endswith(("experts.up", "experts.down")):
            scale = (2 * self.cfg.n_layers) ** -0.5 if name.endswith("down") else 1.0
            nn.init.normal_(p, std=0.02 * scale, generator=generator)
        else:
            super().init_parameter(name, p, generator)

    def forward(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        cache=None,
        last_only: bool = False,
    ) -> MoEOutput:
        logits = super().forward(idx, positions, doc_ids, cache, last_only)
        layers = self.moe_layers()
        stats = [layer.stats for layer in layers]
        for layer in layers:
            layer.stats = None  # the output holds them now
        grouped = stats[0].group_routed is not None
        return MoEOutput(
            logits,
            torch.stack([s.aux_loss for s in stats]).sum(),
            torch.stack([s.z_loss for s in stats]).sum(),
            torch.stack([s.routed for s in stats]),
            torch.stack([s.kept for s in stats]),
            torch.stack([s.group_routed for s in stats]) if grouped else None,
            torch.stack([s.group_kept for s in stats]) if grouped else None,
        )
