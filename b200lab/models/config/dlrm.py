"""``model=dlrm_small, dlrm_large``: the recommender (b200lab/models/dlrm.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.models.config.sample import SampleConfig


@dataclass
class DLRMConfig(SampleConfig):
    family: str = "dlrm"
    n_dense: int = 13
    table_rows: list[int] = field(default_factory=lambda: [1000] * 8)  # rows of each embedding table
    embed_dim: int = 64
    bottom_mlp: list[int] = field(default_factory=lambda: [128, 64])  # hidden widths; the last must be embed_dim
    top_mlp: list[int] = field(default_factory=lambda: [128, 64])  # hidden widths before the one logit

    target = "b200lab.models.dlrm.DLRMFamily"
    label = "DLRM"
    init_by_name = True
    has_attention = False
    attends_both_ways = False
    fp8_problem = (
        "FP8 recipes convert Linear layers, and a DLRM's time goes to its embedding-bag gathers (nn.EmbeddingBag: "
        "no GEMM to run in FP8); its MLPs are too narrow to gain"
    )
    seq_meaning = "the lookups per table per sample (the bag size)"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = cls.positive(cfg, "n_dense", "embed_dim")
        if not cfg.table_rows or any(r < 1 for r in cfg.table_rows):
            problems.append(f"model.table_rows={list(cfg.table_rows)}: at least one table, each with at least one row")
        if any(w < 1 for w in [*cfg.bottom_mlp, *cfg.top_mlp]):
            problems.append("model.bottom_mlp and model.top_mlp: every width must be a positive integer")
        if not cfg.bottom_mlp or cfg.bottom_mlp[-1] != cfg.embed_dim:
            problems.append(
                f"model.bottom_mlp={list(cfg.bottom_mlp)} must end at model.embed_dim={cfg.embed_dim} "
                "(the dense vector interacts with the embeddings)"
            )
        return problems + super().validate(cfg, ctx)
