"""A parallelism strategy from outside b200lab: every rank runs the same batch (a replica check);
the tokens count once however many ranks there are."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.parallel.base import ParallelStrategy
from b200lab.parallel.config.base import ParallelismConfig


@dataclass
class ReplicatedConfig(ParallelismConfig):
    shard: int = 0  # the data shard every rank reads


class Replicated(ParallelStrategy):
    Config = ReplicatedConfig

    def data_shard(self):
        return self.cfg.shard

    def setup(self):
        self.effective["replicas"] = self.world_size
