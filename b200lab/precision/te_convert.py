"""Swap a model's layers for Transformer Engine modules, carrying the weights over.

A model converter in torchtitan's sense: the model code knows nothing of FP8, and the converter
knows no model's attribute names. It fuses what the model family declares by module type
(b200lab/models/patterns.py): a norm feeding a projection becomes one ``LayerNormLinear``, a
norm + GELU MLP one ``LayerNormMLP``, a mixture's expert weights two ``GroupedLinear``; every
other ``nn.Linear`` whose dimensions FP8 GEMMs accept becomes a ``te.Linear``. The norm a fused module
absorbed is replaced by ``nn.Identity`` in place. What was converted, and what was left (and
why), is returned as a :class:`Conversion`, which also maps the TE parameter names back to the
model's own names for checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from b200lab.models.patterns import GroupedExperts, NormLinear, NormMLP

FP8_ALIGN = 16  # TE's FP8 GEMMs need both weight dimensions divisible by 16


@dataclass
class Conversion:
    modules: dict[str, str] = field(default_factory=dict)  # model path -> TE class
    kept: dict[str, str] = field(default_factory=dict)  # model path -> why it stays in high precision
    names: dict[str, str] = field(default_factory=dict)  # TE parameter name -> the model's own parameter name
    stacks: dict[str, list[str]] = field(
        default_factory=dict
    )  # the model's 3-D parameter -> the TE parameters it splits into
    experts: dict[str, str] = field(default_factory=dict)  # a mixture's experts module -> te, rowwise or bf16

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cls in self.modules.values():
            out[cls] = out.get(cls, 0) + 1
        return out


def _norm_kind(norm: nn.Module):
    if isinstance(norm, nn.RMSNorm):
        return "RMSNorm"
    if isinstance(norm, nn.LayerNorm):
        return "LayerNorm"
    return None


def _aligned(*dims: int) -> bool:
    return all(d % FP8_ALIGN == 0 for d in dims)


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


def _eps(norm: nn.Module) -> float:
    eps = getattr(norm, "eps", None)
    return float(eps) if eps is not None else float(torch.finfo(torch.float32).eps)


class Converter:
    def __init__(self, te, params_dtype: torch.dtype, device, skip: tuple[str, ...] = (), experts: str = "te"):
        self.te, self.dtype, self.device, self.skip = te, params_dtype, device, skip
        self.experts_path = experts  # te | rowwise (b200lab/precision/fp8_grouped.py) | bf16
        self.out = Conversion()

    def _map(self, path: str, pairs: dict[str, str]) -> None:
        for te_name, own in pairs.items():
            self.out.names[f"{path}.{te_name}" if path else te_name] = own

    @staticmethod
    def _norm_into(module, norm: nn.Module, norm_path: str) -> dict[str, str]:
        """Copy a norm's weight (and LayerNorm bias) into a fused TE module; its name pairs. A
        LayerNorm without a bias gets TE's bias frozen at zero."""
        _copy(module.layer_norm_weight, norm.weight)
        pairs = {"layer_norm_weight": f"{norm_path}.weight"}
        if _norm_kind(norm) == "LayerNorm":
            if norm.bias is not None:
                _copy(module.layer_norm_bias, norm.bias)
                pairs["layer_norm_bias"] = f"{norm_path}.bias"
            else:
                nn.init.zeros_(module.layer_norm_bias)
                module.layer_norm_bias.requires_grad_(False)
        return pairs

    def norm_linear(self, norm: nn.Module, linear: nn.Linear, norm_path: str, path: str):
        module = self.te.LayerNormLinear(
            linear.in_features,
            linear.out_features,
            eps=_eps(norm),
            bias=linear.bias is not None,
            normalization=_norm_kind(norm),
            params_dtype=self.dtype,
            device=self.device,
        )
        _copy(module.weight, linear.weight)
        pairs = {"weight": f"{path}.weight", **self._norm_into(module, norm, norm_path)}
        if linear.bias is not None:
            _copy(module.bias, linear.bias)
            pairs["bias"] = f"{path}.bias"
        self._map(path, pairs)
        self.out.modules[path] = "LayerNormLinear"
        return module

    def norm_mlp(self, mlp: nn.Module, path: str, pattern: NormMLP):
        up, down, norm = getattr(mlp, pattern.up), getattr(mlp, pattern.down), getattr(mlp, pattern.norm)
        bias = up.bias is not None
        module = self.te.LayerNormMLP(
            up.in_features,
            up.out_features,
            eps=_eps(norm),
            bias=bias,
            normalization=_norm_kind(norm),
            activation="gelu",
            params_dtype=self.dtype,
            device=self.device,
        )
        _copy(module.fc1_weight, up.weight)
        _copy(module.fc2_weight, down.weight)
        own_up, own_down = f"{path}.{pattern.up}", f"{path}.{pattern.down}"
        pairs = {
            "fc1_weight": f"{own_up}.weight",
            "fc2_weight": f"{own_down}.weight",
            **self._norm_into(module, norm, f"{path}.{pattern.norm}"),
        }
        if bias:
            _copy(module.fc1_bias, up.bias)
            _copy(module.fc2_bias, down.bias)
            pairs.update({"fc1_bias": f"{own_up}.bias", "fc2_bias": f"{own_down}.bias"})
        self._map(path, pairs)
        self.out.modules[path] = "LayerNormMLP"
        return module

    def experts(self, experts: nn.Module, path: str, pattern: GroupedExperts):
        """A mixture of experts' 3-D up (E, f, d) and down (E, d, f) weights as two TE GroupedLinear,
        or (``rowwise``) on PyTorch's FP8 grouped GEMM, keeping the same weights."""
        if self.experts_path == "rowwise":
            from b200lab.precision.fp8_grouped import RowwiseFP8Experts

            module = RowwiseFP8Experts(getattr(experts, pattern.up), getattr(experts, pattern.down))
            self._map(path, {"up": f"{path}.{pattern.up}", "down": f"{path}.{pattern.down}"})
            self.out.modules[path] = "ScaledGroupedMM x2"
            return module
        up = getattr(experts, pattern.up)
        module = TEExperts(self.te, up.shape[0], up.shape[2], up.shape[1], self.dtype, self.device)
        for name, attr in (("up", pattern.up), ("down", pattern.down)):
            stacked = getattr(experts, attr)
            grouped = getattr(module, f"{name}_gemm")
            for i in range(stacked.shape[0]):
                _copy(getattr(grouped, f"weight{i}"), stacked[i])
            self.out.stacks[f"{path}.{attr}"] = [f"{path}.{name}_gemm.weight{i}" for i in range(stacked.shape[0])]
        self.out.modules[path] = "GroupedLinear x2"
        return module

    def linear(self, linear: nn.Linear, path: str):
        module = self.te.Linear(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            params_dtype=self.dtype,
            device=self.device,
        )
        _copy(module.weight, linear.weight)
        pairs = {"weight": f"{path}.weight"}
        if linear.bias is not None:
            _copy(module.bias, linear.bias)
            pairs["bias"] = f"{path}.bias"
        self._map(path, pairs)
        self.out.modules[path] = "Linear"
        return module


class TEExperts(nn.Module):
    """The experts of b200lab/models/moe/layer.py on TE GroupedLinear: FP8 grouped GEMMs under the
    recipe. TE takes the group sizes on the host, so each call reads them once (a sync per
    layer, which the bf16 ``torch._grouped_mm`` path does not have); groups are padded to the
    recipe's FP8 alignment with TE's Fp8Padding and unpadded after."""

    kernel = "Transformer Engine GroupedLinear (FP8 under te.autocast; group sizes read on the host)"

    def __init__(self, te, n_experts: int, d_model: int, d_ff: int, dtype, device):
        super().__init__()
        self.up_gemm = te.GroupedLinear(n_experts, d_model, d_ff, bias=False, params_dtype=dtype, device=device)
        self.down_gemm = te.GroupedLinear(n_experts, d_ff, d_model, bias=False, params_dtype=dtype, device=device)
        self.pad, self.unpad = te.Fp8Padding(n_experts), te.Fp8Unpadding(n_experts)

    @torch.compiler.disable
    def grouped(self, rows: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        """Same contract as ``Experts.grouped``: rows sorted by expert, group e ending at offs[e];
        rows past offs[-1] (dropped by the capacity) come back as zeros."""
        ends = offs.to(torch.int64).tolist()
        splits = [b - a for a, b in zip([0, *ends[:-1]], ends)]
        x, padded = self.pad(rows[: ends[-1]], splits)
        hidden = torch.nn.functional.gelu(self.up_gemm(x, padded), approximate="tanh")
        y = self.unpad(self.down_gemm(hidden, padded), splits)
        if ends[-1] < rows.shape[0]:
            y = torch.cat([y, y.new_zeros(rows.shape[0] - ends[-1], y.shape[1])])
        return y


def convert_model(
    model: nn.Module,
    te,
    params_dtype: torch.dtype,
    device,
    skip: tuple[str, ...] = (),
    patterns: dict | None = None,
    experts: str = "te",
    keep_small: bool = False,
) -> Conversion:
    """Convert ``model`` in place; ``patterns``: module type -> the pattern its family declares
    (b200lab/models/patterns.py); ``skip`` names module paths (or their last part, e.g. ``head``)
    that stay in high precision; ``experts``: how a mixture's experts run (te, rowwise or bf16);
    ``keep_small``: linears :func:`small_gemm` names stay in high precision (a fused pattern stays
    whole when any of its linears does)."""
    conv = Converter(te, params_dtype, device, skip, experts)
    patterns = patterns or {}
    tied = _shared_parameters(model)

    def skipped(path: str) -> bool:
        return path in skip or path.rsplit(".", 1)[-1] in skip

    def why_not(linear: nn.Linear, path: str) -> str | None:
        return _why_not(linear, path, skipped, tied) or (small_gemm(linear) if keep_small else None)

    def replacement(child: nn.Module, path: str) -> tuple[nn.Module | None, str | None]:
        """(the TE module for ``child``, or None; why it stays as it is, or None to recurse into it)."""
        pattern = patterns.get(type(child))
        if isinstance(pattern, NormMLP) and _norm_kind(getattr(child, pattern.norm)) is not None:
            up, down = getattr(child, pattern.up), getattr(child, pattern.down)
            why = why_not(up, path) or why_not(down, path)
            return (None, why) if why else (conv.norm_mlp(child, path, pattern), None)
        if isinstance(pattern, GroupedExperts):
            up = getattr(child, pattern.up)
            conv.out.experts[path] = "bf16"
            if conv.experts_path == "bf16":
                return None, "precision.moe_experts=bf16"
            if not _aligned(*up.shape[1:]):
                return (
                    None,
                    f"experts {up.shape[2]}x{up.shape[1]} are not a multiple of {FP8_ALIGN} (FP8 GEMM alignment)",
                )
            conv.out.experts[path] = conv.experts_path
            return conv.experts(child, path, pattern), None
        if type(child) is nn.Linear:
            why = why_not(child, path)
            return (None, why) if why else (conv.linear(child, path), None)
        return None, None

    def visit(parent: nn.Module, prefix: str) -> None:
        pattern = patterns.get(type(parent))
        if isinstance(pattern, NormLinear):  # e.g. a block's attention input: its norm feeding its qkv projection
            norm, linear = getattr(parent, pattern.norm), getattr(parent, pattern.linear)
            if _norm_kind(norm) is not None and type(linear) is nn.Linear:
                path = f"{prefix}{pattern.linear}"
                why = why_not(linear, path)
                if why:
                    conv.out.kept[path] = why
                else:
                    setattr(parent, pattern.linear, conv.norm_linear(norm, linear, f"{prefix}{pattern.norm}", path))
                    setattr(parent, pattern.norm, nn.Identity())
        for name, child in list(parent.named_children()):
            path = f"{prefix}{name}"
            if path in conv.out.modules or path in conv.out.kept:
                continue
            module, why = replacement(child, path)
            if module is not None:
                setattr(parent, name, module)
            elif why is not None:
                conv.out.kept[path] = why
            else:
                visit(child, f"{path}.")

    visit(model, "")
    return conv.out


def _shared_parameters(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for p in module.parameters(recurse=False):
            seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, n in seen.items() if n > 1}


# torchao's float8 auto-filter for per-tensor scaling (torchao/float8/float8_linear_utils.py,
# _auto_filter_for_tensorwise), from its H100 microbenchmarks of a linear's forward + backward
# against bf16: at out_features <= 4096 and in_features <= 1024 the casts cost more than the FP8
# GEMMs save. The lab's own records agree in direction (ViT-L/16, d 1024, training: FP8 0.73x bf16,
# runs 76a3ffbb / 3acb80a5, one H100, 2026-11-26, docs/measurements/2026-11-26-families) but do
# not calibrate the threshold.
SMALL_GEMM_MAX_IN, SMALL_GEMM_MAX_OUT = 1024, 4096


def small_gemm(linear: nn.Linear) -> str | None:
    """Why this linear is too small for FP8 to gain, or None."""
    if linear.in_features <= SMALL_GEMM_MAX_IN and linear.out_features <= SMALL_GEMM_MAX_OUT:
        return (
            f"{linear.in_features}x{linear.out_features}: too small for FP8 to gain (in_features <= "
            f"{SMALL_GEMM_MAX_IN} and out_features <= {SMALL_GEMM_MAX_OUT}, torchao's per-tensor rule from H100 "
            "benchmarks; precision.small_gemms=fp8 converts it)"
        )
    return None


def _why_not(linear: nn.Linear, path: str, skipped, tied: set[int]):
    """Why this linear layer stays in high precision, or None when it converts."""
    if skipped(path):
        return "skipped by precision.skip"
    if id(linear.weight) in tied:
        return "weight tied to another module (the embedding)"
    if not _aligned(linear.in_features, linear.out_features):
        return f"{linear.in_features}x{linear.out_features} is not a multiple of {FP8_ALIGN} (FP8 GEMM alignment)"
    return None


def _inside(name: str, paths) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in paths for i in range(1, len(parts)))


def plain_state_dict(model: nn.Module, conversion: Conversion) -> dict:
    """The converted model's weights under the model's own parameter names (TE's FP8 metadata dropped)."""
    state = model.state_dict()
    out = {own: torch.stack([state[n] for n in parts]) for own, parts in conversion.stacks.items()}
    stacked = {n for parts in conversion.stacks.values() for n in parts}
    for name, tensor in state.items():
        if name in stacked:
            continue
        if name in conversion.names:
            out[conversion.names[name]] = tensor
        elif not _inside(name, conversion.modules):  # TE's own extras (FP8 metadata, a zero norm bias) go
            out[name] = tensor
    return out
