"""FP8 (and FP4) training and inference through NVIDIA Transformer Engine.

``precision=fp8`` converts the model's layers to TE modules (b200lab/precision/te_convert.py:
fused norm + projection, fused norm + MLP, plain linears) with bf16 parameters, and runs each
forward inside ``te.autocast`` with the recipe ``precision.recipe`` names:

    delayed  DelayedScaling        per-tensor scales from an amax history (TE's default on Hopper)
    current  Float8CurrentScaling  per-tensor scales from the tensor being cast
    block    Float8BlockScaling    1x128 / 128x128 block scales (Hopper+, CUDA >= 12.9)
    mxfp8    MXFP8BlockScaling     32-element blocks with E8M0 scales (Blackwell)
    nvfp4    NVFP4BlockScaling     4-bit floats in 16-element blocks (Blackwell)

Whatever the card or installation lacks is refused at validation with the reason (exit 2);
``precision=fp8_auto`` falls back instead. Training keeps float32 master weights unless
``master_dtype: none``. MFU is against the card's FP8 peak, with the bf16-peak ratio beside it.
The attention core (``attention=...``), the embedding and anything the converter keeps (listed
in ``effective.high_precision`` with the reason) run in bf16. With ``compile``, everything
between the TE modules (rotary, attention, residuals, the loss) is compiled: TE's modules and its
autocast stay out of the graph (TE marks them so; :class:`FP8Region` enters the autocast in an
eager frame), so the compiled model has a graph break at each TE module and cannot be fullgraph.
"""

from __future__ import annotations

import torch

from b200lab.precision.availability import TE_RECIPES, expert_path, te_version
from b200lab.precision.base import PrecisionRecipe, unwrap
from b200lab.precision.config.te_fp8 import TEFP8Config
from b200lab.precision.te_support import import_te, te_says


class TEFP8Precision(PrecisionRecipe):
    Config = TEFP8Config
    param_dtype = torch.bfloat16
    compute_dtype = torch.bfloat16  # activations between the FP8 GEMMs
    peak_key = "fp8"
    extra_peak_keys = ("bf16",)

    def __init__(self, cfg, device: str, training: bool):
        super().__init__(cfg, device, training)
        te = import_te()
        ok, reason = te_says(cfg.recipe)
        if not ok:
            raise RuntimeError(f"precision.recipe={cfg.recipe}: Transformer Engine says it cannot run here: {reason}")
        self.te = te
        self.te_recipe = _build_recipe(cfg)
        master = str(cfg.master_dtype).lower()
        self.master_dtype = torch.float32 if training and master in ("auto", "float32") else None
        self.conversion = None
        self.effective = {
            "name": cfg.name,
            "library": f"transformer_engine {te_version()}",
            "recipe": cfg.recipe,
            "te_recipe": repr(self.te_recipe),
            "compute_dtype": "fp8" if cfg.recipe != "nvfp4" else "fp4",
            "param_dtype": "bfloat16",
            "master_dtype": "float32" if self.master_dtype is not None else None,
            "reason": None,
        }
        if cfg.recipe == "nvfp4":
            self.peak_key = "fp4"

    def convert(self, model: torch.nn.Module) -> torch.nn.Module:
        from b200lab.precision.te_convert import convert_model

        model = model.to(torch.bfloat16)
        device = next(model.parameters()).device
        experts, passed_over = self.experts_path(device)
        self.conversion = convert_model(
            model,
            self.te,
            torch.bfloat16,
            device,
            tuple(self.cfg.skip),
            self.patterns,
            experts,
            keep_small=self.cfg.small_gemms == "bf16",
        )
        in_fp8 = sum(
            p.numel()
            for path in self.conversion.modules
            for name, p in model.get_submodule(path).named_parameters()
            if "bias" not in name and "layer_norm" not in name
        )
        self.effective.update(
            params_in_fp8_gemms=in_fp8,
            params_elsewhere=sum(p.numel() for p in model.parameters())
            - in_fp8,  # embeddings, norms, and e.g. MoE experts
            fp8_modules=self.conversion.counts(),
            fp8_module_paths=sorted(self.conversion.modules),
            high_precision={
                **self.conversion.kept,
                "attention core": "the attention backend (bf16)",
                "embedding": "a lookup, no GEMM",
            },
        )
        ran = sorted(set(self.conversion.experts.values()))
        if ran:
            self.effective["moe_experts"] = {
                "setting": self.cfg.moe_experts,
                "ran": ",".join(ran),
                "kernel": "; ".join(expert_kernel(path) for path in ran),
                "reason": passed_over,
            }
        return FP8Region(model, self.te, self.te_recipe)

    def experts_path(self, device: torch.device) -> tuple[str, str | None]:
        """How a mixture's experts run here (b200lab/precision/availability.py's ``expert_path``, on
        the capability CUDA reports), and why ``auto`` passed over the rowwise path."""
        if device.type != "cuda":
            capability, name = None, str(device)
        else:
            capability, name = torch.cuda.get_device_capability(device), torch.cuda.get_device_name(device)
        lacking = torch_version_lacking_kernel()
        path, why = expert_path(
            self.cfg.moe_experts, capability, name, lacking, compiled=bool(self.cfg.get("compiled_model"))
        )
        if path == "rowwise" and lacking:
            raise RuntimeError(f"precision.moe_experts=rowwise: torch {lacking} has no torch._scaled_grouped_mm")
        return path, why

    def master_weights(self, model: torch.nn.Module, compile: bool = False):
        if self.master_dtype is None:
            return None
        from b200lab.precision.master import MasterWeights

        return MasterWeights(model.parameters(), self.master_dtype, self.master_dtype, compile=False)

    def plain_state_dict(self, model: torch.nn.Module) -> dict:
        from b200lab.precision.te_convert import plain_state_dict

        return plain_state_dict(unwrap(model), self.conversion)


def torch_version_lacking_kernel() -> str | None:
    """torch's version when it has no ``torch._scaled_grouped_mm`` (before 2.8), else None."""
    return None if hasattr(torch, "_scaled_grouped_mm") else torch.__version__


def expert_kernel(path: str) -> str:
    """What runs a mixture's experts on ``path`` (te | rowwise | bf16)."""
    from b200lab.precision.fp8_grouped import RowwiseFP8Experts
    from b200lab.precision.te_convert import TEExperts

    return {"rowwise": RowwiseFP8Experts.kernel, "te": TEExperts.kernel}.get(path, "torch._grouped_mm (bf16)")


class FP8Region(torch.nn.Module):
    """The converted model, run inside ``te.autocast``. This frame stays out of torch.compile
    (TE's autocast cannot be traced, and DelayedScaling refuses compiled regions); the model's
    own frames inside it are compiled as usual. Attributes the model has (``prepare``, ``cfg``,
    ``new_cache``) read through."""

    def __init__(self, module: torch.nn.Module, te, recipe):
        super().__init__()
        self.module = module
        self._te, self._recipe = te, recipe

    @torch.compiler.disable(recursive=False)
    def forward(self, *args, **kwargs):
        with self._te.autocast(enabled=True, recipe=self._recipe):
            return self.module(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _build_recipe(cfg):
    from transformer_engine.common import recipe as te_recipe

    cls = getattr(te_recipe, TE_RECIPES[cfg.recipe])
    kwargs = {}
    if cfg.fp8_format != "auto":
        kwargs["fp8_format"] = {"hybrid": te_recipe.Format.HYBRID, "e4m3": te_recipe.Format.E4M3}[cfg.fp8_format]
    if cfg.recipe == "delayed":
        kwargs.update(amax_history_len=int(cfg.amax_history_len), amax_compute_algo=cfg.amax_compute_algo)
    return cls(**kwargs)
