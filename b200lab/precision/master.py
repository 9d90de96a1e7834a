"""Float32 master weights for a model whose parameters are 16-bit.

Forward and backward read the 16-bit parameters; the optimizer steps a float32 copy and the
result is written back rounded. With float32 gradient accumulation each micro-batch's 16-bit
gradient is moved into the float32 master gradient right after its backward, so the sum over
micro-batches is exact to float32 rather than rounded to 16 bits at every addition.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch


class MasterWeights:
    def __init__(self, params: Iterable[torch.nn.Parameter], master_dtype: torch.dtype, accum_dtype: torch.dtype):
        self.params = [p for p in params if p.requires_grad]
        self.masters = [p.detach().to(master_dtype, copy=True) for p in self.params]
        self.accumulate_in_master = accum_dtype == master_dtype
        self._first = True

    @torch.no_grad()
    def accumulate(self) -> None:
        """Call after each micro-batch's backward."""
        if not self.accumulate_in_master:
            return  # autograd sums into the 16-bit .grad; ``step`` converts once
        pairs = [(m, p) for m, p in zip(self.masters, self.params) if p.grad is not None]
        if self._first:
            for m, p in pairs:
                m.grad = p.grad.to(m.dtype)
        else:
            for m, p in pairs:
                if m.grad is None:
                    m.grad = torch.zeros_like(m)
            torch._foreach_add_([m.grad for m, _ in pairs], [p.grad for _, p in pairs])
        for _, p in pairs:
            p.grad = None
        self._first = False

    @torch.no_grad()
    def step(self, optimizer_step: Callable[[], None]) -> None:
        """Run the optimizer on the masters, copy them into the parameters, clear every gradient."""
        if not self.accumulate_in_master:
            for m, p in zip(self.masters, self.params):
                m.grad = None if p.grad is None else p.grad.to(m.dtype)
                p.grad = None
        optimizer_step()
        torch._foreach_copy_(self.params, self.masters)
        for m in self.masters:
            m.grad = None
        self._first = True
