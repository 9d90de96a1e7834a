"""Shipped options under other names, as a plugin would subclass them: a Transformer Engine
recipe, Transformer Engine's attention and the mixture-of-experts family. Each is refused and
run exactly as the option it copies, because every check asks the class what it can do."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.attention.config.te import TEAttentionConfig
from b200lab.attention.te import TEAttention
from b200lab.models.config.moe import MoEConfig
from b200lab.models.moe.family import MoEFamily
from b200lab.precision.config.te_fp8 import TEFP8Config
from b200lab.precision.te_fp8 import TEFP8Precision


@dataclass
class RenamedTEConfig(TEFP8Config):
    target = "lab_renamed.RenamedTE"


class RenamedTE(TEFP8Precision):
    Config = RenamedTEConfig


@dataclass
class RenamedAttentionConfig(TEAttentionConfig):
    target = "lab_renamed.RenamedAttention"


class RenamedAttention(TEAttention):
    Config = RenamedAttentionConfig


@dataclass
class RenamedMixtureConfig(MoEConfig):
    family: str = "mixture"
    target = "lab_renamed.RenamedMixture"


class RenamedMixture(MoEFamily):
    Config = RenamedMixtureConfig
