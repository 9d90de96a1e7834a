"""Fields and checks every parallelism strategy shares: ranks, nodes, rendezvous."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.core.component import CheckContext, ComponentConfig

# CPU ranks (gloo, development and tests) may time-share cores: slow, still exact
CPU_RANKS_PER_CORE = 2


@dataclass
class ParallelismConfig(ComponentConfig):
    nproc: int | None = 1  # ranks of the job (processes, one GPU each on CUDA), over all nodes
    nnodes: int = 1  # machines the job spans; each runs nproc / nnodes ranks (b200lab/parallel/rendezvous.py)
    node_rank: int | None = None  # this machine's index; None: $NODE_RANK, else $SLURM_NODEID, else 0
    # host:port on node 0 for nnodes > 1; None: $B200LAB_RDZV_ENDPOINT, else $MASTER_ADDR:$MASTER_PORT
    rdzv_endpoint: str | None = None
    # ranks each MoE layer's experts are split over (all-to-all dispatch and combine); 1: every rank
    # holds every expert. Above 1 it must equal the data-parallel ranks (docs/parallelism.md)
    expert_parallel: int = 1

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        from b200lab.core.machine import available_ranks
        from b200lab.parallel.rendezvous import rendezvous

        if cfg.nproc is None or cfg.nproc < 1:
            return [f"parallelism.nproc={cfg.nproc}: must be a positive integer"]
        if cfg.nnodes < 1 or cfg.nproc % cfg.nnodes:
            return [
                f"parallelism.nnodes={cfg.nnodes} must be a positive integer that divides parallelism.nproc={cfg.nproc}"
            ]
        if cfg.nnodes > 1:
            try:
                rendezvous(cfg)
            except ValueError as exc:
                return [str(exc)]
        per_node = cfg.nproc // cfg.nnodes
        limit = available_ranks(ctx.device)
        nodes = f" per node (parallelism.nnodes={cfg.nnodes})" if cfg.nnodes > 1 else ""
        if ctx.device == "cuda" and per_node > limit:
            return [f"parallelism.nproc={cfg.nproc} exceeds the {limit} GPUs visible on this machine{nodes}"]
        if ctx.device == "cpu" and per_node > CPU_RANKS_PER_CORE * limit:
            return [
                f"parallelism.nproc={cfg.nproc} exceeds the {CPU_RANKS_PER_CORE * limit} gloo ranks this machine's "
                f"{limit} CPU cores "
                f"run ({CPU_RANKS_PER_CORE} per core){nodes}"
            ]
        return []


def expert_parallel_problems(cfg, ctx: CheckContext, data_key: str, tp: int = 1) -> list[str]:
    """Why ``parallelism.expert_parallel`` cannot split this job's experts (``data_key``: the field
    holding the data-parallel ranks, ``nproc`` or ``dp``)."""
    ep = cfg.get("expert_parallel", 1)
    if ep is None or ep < 1:
        return [f"parallelism.expert_parallel={ep}: must be a positive integer (1: every rank holds every expert)"]
    if ep == 1:
        return []
    key = f"parallelism.expert_parallel={ep}"
    problems = []
    if ep != cfg[data_key]:
        problems.append(
            f"{key} must equal the data-parallel ranks (parallelism.{data_key}={cfg[data_key]}): the experts are "
            "split over every "
            "data-parallel rank (expert-parallel groups smaller than the data-parallel ranks are not built)"
        )
    if tp > 1:
        problems.append(
            f"{key} with parallelism.tp={tp}: expert parallel inside a tensor-parallel layout is not built; "
            "use parallelism=ddp or fsdp (tp=1)"
        )
    problems += ctx.spec("model").expert_parallel_problems(ctx.cfg.model, ep)
    precision = ctx.spec("precision")
    if precision.replaces_linears:
        problems.append(
            f"{key} with precision={ctx.cfg.precision.name}: this recipe replaces layers with "
            f"{precision.replaces_linears} modules built from the whole model's weights, which the expert-parallel "
            "plan does not split; FP8 with expert parallel is not built"
        )
    workload = ctx.spec("workload")
    if not workload.uses_model:
        problems.append(f"{key}: workload={ctx.cfg.workload.name} builds no model, so it has no experts to split")
    elif workload.decode_rows(ctx.cfg.workload, ctx.cfg) is not None:
        problems.append(
            f"{key}: workload={ctx.cfg.workload.name} decodes, and decoding with experts split over ranks "
            "(every rank stepping in lockstep) is not built; use parallelism.expert_parallel=1"
        )
    compile_cfg = ctx.cfg.get("compile") or {}
    if compile_cfg.get("mode") is not None and compile_cfg.get("fullgraph"):
        problems.append(
            f"{key} with compile.fullgraph=true: each MoE layer reads the all-to-all's split sizes on the host "
            "(a graph break: the exchange runs eagerly); use compile.fullgraph=false"
        )
    return problems
