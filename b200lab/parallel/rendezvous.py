"""Where the ranks of a job over several machines meet (``parallelism.nnodes`` > 1): a static
rendezvous at node 0's host:port, each unset field from the environment (SLURM's or torchrun's).
Torch-free: config validation and the launcher both ask it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


@dataclass
class Rendezvous:
    """Where this machine's ranks meet the others: ranks per node, node count, this node's index
    and node 0's host:port (static rendezvous: node r runs global ranks r x per_node ...)."""

    per_node: int
    nnodes: int = 1
    node_rank: int = 0
    endpoint: str | None = None


def this_node(parallelism, env: dict | None = None) -> int:
    """This machine's node rank: ``parallelism.node_rank``, else $NODE_RANK, else $SLURM_NODEID, else 0."""
    env = os.environ if env is None else env
    if int(parallelism.get("nnodes") or 1) == 1:
        return 0
    node_rank = parallelism.get("node_rank")
    return int(env.get("NODE_RANK", env.get("SLURM_NODEID", 0)) if node_rank is None else node_rank)


def rendezvous(parallelism, env: dict | None = None) -> Rendezvous:
    """From ``parallelism.nnodes/node_rank/rdzv_endpoint``, each unset one from the environment:
    $NODE_RANK or $SLURM_NODEID; $B200LAB_RDZV_ENDPOINT, $MASTER_ADDR:$MASTER_PORT, or the first
    host of a SLURM allocation (port 29500). ValueError names what is missing."""
    env = os.environ if env is None else env
    nnodes, nproc = int(parallelism.get("nnodes") or 1), int(parallelism.nproc)
    if nnodes == 1:
        return Rendezvous(nproc)
    node_rank = this_node(parallelism, env)
    endpoint = parallelism.get("rdzv_endpoint") or env.get("B200LAB_RDZV_ENDPOINT")
    if not endpoint and env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        endpoint = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
    if not endpoint and env.get("SLURM_JOB_NODELIST"):
        endpoint = _slurm_first_host(env["SLURM_JOB_NODELIST"]) + ":29500"
    if not endpoint or ":" not in endpoint:
        raise ValueError(
            f"parallelism.nnodes={nnodes} needs node 0's host:port: set parallelism.rdzv_endpoint=HOST:PORT, "
            "$B200LAB_RDZV_ENDPOINT, or $MASTER_ADDR and $MASTER_PORT"
        )
    if not 0 <= int(node_rank) < nnodes:
        raise ValueError(f"parallelism.node_rank={node_rank}: must be in [0, parallelism.nnodes={nnodes})")
    return Rendezvous(nproc // nnodes, nnodes, int(node_rank), endpoint)


def _slurm_first_host(nodelist: str) -> str:
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        return out.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""
