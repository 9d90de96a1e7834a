"""What every component option is made of, before any of its code runs.

An option (``model=gpt_1b``, ``precision=fp8``, ...) is two classes:

- its **config class** (a dataclass extending :class:`ComponentConfig`, in the group's torch-free
  ``config/`` package): the fields, their defaults, the checks (``validate``), and what the
  option can do, declared as class variables (capabilities) that other groups' checks ask
  about instead of comparing option names;
- its **implementation** (the class ``_target_`` names, which carries ``Config``): the code that
  runs in the rank processes.

Composing, validating and refusing a configuration imports config classes only, so no model,
torch or Transformer Engine code runs before a job is launched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING


class ComponentError(ValueError):
    """A ``_target_`` that may not or cannot be used; the message names the key."""


@dataclass
class ComponentConfig:
    """Fields every component section has; an option's config class extends it.

    ``target`` (a class variable) is the implementation's dotted path: the ``_target_`` the
    option's YAML gets. ``HINTS`` maps a key the class does not have to a hint shown with the
    refusal (e.g. a field of another family)."""

    _target_: str = MISSING
    name: str = MISSING

    target: ClassVar[str] = ""
    HINTS: ClassVar[dict] = {}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        """Why this completed section cannot run in this job, one message per problem, each
        naming its keys (empty when it can)."""
        return []


@dataclass
class CheckContext:
    """What a config class's ``validate`` may look at besides its own section."""

    cfg: Any  # the whole job config, every section completed
    device: str  # cuda | cpu, resolved
    training: bool  # the workload runs an optimizer
    specs: dict = field(default_factory=dict)  # group -> the chosen option's config class

    def spec(self, group: str) -> type:
        """The config class of the option chosen for ``group``: ask it what the option can do."""
        return self.specs[group]


@dataclass(frozen=True)
class DecodeRows:
    """The rows a decode workload's steps feed each GEMM (one per sequence): ``count`` when it is
    fixed by the config (generate: ``seq.batch``), None when it changes from step to step
    (serve); ``described`` says which, for messages."""

    count: Any
    described: str
