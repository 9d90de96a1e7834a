"""What every precision recipe declares: whether it runs GEMMs in FP8, whether Transformer Engine
may run them, whether it swaps the model's linear layers, and what it refuses for decode steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from b200lab.core.component import ComponentConfig, DecodeRows


@dataclass
class PrecisionConfig(ComponentConfig):
    fp8_gemms: ClassVar[bool] = False  # puts (some) GEMMs in FP8
    may_use_te: ClassVar[bool] = False  # Transformer Engine's modules may run them (its row alignment applies)
    # the library whose modules replace nn.Linear (tensor parallel cannot split them)
    replaces_linears: ClassVar[str | None] = None

    @classmethod
    def decode_problem(cls, cfg, rows: DecodeRows | None) -> str | None:
        """Why this recipe cannot run decode steps of ``rows``, or None (also for a recipe that
        then takes another path: :meth:`decode_overrides`)."""
        return None

    @classmethod
    def decode_overrides(cls, cfg, rows: DecodeRows | None) -> dict:
        """Fields set on this section for a decode workload's build (fp8_auto is told why TE cannot run)."""
        return {}

    @classmethod
    def job_overrides(cls, cfg, job) -> dict:
        """Fields set on this section from the whole job (``job``: model, workload, ...) before the
        check and the build (fp8_auto is told where a record shows FP8 losing to bf16)."""
        return {}
