"""Held-out perplexity of a checkpoint, under the run's precision.

``options.checkpoint`` names the weights: an MLflow run (``run:<id>``) that trained with
``save_checkpoint``, a checkpoint folder or ``.pt`` file, or a GPT-2 folder (config.json +
safetensors). The parent resolves it before launching (b200lab/runner/staging.py; a missing run,
file or model mismatch is a configuration error). Each rank builds the configured model with those
weights loaded before the precision recipe converts it, then:

- a timed step scores one batch of ``seq.batch`` validation windows (forward + per-token
  negative log-likelihood under the recipe's autocast), so tokens/s is an inference number;
  data-parallel ranks take different windows;
- after timing, every window of the validation split (b200lab/data/text.py) is scored once:
  ``val_loss``, ``perplexity`` = exp(val_loss) and ``val_tokens``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from b200lab.workloads import checkpoint, perplexity
from b200lab.workloads.base import Workload, build_model, model_flops_per_step
from b200lab.workloads.config.eval import EvalConfig


class Eval(Workload):
    Config = EvalConfig
    metric_rules = dict(perplexity.METRIC_RULES)

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
        self.result: perplexity.Perplexity | None = None
        self.effective = {"data": self.data.effective, "checkpoint": self._provenance(info, meta)}

    def _provenance(self, info: dict, meta: dict) -> dict:
        record = {
            "source": info["source"],
            "run_id": info["run_id"],
            "path": info["path"],
            "format": meta.get("format"),
            "steps": meta.get("steps"),
        }
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
