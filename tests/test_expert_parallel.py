"""Expert parallel without processes: what the configuration accepts and refuses (each message
naming its keys), the order a rank puts its received rows in, and the routing metrics of a
group's loads. The ranks themselves: tests/test_expert_parallel_ranks.py."""

from __future__ import annotations

import pytest
import torch

from b200lab.core.machine import ConfigError
from b200lab.core.validation import validate
from b200lab.models.moe import stats as moe_stats
from b200lab.models.moe.expert_parallel import local_expert_order
from support import compose

EP2 = ["model=moe_tiny", "parallelism.expert_parallel=2"]


@pytest.mark.parametrize("layout", ["ddp", "fsdp"])
def test_expert_parallel_composes_with_ddp_and_fsdp(layout):
    cfg = validate(compose([*EP2, f"parallelism={layout}", "workload=train"]), "cpu")
    assert cfg.parallelism.expert_parallel == 2 and cfg.parallelism.nproc == 2


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (
            ["model=tiny", "parallelism=ddp", "parallelism.expert_parallel=2"],
            "parallelism.expert_parallel=2: model family 'gpt' (model=tiny) has no experts to split",
        ),
        (
            [*EP2, "parallelism=ddp", "parallelism.nproc=3", "parallelism.expert_parallel=3"],
            "parallelism.expert_parallel=3 does not divide model.n_experts=4",
        ),
        (
            [*EP2, "parallelism=ddp", "parallelism.nproc=4"],
            "parallelism.expert_parallel=2 must equal the data-parallel ranks (parallelism.nproc=4)",
        ),
        (
            [*EP2, "parallelism=fsdp", "parallelism.dp=4"],
            "parallelism.expert_parallel=2 must equal the data-parallel ranks (parallelism.dp=4)",
        ),
        (
            [*EP2, "parallelism=tp_fsdp", "parallelism.dp=2"],
            "parallelism.expert_parallel=2 with parallelism.tp=2: expert parallel inside a tensor-parallel layout",
        ),
        (
            [*EP2, "parallelism=ddp", "precision=fp8_weight_only"],
            "parallelism.expert_parallel=2 with precision=fp8_weight_only: this recipe replaces layers",
        ),
        (
            [*EP2, "parallelism=ddp", "workload=generate"],
            "parallelism.expert_parallel=2: workload=generate decodes",
        ),
        (
            [*EP2, "parallelism=ddp", "workload=gemm"],
            "parallelism.expert_parallel=2: workload=gemm builds no model",
        ),
        (
            [*EP2, "parallelism=ddp", "compile=default", "compile.fullgraph=true"],
            "parallelism.expert_parallel=2 with compile.fullgraph=true",
        ),
        (
            ["model=moe_tiny", "parallelism=ddp", "parallelism.expert_parallel=0"],
            "parallelism.expert_parallel=0: must be a positive integer",
        ),
    ],
)
def test_what_expert_parallel_refuses_names_the_keys(overrides, needle):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides), "cpu")
    assert needle in str(err.value)


def test_received_rows_are_put_in_local_expert_order():
    # rows from rank 0: 2 for local expert 0, 1 for expert 1; from rank 1: 1 for expert 0, 3 for expert 1
    per_source = torch.tensor([[2, 1], [1, 3]])
    order, inverse, offs, expert = local_expert_order(per_source, torch.device("cpu"))
    # received rows 0-1 (rank 0, e0), 2 (rank 0, e1), 3 (rank 1, e0), 4-6 (rank 1, e1)
    assert order.tolist() == [0, 1, 3, 2, 4, 5, 6]
    assert offs.tolist() == [3, 7] and offs.dtype == torch.int32
    assert expert.tolist() == [0, 0, 0, 1, 1, 1, 1]
    rows = torch.randn(7, 3)
    assert torch.equal(rows[order][inverse], rows)


def test_a_groups_loads_give_the_rank_balance():
    """Two layers of 4 experts over 2 ranks (experts 0-1 on rank 0, 2-3 on rank 1)."""
    local = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    group = torch.tensor([[6.0, 2.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    stats = [{"routed": local, "kept": local, "group_routed": group, "group_kept": group}] * 2
    m = moe_stats.expert_parallel_metrics(stats, ranks=2)
    assert m["moe_group_load_max_over_mean"] == pytest.approx((6 / 3 + 3 / 2) / 2)
    assert m["moe_group_load_max_over_mean_worst"] == pytest.approx(2.0)
    # rows per rank: layer 0 (8, 4) -> 8 / 6; layer 1 (2, 6) -> 6 / 4
    assert m["moe_ep_rank_load_max_over_mean"] == pytest.approx((8 / 6 + 6 / 4) / 2)
    assert m["moe_ep_rank_load_max_over_mean_worst"] == pytest.approx(1.5)
