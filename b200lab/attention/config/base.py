"""What every attention option declares: the pattern it may apply (a sliding window, packed
documents) and what its kernel can and cannot do, asked by other groups' checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from b200lab.core.component import CheckContext, ComponentConfig


@dataclass
class AttentionConfig(ComponentConfig):
    window: int | None = None  # sliding window: a query sees itself and the window - 1 keys before it
    documents: bool = False  # packed sequences: the data marks documents and no query sees past its own

    supports_window: ClassVar[bool] = True  # applies attention.window
    supports_documents: ClassVar[bool] = True  # keeps attention inside packed documents
    causal_only: ClassVar[str | None] = None  # why it cannot attend both ways (encoders, diffusion), or None
    no_decode: ClassVar[str | None] = None  # why it has no decode path (a query against a KV cache), or None
    no_cpu_backward: ClassVar[str | None] = None  # why it has no backward pass on a CPU, or None
    serve_compile_problem: ClassVar[str | None] = None  # why the compiled serve step cannot use it, or None
    reads_pages: ClassVar[bool] = False  # attends to keys in place in a block pool (AttnMask.paged), no gather
    neutral: ClassVar[bool] = False  # asks for nothing beyond "any kernel, the model's own mask" (PyTorch chooses)

    @classmethod
    def is_neutral(cls, cfg) -> bool:
        """True when this section asks for nothing a model without attention would ignore."""
        return cls.neutral and cfg.get("window") is None and not cfg.get("documents")

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = []
        window = cfg.get("window")
        if window is not None:
            if window < 1:
                problems.append(f"attention.window={window}: must be a positive number of tokens")
            elif not cls.supports_window:
                problems.append(
                    f"attention={cfg.name} has no sliding window; use attention=flex_sliding (or sdpa/math, "
                    "which apply it as a dense mask)"
                )
        if cfg.get("documents") and not cls.supports_documents:
            problems.append(
                f"attention={cfg.name} cannot keep attention inside packed documents; use "
                "attention=flex_document (or sdpa/math, which apply it as a dense mask)"
            )
        return problems
