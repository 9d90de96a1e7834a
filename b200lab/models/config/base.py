"""What every model family declares: what its "token" is, whether it decodes from a KV cache,
its attention, its tensor-parallel plan, and what FP8 does for it. Other groups' checks ask
these (never the family's name)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from b200lab.core.component import CheckContext, ComponentConfig


@dataclass
class ModelConfig(ComponentConfig):
    family: str = "?"  # recorded with the run (effective.model.family); no check keys on it

    token_unit: ClassVar[str] = "token"  # what tokens_per_s counts: a text token, an image, a sample
    decoder: ClassVar[bool] = False  # has a KV-cache decode path (family.decoder(model)): generate and serve run it
    # a decode step reads every weight (a mixture of experts reads the routed ones)
    decode_reads_all_weights: ClassVar[bool] = True
    has_attention: ClassVar[bool] = True
    attends_both_ways: ClassVar[bool] = False  # non-causal attention (encoders, diffusion)
    fp8_problem: ClassVar[str | None] = None  # why FP8 recipes cannot gain for this family, or None
    # module with apply(model, mesh, sp) and plain(name, full, cfg, tp)
    tensor_parallel_plan: ClassVar[str | None] = None
    no_tensor_parallel: ClassVar[str] = "use parallelism=ddp or fsdp"  # the hint when there is no plan
    # the model fills any parameter from its name (model.init_parameter(name, tensor, generator)), so
    # it can be built on the meta device and each rank materialise its own shards
    # (b200lab/models/materialise.py); a plan then also has parallel_layout(name, full, cfg, tp)
    init_by_name: ClassVar[bool] = False
    # module with apply(model, shard_of) splitting the family's experts over ranks (expert parallel)
    expert_parallel_plan: ClassVar[str | None] = None

    @staticmethod
    def positive(cfg, *keys: str) -> list[str]:
        """Messages for each ``model.KEY`` that is not a positive integer."""
        return [f"model.{k}={cfg[k]}: must be a positive integer" for k in keys if cfg[k] is None or cfg[k] < 1]

    @classmethod
    def tensor_parallel_problems(cls, cfg, tp: int, sequence_parallel: bool, seq_len: int) -> list[str]:
        """Why ``cfg`` cannot be split over ``tp`` ranks (empty when it can)."""
        if cls.tensor_parallel_plan is None:
            return [
                f"parallelism.tp={tp}: model family {cfg.get('family')!r} (model={cfg.get('name')}) has no "
                "tensor-parallel "
                f"plan; {cls.no_tensor_parallel}"
            ]
        return cls.split_problems(cfg, tp, sequence_parallel, seq_len)

    @classmethod
    def expert_parallel_problems(cls, cfg, ep: int) -> list[str]:
        """Why ``cfg``'s experts cannot be split over ``ep`` ranks (empty when they can)."""
        if cls.expert_parallel_plan is None:
            return [
                f"parallelism.expert_parallel={ep}: model family {cfg.get('family')!r} (model={cfg.get('name')}) has "
                "no experts to split (no expert-parallel plan); use parallelism.expert_parallel=1"
            ]
        return []

    @classmethod
    def split_problems(cls, cfg, tp: int, sequence_parallel: bool, seq_len: int) -> list[str]:
        """Why the family's plan cannot split this config over ``tp`` ranks (a family with a plan overrides it)."""
        return []

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        return []
