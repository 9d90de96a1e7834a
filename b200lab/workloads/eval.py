"""Held-out perplexity of a checkpoint, under the run's precision.

``options.checkpoint`` names the weights: an MLflow run (``run:<id>``) that trained with
``save_checkpoint``, a checkpoint folder or ``.pt`` file, or a GPT-2 folder (config.json +
safetensors). The parent resolves it before launching (:meth:`Eval.stage`; a missing run, file
or model mismatch is a configuration error). Each rank builds the configured model with those
weights loaded before the precision recipe converts it, then:

- a timed step scores one batch of ``seq.batch`` validation windows (forward + per-token
  negative log-likelihood under the recipe's autocast), so tokens/s is an inference number;
  data-parallel ranks take different windows;
- after timing, every window of the validation split (b200lab/data/text.py) is scored once:
  ``val_loss``, ``perplexity`` = exp(val_loss) and ``val_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from b200lab.components import CheckContext, resolve_target
from b200lab.workloads import checkpoint, perplexity
from b200lab.workloads.base import Workload, WorkloadConfig, build_model, model_flops_per_step


@dataclass
class EvalOptions:
    checkpoint: Optional[str] = None  # run:<MLflow run id>, a checkpoint folder or .pt file, a GPT-2 folder, or train
    # checkpoint=train: train this model on this data first (once per settings; b200lab/workloads/reference_checkpoint.py)
    train_steps: int = 1000
    train_lr: float = 1e-3
    train_batch: Optional[int] = None  # None: seq.batch
    train_precision: str = "fp32"


@dataclass
class EvalConfig(WorkloadConfig):
    options: EvalOptions = field(default_factory=EvalOptions)


class Eval(Workload):
    Config = EvalConfig
    uses_model = True
    metric_rules = dict(perplexity.METRIC_RULES)

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if resolve_target("data", ctx.cfg.data._target_).synthetic:
            problems.append(f"workload=eval scores held-out text; data={ctx.cfg.data.name} has none (use data=text)")
        return problems

    @classmethod
    def stage(cls, cfg, ctx: CheckContext, job_dir: Path) -> list[str]:
        from b200lab.tracking import resolve_uri

        source = cfg.options.checkpoint
        uri = resolve_uri(ctx.cfg.tracking.uri)
        if source == "train":
            from b200lab.workloads import reference_checkpoint

            try:
                source = f"run:{reference_checkpoint.ensure(ctx.cfg, uri, job_dir)}"
            except RuntimeError as exc:
                return [f"{checkpoint.KEY}=train: {exc}"]
        try:
            info = checkpoint.locate(source, uri, job_dir / "inputs")
            problems = checkpoint.check_model(checkpoint.model_fields(Path(info["path"])), ctx.cfg.model, info["source"])
        except checkpoint.CheckpointError as exc:
            return [str(exc)]
        except (ValueError, OSError) as exc:  # an unreadable checkpoint.json or GPT-2 config
            return [f"{checkpoint.KEY}={source}: {exc}"]
        if not problems:
            checkpoint.write_staged(job_dir, info)
        return problems

    def setup(self) -> None:
        cfg, ctx = self.ctx.cfg, self.ctx
        info = checkpoint.read_staged(ctx.job_dir)
        fields, state, meta = checkpoint.load(Path(info["path"]))
        problems = checkpoint.check_model(fields, cfg.model, info["source"])
        if problems:
            raise checkpoint.CheckpointError(problems[0])
        self.built = build_model(ctx, training=False, state_dict=state)
        del state
        self.model = self.built.model.eval()
        self.data = ctx.data
        self.batch, seq_len = int(cfg.seq.batch), int(cfg.seq.len)
        self.windows = self.data.validation(seq_len)
        self.offsets = torch.arange(self.batch, device=ctx.device)
        self.cursor = ctx.data_shard * self.batch  # ranks take different windows
        self.tokens_per_step = self.batch * self.built.family.tokens_per_sample(seq_len)
        self.flops_per_step = model_flops_per_step(ctx, self.batch, training=False)
        self.result: Optional[perplexity.Perplexity] = None
        self.effective = {"data": self.data.effective, "checkpoint": self._provenance(info, meta)}

    def _provenance(self, info: dict, meta: dict) -> dict:
        record = {"source": info["source"], "run_id": info["run_id"], "path": info["path"], "format": meta.get("format"),
                  "steps": meta.get("steps")}
        trained = (meta.get("data") or {}).get("corpus", {}).get("sha256")
        if trained is not None:
            here = self.data.effective.get("corpus", {}).get("sha256")
            same = trained == here and meta["data"].get("val_fraction") == self.data.effective.get("val_fraction")
            record.update(trained_on_sha256=trained, same_corpus_and_split=same)
        return record

    def step(self) -> None:
        index = (self.offsets + self.cursor) % len(self.windows)
        self.cursor = (self.cursor + self.batch * self.ctx.world_size) % len(self.windows)
        self.last_nll = perplexity.batch_nll(self.model, self.built.precision, self.windows, index)

    def after_timing(self) -> None:
        self.result = perplexity.evaluate(self.model, self.built.precision, self.windows, self.batch)

    def metrics(self, stats: dict) -> dict:
        return self.result.metrics() if self.result is not None else {}
