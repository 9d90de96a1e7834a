"""The workload contract and the model-building helper shared by model workloads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hydra.utils import get_object


@dataclass
class RankContext:
    """What a rank knows about itself; handed to every workload."""

    cfg: object  # the resolved job config (OmegaConf)
    device: torch.device
    rank: int = 0
    world_size: int = 1
    data_shard: int = 0  # ranks with the same shard process the same tokens (counted once)

    def generator(self) -> torch.Generator:
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

    training = False
    metric_rules: dict[str, str] = {}  # how each metric from ``metrics()`` combines across ranks

    def __init__(self, cfg, ctx: RankContext):
        self.cfg = cfg
        self.ctx = ctx
        self.options = dict(cfg.options or {})
        self.tokens_per_step = 0
        self.flops_per_step = 0
        self.effective: dict = {}

    def setup(self) -> None:
        pass

    def step(self) -> None:
        raise NotImplementedError

    def metrics(self, stats: dict) -> dict:
        return {}


def build(section, *args, **kwargs):
    """Instantiate the class a config section names by ``_target_``, passing it the section."""
    return get_object(section._target_)(section, *args, **kwargs)


@dataclass
class BuiltModel:
    model: torch.nn.Module
    precision: object
    attention: object
    compiled: bool


def build_model(ctx: RankContext, training: bool, compile_model: bool = True) -> BuiltModel:
    """Model with precision, attention, data-parallel wrapping and torch.compile applied, in
    that order. Weights are created directly on the device in their final dtype, so a model
    that fits only in bf16 is never materialised in fp32. ``compile_model=False`` leaves
    compiling to the workload (which may compile a larger function around the model)."""
    cfg, device = ctx.cfg, ctx.device
    precision = build(cfg.precision, device.type, training)
    attention = build(cfg.attention, device.type)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(precision.param_dtype)
    try:
        with device:
            model = build(cfg.model, attention)
    finally:
        torch.set_default_dtype(default_dtype)
    model = precision.convert(model)
    if hasattr(model, "prepare"):
        model.prepare(int(cfg.seq.len))
    if training and ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    compiled = cfg.compile.mode is not None
    if compiled and compile_model:
        model = compile_fn(ctx, model)
    return BuiltModel(model, precision, attention, compiled)


def compile_fn(ctx: RankContext, fn):
    return torch.compile(fn, mode=ctx.cfg.compile.mode, fullgraph=ctx.cfg.compile.fullgraph)


def model_flops_per_step(ctx: RankContext, tokens_per_step: int, training: bool) -> int:
    from b200lab.measure.flops import flops_per_token

    return tokens_per_step * flops_per_token(ctx.cfg.model, int(ctx.cfg.seq.len), training)


def random_tokens(ctx: RankContext, batch: int, length: int, vocab: int) -> torch.Tensor:
    """Uniform random token ids (never zeros), a different stream per data shard."""
    return torch.randint(0, vocab, (batch, length), device=ctx.device, generator=ctx.generator())
