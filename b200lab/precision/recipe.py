"""Which dtype each part of a run uses, resolved from the precision config.

Four choices, each ``auto`` by default:

- ``compute_dtype``: what matmuls run in. auto: bfloat16 on CUDA, float32 on CPU.
- ``param_dtype``: the dtype of the weights forward and backward read. auto: the compute dtype,
  so a bf16 run has bf16 weights, bf16 activations and no per-step weight casts.
- ``master_dtype``: training keeps float32 master weights for 16-bit parameters, and the
  optimizer (with its state) works on those (Megatron-LM's and torchtitan's recipe). ``none``
  trains the 16-bit weights directly.
- ``grad_accum_dtype``: the dtype micro-batch gradients are summed in. auto: the master dtype,
  so rounding does not grow with the number of micro-batches.

``param_dtype=float32`` with a 16-bit compute dtype gives the autocast recipe (float32 weights,
matmuls under ``torch.autocast``), as nanoGPT trains. Pure strings in, pure strings out: config
validation calls this without touching torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SIXTEEN_BIT = ("bfloat16", "float16")
WIDTH = {"float64": 64, "float32": 32, "bfloat16": 16, "float16": 16}
COMPUTE_DTYPES = ("auto", "float64", "float32", "tf32", "bfloat16", "float16")
PARAM_DTYPES = ("auto", "float64", "float32", "bfloat16", "float16")
MASTER_DTYPES = ("auto", "none", "float32")
GRAD_ACCUM_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class Recipe:
    compute: str  # float64 | float32 | bfloat16 | float16 (tf32 is float32 with ``tf32``)
    tf32: bool
    param: str
    master: str | None
    grad_accum: str
    autocast: bool
    reasons: list[str] = field(default_factory=list)


def _is_none(value) -> bool:
    return value is None or str(value).lower() in ("none", "null")


def resolve(pcfg, device: str, training: bool) -> Recipe:
    """Raise ValueError naming the keys when the combination cannot run as asked."""
    reasons: list[str] = []
    requested = pcfg.compute_dtype
    if str(requested).lower().startswith(("fp8", "float8", "e4m3", "e5m2", "nvfp4", "mxfp")):
        raise ValueError(
            f"precision.compute_dtype={requested!r}: the autocast recipe runs float dtypes only; "
            "FP8 needs an FP8 recipe class (Transformer Engine, not built yet); "
            "workload=gemm workload.options.dtype=fp8 measures FP8 GEMMs today"
        )
    if requested not in COMPUTE_DTYPES:
        raise ValueError(f"precision.compute_dtype={requested!r}: choose one of {', '.join(COMPUTE_DTYPES)}")
    compute = requested
    if requested == "auto":
        compute = "bfloat16" if device == "cuda" else "float32"
        reasons.append(f"auto on {device} means {compute}")
    tf32 = compute == "tf32"
    if tf32:
        compute = "float32"
        if device != "cuda":
            tf32 = False
            reasons.append("tf32 is a CUDA matmul mode; on CPU the matmuls ran in plain float32")

    param = pcfg.param_dtype
    if param not in PARAM_DTYPES:
        raise ValueError(f"precision.param_dtype={param!r}: choose one of {', '.join(PARAM_DTYPES)}")
    if param == "auto":
        param = compute
    if WIDTH[param] < WIDTH[compute]:
        raise ValueError(
            f"precision.param_dtype={param} is narrower than precision.compute_dtype={compute}: "
            f"the matmuls would run in {param}"
        )

    master_req = pcfg.get("master_dtype", "auto")
    master_req = "none" if _is_none(master_req) else master_req
    if master_req not in MASTER_DTYPES:
        raise ValueError(f"precision.master_dtype={master_req!r}: choose one of {', '.join(MASTER_DTYPES)}")
    master = None
    if training and param in SIXTEEN_BIT and master_req != "none":
        master = "float32"
    elif master_req == "float32" and not training:
        reasons.append("master weights are a training recipe; this workload has no optimizer")
    elif master_req == "float32":
        reasons.append(f"no master copy: the weights are already {param}")

    accum = pcfg.get("grad_accum_dtype", "auto")
    if accum not in GRAD_ACCUM_DTYPES:
        raise ValueError(f"precision.grad_accum_dtype={accum!r}: choose one of {', '.join(GRAD_ACCUM_DTYPES)}")
    if accum == "auto":
        accum = master or param
    elif training and accum not in (param, master):
        raise ValueError(
            f"precision.grad_accum_dtype={accum} needs the parameters or their master copy in {accum} "
            f"(here precision.param_dtype={param}, master weights {master or 'none'}): autograd sums "
            "gradients in the parameter dtype"
        )
    return Recipe(compute, tf32, param, master, accum, compute in SIXTEEN_BIT and param != compute, reasons)
