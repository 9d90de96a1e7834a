"""Parallelism strategies: the class ``parallelism._target_`` names (base.py's contract).

- :class:`~b200lab.parallel.data_parallel.DataParallel` (``single``, ``ddp``): every rank a
  replica on its own batch; DDP all-reduces gradients when training.
- :class:`~b200lab.parallel.mesh.MeshParallel` (``tp``, ``fsdp``, ``tp_fsdp``): a 2-D DeviceMesh
  ``(dp, tp)``, tensor-parallel peers adjacent; the model family splits its matmuls over ``tp``;
  ``fsdp`` shards over ``dp`` with FSDP2.

config/ holds each option's config class (fields, checks); rendezvous.py where the nodes of a
multi-node job meet.
"""
