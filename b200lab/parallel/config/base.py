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
