"""``model=moe, moe_tiny, moe_16x2, moe_64x8``: the dense GPT with a mixture-of-experts MLP
(b200lab/models/moe/); ``layer_problems`` is shared with ``workload=moe_layer``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from b200lab.core.component import CheckContext
from b200lab.models.config.gpt import GPTConfig

IMPLS = ("grouped", "loop")
SCORES = ("softmax", "sigmoid")
ROW_ALIGN = 8  # torch grouped GEMMs need 16-byte rows: widths a multiple of 8 in bfloat16


def layer_problems(
    prefix: str,
    d_model: int,
    n_experts: int,
    top_k: int,
    d_ff_expert: int,
    n_shared_experts: int,
    router: str,
    impl: str,
    capacity_factor: float | None,
) -> list[str]:
    """Why a layer of these settings cannot be built, each message naming ``prefix.KEY``
    (``d_ff_expert`` 0: not known, not checked)."""
    problems = []
    if n_experts >= 1 and top_k > n_experts:
        problems.append(
            f"{prefix}.top_k={top_k} exceeds {prefix}.n_experts={n_experts} (a token picks top_k different experts)"
        )
    if n_shared_experts < 0:
        problems.append(f"{prefix}.n_shared_experts={n_shared_experts}: must be >= 0")
    if router not in SCORES:
        problems.append(f"{prefix}.router={router!r}: choose {' or '.join(SCORES)}")
    if impl not in IMPLS:
        problems.append(f"{prefix}.expert_impl={impl!r}: choose {' or '.join(IMPLS)}")
    if capacity_factor is not None and capacity_factor <= 0:
        problems.append(f"{prefix}.capacity_factor={capacity_factor}: must be > 0 (null: dropless)")
    if impl == "grouped":
        problems += [
            f"{prefix}.{key}={value} is not a multiple of {ROW_ALIGN}: the grouped GEMM needs 16-byte rows "
            f"(or {prefix}.expert_impl=loop)"
            for key, value in (("d_model", d_model), ("d_ff_expert", d_ff_expert))
            if value >= 1 and value % ROW_ALIGN
        ]
    return problems


@dataclass
class MoEConfig(GPTConfig):
    family: str = "moe"
    d_ff: int = 512  # the routed width a token passes through: top_k x d_ff_expert when d_ff_expert is null
    n_experts: int = 8
    top_k: int = 2
    d_ff_expert: int | None = None  # null: d_ff / top_k, so a token's experts are as wide as a dense MLP of d_ff
    n_shared_experts: int = 0  # always-on experts of d_ff_expert each (DeepSeekMoE)
    router: str = "softmax"  # softmax | sigmoid scores
    renormalize: bool = True  # the top-k weights divided by their sum
    capacity_factor: float | None = None  # null: dropless; else each expert keeps ceil(factor * T * k / E) rows
    aux_loss_coef: float = 0.01  # load-balancing loss per layer (Switch Transformer), training only
    z_loss_coef: float = 0.0  # router z-loss per layer (ST-MoE), training only
    expert_impl: str = "grouped"  # grouped (torch._grouped_mm) | loop (the per-expert reference)
    selection_bias: list[float] | None = None  # per expert, added to the scores when choosing (not weighting)

    HINTS: ClassVar[dict] = {}
    target = "b200lab.models.moe.family.MoEFamily"
    decode_reads_all_weights = False
    tensor_parallel_plan = None
    no_tensor_parallel = (
        "its experts are not split over tensor-parallel ranks; use parallelism=ddp or fsdp (with "
        "parallelism.expert_parallel to split the experts over the data-parallel ranks)"
    )
    expert_parallel_plan = "b200lab.models.moe.expert_parallel"

    @classmethod
    def expert_parallel_problems(cls, cfg, ep: int) -> list[str]:
        if cfg.n_experts >= 1 and cfg.n_experts % ep:
            return [
                f"parallelism.expert_parallel={ep} does not divide model.n_experts={cfg.n_experts}: each rank holds "
                "n_experts / expert_parallel experts"
            ]
        return []

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx) + cls.positive(cfg, "n_experts", "top_k")
        if cfg.d_ff_expert is not None:
            problems += cls.positive(cfg, "d_ff_expert")
        if cfg.d_ff_expert is None and cfg.top_k >= 1 and cfg.d_ff >= 1 and cfg.d_ff % cfg.top_k:
            problems.append(
                f"model.d_ff={cfg.d_ff} is not divisible by model.top_k={cfg.top_k}: set model.d_ff_expert "
                "(null means d_ff / top_k)"
            )
        if cfg.bias:
            problems.append("model.bias=true: the MoE family has no biases (its experts are bias-free 3-D weights)")
        if cfg.checkpointing != "none":
            problems.append(
                f"model.checkpointing={cfg.checkpointing}: not built for the MoE family (its router statistics "
                "leave each block as side outputs, which recomputation would count twice); use none"
            )
        problems += [f"model.{k}={cfg[k]}: must be >= 0" for k in ("aux_loss_coef", "z_loss_coef") if cfg[k] < 0]
        if cfg.selection_bias is not None and len(cfg.selection_bias) != cfg.n_experts:
            problems.append(
                f"model.selection_bias has {len(cfg.selection_bias)} values; model.n_experts={cfg.n_experts} needs "
                "one per expert"
            )
        width = cfg.d_ff_expert or (cfg.d_ff // cfg.top_k if cfg.top_k >= 1 and cfg.d_ff % cfg.top_k == 0 else 0)
        return problems + layer_problems(
            "model",
            cfg.d_model,
            cfg.n_experts,
            cfg.top_k,
            width,
            cfg.n_shared_experts,
            cfg.router,
            cfg.expert_impl,
            cfg.capacity_factor,
        )
