"""``parallelism=tp``, ``fsdp``, ``tp_fsdp``: a 2-D mesh (dp, tp), tensor parallel and FSDP2."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.core.component import CheckContext
from b200lab.parallel.config.base import ParallelismConfig, expert_parallel_problems

DTYPE_NAMES = ("float32", "bfloat16", "float16", "float64")


@dataclass
class MeshConfig(ParallelismConfig):
    nproc: int | None = None  # derived: tp x dp (a value set here must equal it)
    tp: int = 1  # tensor-parallel ranks per replica (the model's heads, K/V heads and d_ff split over them)
    dp: int = 1  # replicas (data shards)
    fsdp: bool = False  # shard parameters, gradients and optimizer state over dp with FSDP2 fully_shard
    sequence_parallel: bool = False  # norms and residual stream sharded over the sequence between the TP regions
    # FSDP2: free the gathered weights after forward (ZeRO-3) or keep them for backward (ZeRO-2)
    reshard_after_forward: bool = True
    # FSDP2 with grad_accum > 1: free the gathered weights after each micro-batch's backward, or keep
    # them (and the unsharded gradient sums) until the optimizer step's last micro-batch; with
    # reshard_after_forward=false that is one all-gather per optimizer step instead of one per micro-batch
    reshard_after_backward: bool = True
    mp_param_dtype: str = "auto"  # FSDP2 MixedPrecisionPolicy compute dtype; auto: the precision's parameter dtype
    mp_reduce_dtype: str = "float32"  # FSDP2 gradient reduce-scatter dtype
    # FSDP2 training of 16-bit parameters: float32 shards the optimizer steps (FSDP2's own master
    # weights), or "param" to keep the shards 16-bit (the precision's master_dtype then decides:
    # float32 masters of the shards, or none with precision.master_dtype=none)
    sharded_dtype: str = "float32"
    # where the model is built: "meta" (parameters on the meta device, split by the plan, then each
    # rank materialises and fills only its shards), "full" (every rank builds the whole model, then
    # the plan splits it), "auto" (meta where tp > 1 or fsdp and the family and precision allow it)
    build: str = "auto"

    target = "b200lab.parallel.mesh.MeshParallel"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = [
            f"parallelism.{k}={cfg[k]}: must be a positive integer"
            for k in ("tp", "dp")
            if cfg[k] is None or cfg[k] < 1
        ]
        if problems:
            cfg.nproc = cfg.nproc or 1
            return problems
        derived = cfg.tp * cfg.dp
        if cfg.nproc is not None and cfg.nproc != derived:
            return [
                f"parallelism.nproc={cfg.nproc} does not equal parallelism.tp x parallelism.dp = {cfg.tp} x {cfg.dp} "
                f"= {derived} "
                "(leave nproc out: it is derived)"
            ]
        cfg.nproc = derived  # the completed config records the ranks the job runs
        problems += super().validate(cfg, ctx)
        if cfg.tp > 1:
            problems += ctx.spec("model").tensor_parallel_problems(
                ctx.cfg.model, cfg.tp, cfg.sequence_parallel, ctx.cfg.seq.len
            )
        elif cfg.sequence_parallel:
            problems.append(
                "parallelism.sequence_parallel=true needs parallelism.tp > 1 (it shards between tensor-parallel "
                "regions)"
            )
        precision = ctx.spec("precision")
        if cfg.tp > 1 and precision.replaces_linears:
            problems.append(
                f"precision={ctx.cfg.precision.name} with parallelism.tp={cfg.tp}: this recipe replaces nn.Linear with "
                f"{precision.replaces_linears} modules, which the tensor-parallel plan "
                "(ColwiseParallel/RowwiseParallel on "
                "nn.Linear) cannot split; FP8 under tensor parallel is not built (docs/KNOWN_GAPS.md). Use bf16 with "
                "tp, "
                "or FP8 with fsdp/ddp"
            )
        if cfg.tp > 1 and cfg.dp > 1 and ctx.training and not cfg.fsdp:
            problems.append(
                f"parallelism.tp={cfg.tp} with parallelism.dp={cfg.dp} trains its replicas through FSDP2 over dp: "
                "set parallelism.fsdp=true"
            )
        if cfg.nnodes > 1 and cfg.tp > cfg.nproc // cfg.nnodes:
            problems.append(
                f"parallelism.tp={cfg.tp} exceeds the {cfg.nproc // cfg.nnodes} ranks per node: a tensor-parallel "
                "group must stay inside one node"
            )
        if cfg.sharded_dtype not in ("float32", "param"):
            problems.append(f"parallelism.sharded_dtype={cfg.sharded_dtype!r}: choose float32 or param")
        problems += _build_problems(cfg, ctx)
        problems += expert_parallel_problems(cfg, ctx, "dp", cfg.tp)
        for key in ("mp_param_dtype", "mp_reduce_dtype"):
            allowed = ("auto", *DTYPE_NAMES) if key == "mp_param_dtype" else DTYPE_NAMES
            if cfg[key] not in allowed:
                problems.append(f"parallelism.{key}={cfg[key]!r}: choose one of {', '.join(allowed)}")
        return problems


BUILDS = ("auto", "meta", "full")


def _build_problems(cfg, ctx: CheckContext) -> list[str]:
    if cfg.build not in BUILDS:
        return [f"parallelism.build={cfg.build!r}: choose one of {', '.join(BUILDS)}"]
    if cfg.build != "meta":
        return []
    problems = []
    if not ctx.spec("model").init_by_name:
        problems.append(
            f"parallelism.build=meta: model={ctx.cfg.model.get('name')} (family {ctx.cfg.model.get('family')!r}) does "
            "not fill its parameters by name (init_by_name), so it cannot be built on the meta device; use "
            "parallelism.build=auto or full"
        )
    precision = ctx.spec("precision")
    if precision.replaces_linears:
        problems.append(
            f"parallelism.build=meta with precision={ctx.cfg.precision.name}: this recipe replaces nn.Linear with "
            f"{precision.replaces_linears} modules built from the full weights; use parallelism.build=auto or full"
        )
    return problems
