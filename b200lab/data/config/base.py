"""What every data option declares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from b200lab.core.component import ComponentConfig


@dataclass
class DataConfig(ComponentConfig):
    synthetic: ClassVar[bool] = True  # random data: no learning signal, no held-out set
