"""What the vision, diffusion and recommender families share: a sample whose shape is the model's.

A GPT's sample is ``seq.len`` tokens. A ViT's is an image of ``model.image_size`` pixels, a DiT's
a latent of ``model.latent_size``, a DLRM's a click record. For these families ``seq.batch`` is
samples per step and ``seq.len`` is the sample's size in the family's own terms
(:attr:`SampleFamily.seq_meaning`): the image side for a ViT (``seq=img224``), the latent side
for a DiT (``seq=latent32``), the lookups per table for a DLRM (``seq=onehot``, ``seq=multihot``).

What a step counts is the sample: ``tokens_per_sample`` is 1, so ``tokens_per_s`` is samples
(images) per second, under every aggregation rule of the lab's throughput (distinct data shards,
trials, per joule). ``effective.model`` records the unit and the tokens a sample makes inside the
transformer.

The checks turn combinations that mean nothing into composition errors (exit 2) that name the
keys: a text ``seq`` for an image model, an attention pattern a non-causal model cannot use (a
sliding window, packed documents, a causal-only kernel), attention settings on a model without
attention, and FP8 where nothing would convert.
"""

from __future__ import annotations

from typing import Optional

from b200lab.components import CheckContext
from b200lab.models.base import ModelFamily

FP8_RECIPES = ("te_fp8", "fp8_auto", "weight_only", "torchao_fp8")  # precision targets that put GEMMs in FP8
TE_RECIPES = ("te_fp8", "fp8_auto")  # those that may run Transformer Engine (its FP8 GEMMs need rows in multiples of 16)
CAUSAL_ONLY_ATTENTION = {"b200lab.attention.TEAttention": "Transformer Engine's attention is wired causal-only (b200lab/attention/te.py)"}


def precision_target(ctx: CheckContext) -> str:
    return str((ctx.cfg.get("precision") or {}).get("_target_", ""))


class SampleFamily(ModelFamily):
    label = "model"  # how messages name the family ("ViT")
    token_unit = "sample"  # what tokens_per_s counts for this family
    has_attention = True
    takes_fp8 = True
    seq_field: Optional[str] = None  # the model field seq.len must equal; None: seq.len is free (its meaning still applies)
    seq_meaning = ""  # what seq.len is for this family
    seq_options: dict = {}  # the seq option that sets seq.len to a preset's size, by that size

    def tokens_per_sample(self, seq_len: int) -> int:
        return 1

    def transformer_tokens(self) -> int:
        """Tokens one sample makes inside the model's transformer (0: none)."""
        return 0

    @property
    def effective(self) -> dict:
        return {"unit": self.token_unit, "tokens_per_s_counts": f"{self.token_unit}s", "transformer_tokens": self.transformer_tokens()}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        return cls._seq_problems(cfg, ctx) + cls._attention_problems(cfg, ctx) + cls._precision_problems(cfg, ctx)

    @classmethod
    def _seq_problems(cls, cfg, ctx: CheckContext) -> list[str]:
        seq = ctx.cfg.seq
        if cls.seq_field is None or seq.len == cfg[cls.seq_field]:
            return []
        want = cfg[cls.seq_field]
        option = f"seq={cls.seq_options[want]} or " if want in cls.seq_options else ""
        return [f"seq={seq.name} (seq.len={seq.len}) with model={cfg.name}: a {cls.label} reads seq.len as {cls.seq_meaning}, "
                f"and model.{cls.seq_field}={want} fixes it; use {option}seq.len={want} (seq.batch is {cls.token_unit}s per step)"]

    @classmethod
    def _attention_problems(cls, cfg, ctx: CheckContext) -> list[str]:
        att = ctx.cfg.get("attention") or {}
        name, target = att.get("name"), att.get("_target_")
        if not cls.has_attention:
            if name != "sdpa" or att.get("window") is not None or att.get("documents"):
                return [f"attention={name} with model={cfg.name}: a {cls.label} has no attention, so the attention group would "
                        "change nothing; leave it at attention=sdpa (the default)"]
            return []
        problems = []
        if att.get("window") is not None:
            problems.append(f"attention={name} attention.window={att.get('window')} with model={cfg.name}: a {cls.label} attends "
                            f"non-causally over the whole {cls.token_unit}; a sliding window is a text pattern here. "
                            "Use attention=sdpa, math or flex")
        if att.get("documents"):
            problems.append(f"attention={name} (attention.documents=true) with model={cfg.name}: packed documents are a text "
                            f"pattern; a {cls.label}'s {cls.token_unit} is one attention span. Use attention=sdpa, math or flex")
        if target in CAUSAL_ONLY_ATTENTION:
            problems.append(f"attention={name} with model={cfg.name}: {CAUSAL_ONLY_ATTENTION[target]} and a {cls.label} attends "
                            "non-causally. Use attention=sdpa, math or flex")
        return problems

    @classmethod
    def _precision_problems(cls, cfg, ctx: CheckContext) -> list[str]:
        target, pname = precision_target(ctx), (ctx.cfg.get("precision") or {}).get("name")
        if not any(t in target for t in FP8_RECIPES):
            return []
        if not cls.takes_fp8:
            return [f"precision={pname} with model={cfg.name}: FP8 recipes convert Linear layers, and a {cls.label}'s time goes "
                    "to its embedding-bag gathers (nn.EmbeddingBag: no GEMM to run in FP8); its MLPs are too narrow to gain. "
                    "Use precision=bf16"]
        batch = int(ctx.cfg.seq.batch)
        if any(t in target for t in TE_RECIPES) and batch % 16:
            return [f"precision={pname} with model={cfg.name}: seq.batch={batch} must be a multiple of 16 (Transformer Engine's "
                    f"FP8 GEMMs need rows in multiples of 16, and the {cls.label}'s per-{cls.token_unit} layers have one row "
                    f"per {cls.token_unit})"]
        return []
