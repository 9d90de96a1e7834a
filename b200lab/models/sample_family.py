"""What the vision, diffusion and recommender families share: a sample whose shape is the model's.

A GPT's sample is ``seq.len`` tokens. A ViT's is an image of ``model.image_size`` pixels, a DiT's
a latent of ``model.latent_size``, a DLRM's a click record. For these families ``seq.batch`` is
samples per step and ``seq.len`` is the sample's size in the family's own terms
(``SampleConfig.seq_meaning``, b200lab/models/config/sample.py): the image side for a ViT
(``seq=img224``), the latent side for a DiT (``seq=latent32``), the lookups per table for a DLRM
(``seq=onehot``, ``seq=multihot``).

What a step counts is the sample: ``tokens_per_sample`` is 1, so ``tokens_per_s`` is samples
(images) per second, under every aggregation rule of the lab's throughput (distinct data shards,
trials, per joule). ``effective.model`` records the unit and the tokens a sample makes inside the
transformer. The config class's checks turn combinations that mean nothing into composition
errors (exit 2) that name the keys.
"""

from __future__ import annotations

from b200lab.models.base import ModelFamily
from b200lab.models.config.sample import SampleConfig


class SampleFamily(ModelFamily):
    Config = SampleConfig

    def tokens_per_sample(self, seq_len: int) -> int:
        return 1

    def transformer_tokens(self) -> int:
        """Tokens one sample makes inside the model's transformer (0: none)."""
        return 0

    @property
    def effective(self) -> dict:
        return {
            "unit": self.token_unit,
            "tokens_per_s_counts": f"{self.token_unit}s",
            "transformer_tokens": self.transformer_tokens(),
        }
