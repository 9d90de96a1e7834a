"""The dense GPT's family: building it, its FLOPs, data, loss and decode contract
(fields and checks: b200lab/models/config/gpt.py; the model: model.py; the tensor-parallel
plan: parallel.py)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from b200lab.measure import flops as F_
from b200lab.models.base import ModelFamily
from b200lab.models.config.gpt import GPTConfig
from b200lab.models.gpt.model import GPT, MLP, Block
from b200lab.models.patterns import NormLinear, NormMLP


class GPTFamily(ModelFamily):
    """Decoder-only language model on token ids; next-token cross-entropy."""

    Config = GPTConfig

    def build(self, attention) -> nn.Module:
        return GPT(self.cfg, attention)

    def prepare(self, model: nn.Module, seq_len: int) -> None:
        model.prepare(seq_len)

    def decoder(self, model: nn.Module):
        """This rank's decode contract: its K/V heads (tensor parallel splits them), the head dim,
        the attention window and the model's rotary table, extended as caches grow."""
        from b200lab.models.decoding import Decoder

        block = model.blocks[0]
        return Decoder(
            model,
            n_layers=self.cfg.n_layers,
            kv_heads=block.kv_heads,
            head_dim=block.head_dim,
            vocab_size=self.cfg.vocab_size,
            window=getattr(block.attention, "window", None),
            reads_all_weights=self.Config.decode_reads_all_weights,
            ensure_positions=model.ensure_positions,
            device=model.embed.weight.device,
            logits_of=self.logits_of,
        )

    def fp8_patterns(self) -> dict:
        """Each block's attention input (its norm feeding qkv) and its dense MLP fuse."""
        return {Block: NormLinear("norm_attn", "qkv"), MLP: NormMLP()}

    @staticmethod
    def logits_of(outputs) -> torch.Tensor:
        """The logits in what the model returned (a mixture of experts returns more)."""
        return outputs

    def attention_shapes(self, seq_len: int) -> tuple[int, int, int, int]:
        """(query heads, K/V heads, sequence, head dim) of one attention call."""
        c = self.cfg
        return c.n_heads, c.n_kv_heads or c.n_heads, seq_len, c.d_model // c.n_heads

    def matmul_params(self) -> int:
        c = self.cfg
        per_layer = F_.attention_proj_params(c.d_model, c.n_heads, c.n_kv_heads or c.n_heads) + F_.mlp_params(
            c.d_model, c.d_ff
        )
        return c.n_layers * per_layer + c.vocab_size * c.d_model

    attention_window: int | None = None  # set from attention.window: attention FLOPs count the pairs a window keeps

    def flops_per_sample(self, seq_len: int, training: bool) -> int:
        forward = seq_len * 2 * self.matmul_params() + F_.causal_attention_flops(
            self.cfg.n_layers, self.cfg.d_model, seq_len, self.attention_window
        )
        return F_.training_multiple(forward, training)

    def synthetic_batch(self, batch: int, seq_len: int, generator: torch.Generator, device):
        """Uniform random token ids (never all zeros); targets are the inputs shifted by one."""
        data = torch.randint(0, self.cfg.vocab_size, (batch, seq_len + 1), device=device, generator=generator)
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = outputs.to(torch.promote_types(outputs.dtype, torch.float32))  # the loss in fp32 at least
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
