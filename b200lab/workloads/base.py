"""The workload contract and the model-building helper shared by model workloads."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from b200lab.core.registry import config_class, instantiate
from b200lab.models.materialise import check_state_dict, from_state_dict, initialiser, materialise, parameters_on_meta
from b200lab.workloads.config.base import WorkloadConfig


@dataclass
class RankContext:
    """What a rank knows about itself; handed to every workload."""

    cfg: Any  # the resolved, completed job config (OmegaConf)
    device: torch.device
    strategy: Any  # the b200lab.parallel.base.ParallelStrategy of this job
    rank: int = 0
    world_size: int = 1
    job_dir: Path | None = None  # the job's folder; files a workload writes under job_dir/artifacts reach MLflow

    @property
    def data_shard(self) -> int:
        return self.strategy.data_shard()

    @cached_property
    def family(self):
        """The model family (b200lab.models.base.ModelFamily) the config names; a sliding
        window from the attention group narrows the attention FLOPs it counts."""
        family = instantiate("model", self.cfg.model)
        window = (self.cfg.get("attention") or {}).get("window")
        if window is not None and hasattr(family, "attention_window"):
            family.attention_window = int(window)
        return family

    @cached_property
    def data(self):
        """The data source (b200lab.data.base.DataSource) the config names; a config from before
        the data group reads the family's random data, as it did then."""
        section = self.cfg.get("data") or {"_target_": "b200lab.data.random.RandomData", "name": "random"}
        source = instantiate("data", section, self.family, self.device)
        source.documents = bool((self.cfg.get("attention") or {}).get("documents", False))
        return source

    def generator(self) -> torch.Generator:
        """Seeded by run.seed and the data shard: ranks of one shard draw the same data."""
        g = torch.Generator(device=self.device)
        g.manual_seed(int(self.cfg.run.seed) + 1000 * self.data_shard)
        return g


class Workload:
    """Subclasses build what they need in ``setup`` and do one unit of work in ``step``.

    ``tokens_per_step`` counts the distinct tokens this rank processes per step (0 for
    microbenchmarks); ``flops_per_step`` the model FLOPs this rank does per step (for tflops and
    MFU; 0 if not meaningful); ``effective`` reports what actually ran; ``metrics(stats)`` adds
    workload metrics from this rank's step statistics, each with a rule (max, sum, mean) in
    ``metric_rules``: a metric without a rule is listed as unaggregated.
    """

    Config = WorkloadConfig
    metric_rules: dict[str, str] = {}  # how each metric from ``metrics()`` combines across ranks

    def __init__(self, cfg, ctx: RankContext):
        self.cfg = cfg
        self.ctx = ctx
        self.options = cfg.options
        self.tokens_per_step = 0
        self.flops_per_step = 0
        self.effective: dict = {}

    def setup(self) -> None:
        pass

    def step(self) -> None:
        raise NotImplementedError

    def health(self) -> str | None:
        """Why the run has gone wrong and must stop (e.g. a non-finite loss), or None. Called with
        the device idle: after the warm-up and after each trial, never inside the timed steps."""
        return None

    def after_timing(self) -> None:
        """After the timed steps (and any profiled ones): work that must not count in step times,
        e.g. scoring a validation set."""

    def metrics(self, stats: dict) -> dict:
        return {}

    def curves(self) -> dict[str, list[list[float]]]:
        """Per-step series, ``{name: [[step, value], ...]}`` (logged to MLflow with their steps);
        combined across ranks step by step with the name's rule in ``metric_rules``."""
        return {}

    def write_artifacts(self, out_dir: Path) -> None:
        """Rank 0, after timing: files for the run's artifacts (plots, histograms, checkpoints)."""


@dataclass
class BuiltModel:
    model: torch.nn.Module
    family: Any
    precision: Any
    attention: Any
    compiled: bool


class Diverged(RuntimeError):
    """A run whose numbers stopped being numbers: the point ends with status error, the steps
    timed before are kept."""


def build_model(
    ctx: RankContext,
    training: bool,
    compile_model: bool = True,
    state_dict: dict | None = None,
    precision_overrides: dict | None = None,
) -> BuiltModel:
    """The configured model with precision, attention, the parallelism strategy and torch.compile
    applied, in that order. Weights are created in their final dtype, so a model that fits only in
    bf16 is never materialised in fp32. A family that fills its parameters by name is built on the
    meta device and filled per parameter from ``run.seed`` and the parameter's name (the same
    weights for every layout); with ``parallelism.build`` meta (the default where the layout
    shards) the plan splits the meta model first and each rank materialises only its shards
    (b200lab/models/materialise.py). ``state_dict`` (the family's plain parameter names, e.g. a
    checkpoint) replaces the initial weights, checked strictly. ``compile_model=False`` leaves
    compiling to the workload (which may compile a larger function around the model).
    ``precision_overrides``: fields set on the precision's config for this build (a decode
    workload tells fp8_auto what Transformer Engine cannot run)."""
    cfg, device, family = ctx.cfg, ctx.device, ctx.family
    job_overrides = config_class("precision", cfg.precision.get("_target_")).job_overrides(cfg.precision, cfg)
    overrides = {**job_overrides, **(precision_overrides or {})}
    precision_cfg = OmegaConf.merge(cfg.precision, overrides) if overrides else cfg.precision
    precision = instantiate("precision", precision_cfg, device.type, training)
    attention = instantiate("attention", cfg.attention, device.type)
    on_meta = _builds_on_meta(ctx, family, precision)
    if on_meta:
        model = split_meta_model(ctx, precision, attention, training)
    else:
        model = construct(family, attention, precision, device)
    if family.Config.init_by_name:
        if state_dict is not None:
            check_state_dict(model, state_dict)
        fill = from_state_dict(state_dict) if state_dict is not None else initialiser(model, int(cfg.run.seed), device)
        layout = _parallel_layout(ctx, family) if on_meta else lambda name, full: full
        materialise(model, device, fill, precision.param_dtype, layout, state_dict)
    elif state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    if not on_meta:
        model = precision.convert(model)
    family.prepare(model, int(cfg.seq.len))
    _probe_attention(family, attention, precision, int(cfg.seq.len), device, training)
    if not on_meta:
        model = family.parallelize(model, ctx.strategy, training)
    elif not ctx.strategy.wraps_meta_model:
        model = ctx.strategy.wrap(model, training)  # DDP: after the weights exist
    compiled = cfg.compile.mode is not None
    if compiled and compile_model:
        model = compile_fn(ctx, model)
    return BuiltModel(model, family, precision, attention, compiled)


def construct(family, attention, precision, device: torch.device) -> torch.nn.Module:
    """The family's model in the precision's parameter dtype: its parameters on the meta device
    when the family fills them by name (buffers real, on the CPU), else built on ``device``."""
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(precision.param_dtype)
    try:
        with parameters_on_meta() if family.Config.init_by_name else device:
            model = family.build(attention)
    finally:
        torch.set_default_dtype(default_dtype)
    precision.patterns = family.fp8_patterns()
    return model


def split_meta_model(ctx: RankContext, precision, attention, training: bool) -> torch.nn.Module:
    """The model on the meta device, converted by the precision and split by the family's
    parallel plan: what a meta build materialises (each parameter's local shape is its shard's).
    A strategy whose wrapper needs real weights (DDP) wraps after materialising."""
    model = construct(ctx.family, attention, precision, ctx.device)
    return ctx.family.parallelize(precision.convert(model), ctx.strategy, training, wrap=ctx.strategy.wraps_meta_model)


def _builds_on_meta(ctx: RankContext, family, precision) -> bool:
    """Whether the parallel plan splits a meta model (``parallelism.build``), recorded in the
    strategy's effective with the reason when ``auto`` builds in full."""
    strategy = ctx.strategy
    if strategy.build is None:
        return False
    problems = []
    if strategy.build != "full":
        if not family.Config.init_by_name:
            problems.append(f"model family {family.cfg.family!r} does not fill its parameters by name")
        if precision.Config.replaces_linears:
            problems.append(
                f"precision {precision.cfg.name} builds {precision.Config.replaces_linears} modules from full weights"
            )
        if strategy.tp_mesh() is not None and not hasattr(family.tensor_parallel_plan(), "parallel_layout"):
            problems.append("the family's tensor-parallel plan has no parallel_layout")
        if strategy.build == "meta" and problems:
            raise ValueError("parallelism.build=meta: " + "; ".join(problems))
        if strategy.build == "auto" and not strategy.shards_parameters():
            problems.append("nothing is sharded (parallelism.tp=1, fsdp=false, expert_parallel=1)")
    on_meta = strategy.build != "full" and not problems
    strategy.effective["build"] = "meta" if on_meta else "full"
    if problems:
        strategy.effective["build_reason"] = "; ".join(problems)
    return on_meta


def _parallel_layout(ctx: RankContext, family):
    """layout(name, full): a full parameter as the tensor-parallel plan lays it out (identity without TP)."""
    if ctx.strategy.tp_mesh() is None:
        return lambda name, full: full
    plan, tp = family.tensor_parallel_plan(), ctx.strategy.tensor_parallel
    return lambda name, full: plan.parallel_layout(name, full, family.cfg, tp)


def _probe_attention(family, attention, precision, seq_len: int, device, training: bool) -> None:
    """Ask the backend which kernel a call of this run's shapes takes (batch 1, uninitialised
    tensors: nothing is computed), so a compiled model still records it."""
    shapes = getattr(family, "attention_shapes", None)
    if shapes is None:
        return
    heads, kv_heads, t, d = shapes(seq_len)
    attention.training = training
    q = torch.empty(1, heads, t, d, dtype=precision.compute_dtype, device=device)
    kv = torch.empty(1, kv_heads, t, d, dtype=precision.compute_dtype, device=device)
    from b200lab.attention.base import CAUSAL

    attention.probe(q, kv, kv, getattr(family, "attention_mask", CAUSAL))  # the ViT and DiT attend both ways


def call_model(model, inputs):
    """The model on a batch's inputs: token ids, or a dict of them with extras (``doc_ids``)."""
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def compile_fn(ctx: RankContext, fn):
    return torch.compile(fn, mode=ctx.cfg.compile.mode, fullgraph=ctx.cfg.compile.fullgraph)


def model_flops_per_step(ctx: RankContext, samples: int, training: bool) -> int:
    """Model FLOPs this rank does per step: its share of one replica's work on ``samples``."""
    per_sample = ctx.family.flops_per_sample(int(ctx.cfg.seq.len), training)
    return int(samples * per_sample * ctx.strategy.flops_share())
