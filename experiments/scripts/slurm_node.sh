#!/usr/bin/env bash
# One node's share of a multi-node job, as srun starts it on each node (slurm_multinode.sbatch):
# b200lab reads this node's rank from $SLURM_NODEID and the rendezvous from $MASTER_ADDR:$MASTER_PORT
# (b200lab/parallel/rendezvous.py); every node writes into the one job dir. The arguments are the
# job's overrides.
set -euo pipefail
: "${SLURM_NNODES:?set by SLURM}" "${SLURM_NODEID:?set by SLURM}" "${MASTER_ADDR:?}" "${MASTER_PORT:?}" "${B200LAB_JOB_DIR:?}"
exec "${PYTHON:-python3}" -m b200lab "$@" "parallelism.nnodes=$SLURM_NNODES" "hydra.run.dir=$B200LAB_JOB_DIR"
