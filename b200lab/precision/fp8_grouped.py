"""A mixture's routed experts on FP8 grouped GEMMs with no host synchronisation: PyTorch's
rowwise-scaled grouped GEMM (``torch._scaled_grouped_mm``, a CUTLASS kernel for compute
capability 9.0), the recipe torchao's MoE training uses on Hopper.

Each call quantises on the device, so it compiles into the surrounding graph and the group
offsets never leave the GPU (Transformer Engine's GroupedLinear reads them on the host):

    forward    y      = Q(x) Q(w)^T          x per token, w per (expert, output feature)
    backward   grad_x = Q(g) Q(w^T)^T        g per token, w per (expert, input feature)
               grad_w = g^T x per expert     in the weights' dtype (bf16 grouped GEMM)

Q is e4m3 with one float32 scale per row (amax / 448). The weight gradient stays in bf16: its
contraction runs over each expert's tokens, and an FP8 operand scaled along that ragged
dimension needs per-group scales and 16-row-aligned groups (torchao's padded recipe), which this
path does not build. So two of the three GEMMs run in FP8. The router, the permutation and the
GELU between the two expert GEMMs stay in the compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from b200lab.precision.e4m3 import AMAX_FLOOR, E4M3_MAX


def quantize_rowwise(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 ``t``, float32 scale per row over the last dimension), ``t ~ q * scale[..., None]``:
    each row's largest magnitude maps to 448; an all-zero row gets the floor's scale."""
    amax = t.abs().amax(dim=-1, keepdim=True).to(torch.float32).clamp(min=AMAX_FLOOR)
    scale = amax / E4M3_MAX
    q = (t.to(torch.float32) / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale.squeeze(-1)


def scaled_grouped_mm(x: torch.Tensor, weight: tuple[torch.Tensor, torch.Tensor], offs: torch.Tensor, kernel):
    """``x`` (M, K) rows sorted by group, ``weight`` a (G, N, K) tensor quantised by
    :func:`quantize_rowwise`: row r of group g gives ``x[r] @ w[g]^T`` through an e4m3 GEMM;
    ``kernel`` has ``torch._scaled_grouped_mm``'s signature."""
    xq, x_scale = quantize_rowwise(x)
    wq, w_scale = weight
    return kernel(xq, wq.transpose(-2, -1), x_scale, w_scale, offs=offs, out_dtype=torch.bfloat16, use_fast_accum=True)


class _RowwiseGroupedMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, offs, kernel):
        ctx.save_for_backward(x, w, offs)
        ctx.kernel = kernel
        return scaled_grouped_mm(x, quantize_rowwise(w), offs, kernel)

    @staticmethod
    def backward(ctx, grad):
        x, w, offs = ctx.saved_tensors
        grad = grad.contiguous()
        w_t = quantize_rowwise(w.transpose(-2, -1).contiguous())  # scales per (expert, input feature)
        grad_x = scaled_grouped_mm(grad, w_t, offs, ctx.kernel).to(x.dtype)
        grad_w = torch._grouped_mm(grad.to(w.dtype).t(), x.to(w.dtype), offs=offs)
        return grad_x, grad_w, None, None


class RowwiseFP8Experts(nn.Module):
    """Drop-in for b200lab/models/moe/layer.py's ``Experts`` (the same ``grouped(rows, offs)``
    contract and the same 3-D weights, taken over, not copied): up (E, f, d), down (E, d, f).

    Without autograd and outside torch.compile (an eager forward-only run) the quantised weights
    are kept until a weight changes (its version counter), so each call quantises only its
    activations; a compiled graph quantises them inside the graph."""

    kernel = (
        "torch._scaled_grouped_mm (e4m3 rowwise scales, CUTLASS sm90): forward and input gradient FP8, weight "
        "gradient bf16; no host sync"
    )

    def __init__(self, up: nn.Parameter, down: nn.Parameter, kernel=None):
        super().__init__()
        self.up, self.down = up, down
        self.gemm = kernel if kernel is not None else getattr(torch, "_scaled_grouped_mm", None)
        self._cached: dict[str, tuple[tuple, tuple[torch.Tensor, torch.Tensor]]] = {}

    def _matmul(self, name: str, x: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        w = getattr(self, name)
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return _RowwiseGroupedMM.apply(x, w.to(x.dtype), offs, self.gemm)
        key = (w.data_ptr(), w._version, x.dtype)
        if name not in self._cached or self._cached[name][0] != key:
            self._cached[name] = (key, quantize_rowwise(w.to(x.dtype)))
        return scaled_grouped_mm(x, self._cached[name][1], offs, self.gemm)

    def grouped(self, rows: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        """Rows sorted by expert, expert e's group ending at offs[e]; rows past offs[-1] are not computed."""
        hidden = torch.nn.functional.gelu(self._matmul("up", rows, offs).to(rows.dtype), approximate="tanh")
        return self._matmul("down", hidden, offs).to(rows.dtype)
