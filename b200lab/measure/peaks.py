"""Dense (non-sparse) peak TFLOP/s per GPU and compute dtype, from NVIDIA's datasheets.

MFU is achieved model TFLOP/s over the peak of the dtype the matmuls ran in, on the card that
ran them. A card or dtype not in this table gets no MFU and a reason, never a guess. Boost-clock
figures: a card held at lower clocks (power, thermals) cannot reach them.
"""

from __future__ import annotations

import re

# name pattern (checked in order, as a whole word: "GH200" is not an "H200") -> {dtype: dense TFLOP/s}
PEAKS: list[tuple[str, str, dict[str, float]]] = [
    (r"GB200", "GB200 (per GPU)", {"bf16": 2500.0, "fp16": 2500.0, "tf32": 1250.0, "fp8": 5000.0}),
    (r"B300", "B300", {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1100.0, "fp8": 4500.0}),
    (r"B200", "B200", {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1100.0, "fp8": 4500.0}),
    (r"H200 NVL", "H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp8": 1670.5, "fp32": 60.0}),
    (r"H200", "H200 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp8": 1978.9, "fp32": 66.9}),
    (r"H100 NVL", "H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp8": 1670.5, "fp32": 60.0}),
    (r"H100 PCIe", "H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp8": 1513.0, "fp32": 51.2}),
    (r"H100", "H100 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp8": 1978.9, "fp32": 66.9}),
]

DTYPE_KEYS = {"bfloat16": "bf16", "float16": "fp16", "tf32": "tf32", "float32": "fp32", "float64": "fp64", "fp8": "fp8"}


def lookup(gpu_name: str | None, dtype: str) -> tuple[float | None, str]:
    """(peak TFLOP/s, explanation). Peak is None when unknown; the explanation says why."""
    key = DTYPE_KEYS.get(dtype, dtype)
    if not gpu_name:
        return None, "no GPU: MFU is defined against a GPU's datasheet peak"
    for pattern, label, table in PEAKS:
        if re.search(rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])", gpu_name):
            if key in table:
                return table[key], f"{label} dense {key} peak {table[key]:g} TFLOP/s (datasheet)"
            return None, f"{label}: no datasheet {key} peak in b200lab/measure/peaks.py"
    return None, f"unknown GPU {gpu_name!r}: add its peaks to b200lab/measure/peaks.py"
