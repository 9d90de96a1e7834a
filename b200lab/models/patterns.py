"""What a model family tells a layer converter about its modules (torchtitan's way: converters
key on module types the model declares, never on attribute names they guess).

``ModelFamily.fp8_patterns()`` maps a module type to one of these; the Transformer Engine
converter (b200lab/precision/te_convert.py) fuses what is declared and turns every other
``nn.Linear`` into a plain FP8 linear:

- :class:`NormLinear`: the module's ``norm`` feeds its ``linear`` and nothing else (a block's
  attention input): one ``LayerNormLinear``, the norm replaced by ``nn.Identity``;
- :class:`NormMLP`: the module is ``down(gelu_tanh(up(norm(x))))``: one ``LayerNormMLP``;
- :class:`GroupedExperts`: the module holds a mixture's 3-D expert weights ``up`` (E, f, d) and
  ``down`` (E, d, f) and runs them as grouped GEMMs: two ``GroupedLinear``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NormLinear:
    norm: str  # attribute holding the RMSNorm or LayerNorm
    linear: str  # attribute holding the nn.Linear it feeds


@dataclass(frozen=True)
class NormMLP:
    norm: str = "norm"
    up: str = "up"
    down: str = "down"


@dataclass(frozen=True)
class GroupedExperts:
    up: str = "up"
    down: str = "down"
