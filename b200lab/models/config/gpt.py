"""``model=tiny, gpt_125m, gpt_1b, gpt_8b, gpt_40b, gpt2, byte_gpt``: the dense GPT (b200lab/models/gpt/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from b200lab.core.component import CheckContext
from b200lab.models.config.base import ModelConfig

NORMS = ("rmsnorm", "layernorm")
CHECKPOINTING = ("none", "full", "selective")


@dataclass
class GPTConfig(ModelConfig):
    family: str = "gpt"
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: n_heads (multi-head); fewer: grouped-query attention
    d_ff: int = 512
    vocab_size: int = 50304
    pos: str = "rope"  # rope | learned
    max_seq_len: int = 131072  # only binding for learned positions
    tie_embeddings: bool = False
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    rope_pairs: str = "half"  # half: dims (i, i + D/2) rotate together, as GPT-NeoX/Llama; interleaved: (2i, 2i+1)
    norm: str = "rmsnorm"  # rmsnorm | layernorm (GPT-2)
    bias: bool = False  # biases in the projections (and LayerNorm), as GPT-2; the head never has one
    checkpointing: str = "none"  # none | full | selective: activation checkpointing of each block in training

    HINTS: ClassVar[dict] = {
        k: "the dense GPT has no experts; mixture-of-experts is its own model family (model=moe)"
        for k in ("n_experts", "top_k", "d_ff_expert")
    }
    target = "b200lab.models.gpt.family.GPTFamily"
    decoder = True
    tensor_parallel_plan = "b200lab.models.gpt.parallel"
    init_by_name = True

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = cls.positive(cfg, "n_layers", "d_model", "n_heads", "d_ff", "vocab_size", "max_seq_len")
        if cfg.n_kv_heads is not None:
            problems += cls.positive(cfg, "n_kv_heads")
            if cfg.n_kv_heads >= 1 and cfg.n_heads % cfg.n_kv_heads:
                problems.append(f"model.n_kv_heads={cfg.n_kv_heads} does not divide model.n_heads={cfg.n_heads}")
        if cfg.d_model >= 1 and cfg.n_heads >= 1:
            if cfg.d_model % cfg.n_heads:
                problems.append(
                    f"model.n_heads={cfg.n_heads} does not divide model.d_model={cfg.d_model} "
                    f"(head dim would be {cfg.d_model / cfg.n_heads:g})"
                )
            elif cfg.pos == "rope" and (cfg.d_model // cfg.n_heads) % 2:
                problems.append(
                    f"model.pos=rope needs an even head dim; d_model/n_heads = {cfg.d_model // cfg.n_heads}"
                )
        if cfg.rope_pairs not in ("interleaved", "half"):
            problems.append(f"model.rope_pairs={cfg.rope_pairs!r}: choose interleaved or half")
        if cfg.norm not in NORMS:
            problems.append(f"model.norm={cfg.norm!r}: choose {' or '.join(NORMS)}")
        if cfg.pos not in ("rope", "learned"):
            problems.append(f"model.pos={cfg.pos!r}: choose rope or learned")
        problems += cls._checkpointing_problems(cfg, ctx)
        seq_len = ctx.cfg.seq.len
        if cfg.pos == "learned" and seq_len > cfg.max_seq_len:
            problems.append(
                f"seq.len={seq_len} exceeds model.max_seq_len={cfg.max_seq_len} (model.pos=learned has no "
                "position embeddings past it)"
            )
        return problems

    @staticmethod
    def _checkpointing_problems(cfg, ctx: CheckContext) -> list[str]:
        if cfg.checkpointing not in CHECKPOINTING:
            return [f"model.checkpointing={cfg.checkpointing!r}: choose {', '.join(CHECKPOINTING)}"]
        if cfg.checkpointing != "none" and ctx.spec("precision").may_use_te:
            return [
                f"model.checkpointing={cfg.checkpointing} with precision={ctx.cfg.precision.name}: recomputing a "
                "Transformer Engine FP8 block outside its autocast region would rerun it in another precision; "
                "use model.checkpointing=none with FP8 (TE's own checkpoint is not wired yet)"
            ]
        return []

    @classmethod
    def split_problems(cls, cfg, tp: int, sequence_parallel: bool, seq_len: int) -> list[str]:
        """Megatron's split (b200lab/models/gpt/parallel.py): heads, K/V heads, d_ff and the vocabulary
        over ``tp`` ranks."""
        out = []
        kv = cfg.n_kv_heads or cfg.n_heads
        for key, value, what in (
            ("n_heads", cfg.n_heads, "query heads"),
            ("n_kv_heads", kv, "K/V heads"),
            ("d_ff", cfg.d_ff, "MLP columns"),
            ("vocab_size", cfg.vocab_size, "output-head rows"),
        ):
            if value % tp:
                shown = (
                    f"model.{key}={value}"
                    if key != "n_kv_heads" or cfg.n_kv_heads
                    else f"model.n_kv_heads (= n_heads) = {value}"
                )
                out.append(f"parallelism.tp={tp} does not divide {shown}: each rank holds 1/{tp} of the {what}")
        if cfg.tie_embeddings:
            out.append(
                f"parallelism.tp={tp} with model.tie_embeddings=true: the output head is split by vocabulary but the "
                "embedding it shares is not (no vocab-parallel embedding is built); untie it or use parallelism=ddp"
            )
        if sequence_parallel:
            if seq_len % tp:
                out.append(f"parallelism.sequence_parallel=true: parallelism.tp={tp} does not divide seq.len={seq_len}")
            if cfg.pos == "learned":
                out.append(
                    "parallelism.sequence_parallel=true with model.pos=learned is not built (the position table is "
                    "added "
                    "to the sequence-sharded embedding); use model.pos=rope"
                )
        return out
