"""What the vision, diffusion and recommender families share: a sample whose shape is the model's.

For these families ``seq.batch`` is samples per step and ``seq.len`` is the sample's size in the
family's own terms (``seq_meaning``): the image side for a ViT (``seq=img224``), the latent side
for a DiT (``seq=latent32``), the lookups per table for a DLRM (``seq=onehot``, ``seq=multihot``).
The checks turn combinations that mean nothing into composition errors (exit 2) that name the
keys: a text ``seq`` for an image model, an attention pattern or a causal-only kernel for a
model that attends both ways, attention settings on a model without attention, and FP8 where
nothing would convert. They ask the attention and precision config classes what their options
do, never their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from b200lab.core.component import CheckContext
from b200lab.models.config.base import ModelConfig


@dataclass
class SampleConfig(ModelConfig):
    token_unit: ClassVar[str] = "sample"
    attends_both_ways: ClassVar[bool] = True
    label: ClassVar[str] = "model"  # how messages name the family ("ViT")
    # the model field seq.len must equal; None: seq.len is free (its meaning still applies)
    seq_field: ClassVar[str | None] = None
    seq_meaning: ClassVar[str] = ""  # what seq.len is for this family
    seq_options: ClassVar[dict] = {}  # the seq option that sets seq.len to a preset's size, by that size

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
        return [
            f"seq={seq.name} (seq.len={seq.len}) with model={cfg.name}: a {cls.label} reads seq.len as "
            f"{cls.seq_meaning}, "
            f"and model.{cls.seq_field}={want} fixes it; use {option}seq.len={want} (seq.batch is {cls.token_unit}s "
            "per step)"
        ]

    @classmethod
    def _attention_problems(cls, cfg, ctx: CheckContext) -> list[str]:
        att, spec = ctx.cfg.get("attention") or {}, ctx.spec("attention")
        name = att.get("name")
        if not cls.has_attention:
            if not spec.is_neutral(att):
                return [
                    f"attention={name} with model={cfg.name}: a {cls.label} has no attention, so the attention group "
                    "would "
                    "change nothing; leave it at attention=sdpa (the default)"
                ]
            return []
        problems = []
        if att.get("window") is not None:
            problems.append(
                f"attention={name} attention.window={att.get('window')} with model={cfg.name}: a {cls.label} attends "
                f"non-causally over the whole {cls.token_unit}; a sliding window is a text pattern here. "
                "Use attention=sdpa, math or flex"
            )
        if att.get("documents"):
            problems.append(
                f"attention={name} (attention.documents=true) with model={cfg.name}: packed documents are a text "
                f"pattern; a {cls.label}'s {cls.token_unit} is one attention span. Use attention=sdpa, math or flex"
            )
        if spec.causal_only:
            problems.append(
                f"attention={name} with model={cfg.name}: {spec.causal_only} and a {cls.label} attends "
                "non-causally. Use attention=sdpa, math or flex"
            )
        return problems

    @classmethod
    def _precision_problems(cls, cfg, ctx: CheckContext) -> list[str]:
        spec, pname = ctx.spec("precision"), (ctx.cfg.get("precision") or {}).get("name")
        if not spec.fp8_gemms:
            return []
        if cls.fp8_problem:
            return [f"precision={pname} with model={cfg.name}: {cls.fp8_problem}. Use precision=bf16"]
        batch = int(ctx.cfg.seq.batch)
        if spec.may_use_te and batch % 16:
            return [
                f"precision={pname} with model={cfg.name}: seq.batch={batch} must be a multiple of 16 (Transformer "
                "Engine's "
                f"FP8 GEMMs need rows in multiples of 16, and the {cls.label}'s per-{cls.token_unit} layers have one "
                "row "
                f"per {cls.token_unit})"
            ]
        return []
