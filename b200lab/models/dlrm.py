"""The recommender family (``model=dlrm_small``, ``dlrm_large``): DLRM (Naumov et al., 2019), memory-bound.

A sample is a click record: ``n_dense`` continuous features and, for each of ``len(table_rows)``
embedding tables, a bag of ``seq.len`` row indices (one-hot with ``seq=onehot``, multi-hot with
``seq=multihot``). The dense features go through the bottom MLP (ReLU) to ``embed_dim``; each
bag is summed by an embedding bag; the pairwise dot products of those F = tables + 1 vectors
(the strictly lower triangle of the F x F Gram matrix) are concatenated with the bottom output
and go through the top MLP to one logit; the loss is binary cross-entropy on the click.

All tables live in one ``nn.EmbeddingBag`` (rows concatenated, each table's indices shifted by its
offset), so one gather kernel serves every table. Indices are uniform over each table's rows,
the worst case for caches (real click logs are skewed towards popular rows), so a table much
larger than the GPU's L2 makes every lookup an HBM read: the family reports the embedding bytes
a step moves and the bandwidth they achieve (``embedding_gbps``; docs/measurement.md says which
bytes count). Training uses the workload's dense AdamW: the tables get dense gradients, and the
optimizer sweeps them whole every step (real recommenders use sparse, row-wise optimizers).

The click is a fixed function of the features (the sign of a fixed linear map of the dense
features plus a fixed +-1 per row of the first table), so a few CPU steps show the loss falling.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from b200lab.measure import flops as F_
from b200lab.models.config.dlrm import DLRMConfig
from b200lab.models.sample_family import SampleFamily

TASK_SEED = 20261  # the fixed click function (the same task in every run)
INDEX_BYTES = 8  # int64 indices


def mlp(widths: list[int], final_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if final_relu or i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def pair_count(features: int) -> int:
    return features * (features - 1) // 2


class DLRM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        rows = list(cfg.table_rows)
        self.n_tables, d = len(rows), cfg.embed_dim
        self.bottom = mlp([cfg.n_dense, *cfg.bottom_mlp], final_relu=True)
        self.tables = nn.EmbeddingBag(sum(rows), d, mode="sum")
        self.register_buffer("offsets", torch.tensor([0, *rows[:-1]]).cumsum(0), persistent=False)
        features = self.n_tables + 1
        self.register_buffer("lower", torch.tril_indices(features, features, offset=-1), persistent=False)
        self.top = mlp([d + pair_count(features), *cfg.top_mlp, 1], final_relu=False)
        self.table_bound = (sum(rows) / self.n_tables) ** -0.5
        for name, p in self.named_parameters():
            self.init_parameter(name, p)

    @torch.no_grad()
    def init_parameter(self, name: str, p: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Zero biases, the tables uniform in +-(mean rows per table)^-1/2, the MLPs He-normal."""
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif name.startswith("tables"):
            nn.init.uniform_(p, -self.table_bound, self.table_bound, generator=generator)
        else:
            nn.init.normal_(p, std=(2.0 / p.shape[1]) ** 0.5, generator=generator)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense (B, n_dense), sparse (B, tables, bag) row indices per table -> click logits (B,)."""
        B = dense.shape[0]
        x = self.bottom(dense.to(self.bottom[0].weight.dtype))  # (B, d)
        rows = (sparse + self.offsets[None, :, None]).flatten(0, 1)  # (B * tables, bag) rows of the one table
        pooled = self.tables(rows).view(B, self.n_tables, -1)  # (B, tables, d)
        features = torch.cat([x[:, None], pooled], dim=1)  # (B, F, d)
        gram = torch.bmm(features, features.transpose(1, 2))  # (B, F, F)
        pairs = gram[:, self.lower[0], self.lower[1]]  # (B, F(F-1)/2)
        return self.top(torch.cat([x, pairs], dim=1)).squeeze(1)


def click_labels(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """The synthetic task: click = sign(fixed linear map of the dense features + a fixed +-1 per
    row of the first table)."""
    g = torch.Generator(device="cpu").manual_seed(TASK_SEED)
    w = torch.randn(dense.shape[1], generator=g).to(dense.device, dense.dtype)
    row_sign = 1.0 - 2.0 * (sparse[:, 0, 0] % 2).to(dense.dtype)
    return ((dense @ w) / dense.shape[1] ** 0.5 + row_sign > 0).to(dense.dtype)


class DLRMFamily(SampleFamily):
    """Click-through prediction; binary cross-entropy on the logit."""

    Config = DLRMConfig

    def build(self, attention) -> nn.Module:
        return DLRM(self.cfg)

    def matmul_flops(self) -> int:
        """Forward FLOPs of one sample: both MLPs and the F x F interaction (the bags' sums are adds, not counted)."""
        c = self.cfg
        features = len(c.table_rows) + 1
        widths_top = [c.embed_dim + pair_count(features), *c.top_mlp, 1]
        return (
            F_.mlp_stack_flops([c.n_dense, *c.bottom_mlp])
            + F_.mlp_stack_flops(widths_top)
            + F_.linear_flops(features, c.embed_dim, features)
        )

    def flops_per_sample(self, seq_len: int, training: bool) -> int:
        return F_.training_multiple(self.matmul_flops(), training)

    def embedding_bytes_per_sample(self, bag: int, row_bytes: int, training: bool) -> int:
        """Bytes the embedding bag moves per sample (docs/measurement.md): forward reads each looked-up
        row and its index and writes each pooled vector; training adds the backward, which reads
        each pooled gradient and adds it into every looked-up row of the table's gradient (read +
        write)."""
        tables = len(self.cfg.table_rows)
        lookups = tables * bag
        forward = lookups * (row_bytes + INDEX_BYTES) + tables * row_bytes
        return forward + (tables * row_bytes + 2 * lookups * row_bytes if training else 0)

    @property
    def effective(self) -> dict:
        c = self.cfg
        return {
            **super().effective,
            "tables": len(c.table_rows),
            "table_rows_total": int(sum(c.table_rows)),
            "table_params": int(sum(c.table_rows)) * c.embed_dim,
        }

    def synthetic_batch(self, batch: int, seq_len: int, generator: torch.Generator, device):
        c = self.cfg
        dense = torch.randn(batch, c.n_dense, generator=generator, device=device)
        rows = torch.tensor(list(c.table_rows), device=device)
        u = torch.rand(batch, len(c.table_rows), seq_len, generator=generator, device=device, dtype=torch.float64)
        sparse = (u * rows[None, :, None]).long().clamp_max(rows[None, :, None] - 1)  # uniform over each table's rows
        return {"dense": dense, "sparse": sparse}, click_labels(dense, sparse)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs.float(), targets.float())

    metric_rules = {"embedding_gbps": "mean", "embedding_bytes_per_step": "mean"}

    row_bytes = 0  # bytes of one table row as the model holds it (set by prepare)

    def prepare(self, model: nn.Module, seq_len: int) -> None:
        self.row_bytes = model.tables.weight.element_size() * self.cfg.embed_dim

    def rate_metrics(self, stats: dict, samples_per_step: int, seq_len: int, training: bool) -> dict:
        """Achieved embedding bandwidth of this rank: its embedding bytes per step over the median
        step time (every rank gathers on its own GPU, so the job's figure is the mean per GPU)."""
        p50 = stats.get("step_ms_p50")
        if not p50 or not self.row_bytes:
            return {}
        moved = samples_per_step * self.embedding_bytes_per_sample(seq_len, self.row_bytes, training)
        return {"embedding_bytes_per_step": float(moved), "embedding_gbps": moved / (p50 / 1e3) / 1e9}
