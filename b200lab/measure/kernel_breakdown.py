"""Where a step's GPU time goes: the kernels of a torch.profiler Chrome trace, summed by kind.

Kinds come from kernel names (first match wins): FP8/bf16 GEMMs (cuBLAS, cuBLASLt, CUTLASS,
Transformer Engine), attention (flash, cuDNN fused attention), FP8 casts and transposes, norms,
the optimizer, communication (NCCL), and everything else elementwise. Times are summed kernel
durations per profiled step; kernels on different streams may overlap, so the shares are of
kernel time, not of wall time.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

KINDS: list[tuple[str, str]] = [
    ("communication", r"nccl"),
    ("attention", r"flash|fmha|attn|attention|cudnn_generated_fort_native_sdpa|sdpa"),
    ("gemm", r"gemm|sm\d+_xmma|cutlass|nvjet|cublas|wgmma|matmul|_mm_"),
    # "cast" but not ATen's plain copies (gpu_kernel_impl_nocast, LoadWithCast): those are bf16 copies
    ("fp8 cast/transpose", r"(?<!no)(?<!with)cast|transpose|quantize|amax|fp8|scale"),
    ("norm", r"norm"),
    ("optimizer", r"adam|multi_tensor|foreach|optimizer"),
    ("loss", r"cross_entropy|log_softmax|nll_loss"),
]


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, pattern in KINDS:
        if re.search(pattern, low):
            return kind
    return "other elementwise / copies"


STEP_ANNOTATION = "b200lab_step"  # the record_function each profiled step runs under (b200lab/runner/profiling.py)


def _events(trace_path: Path) -> list[dict]:
    opener = gzip.open if trace_path.suffix == ".gz" else open
    with opener(trace_path, "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X"]


def breakdown(trace_path: Path, steps: int) -> list[dict]:
    """Rows of (kind, ms per step, share of kernel time, kernel count per step), largest first.
    Per step means over the steps the trace holds: its ``b200lab_step`` ranges when it has them
    (a trace can hold one more step than the schedule's active ones), else ``steps``."""
    events = _events(trace_path)
    marked = sum(
        1 for e in events if e.get("name") == STEP_ANNOTATION and e.get("cat") in ("user_annotation", "cpu_op")
    )
    steps = marked or steps
    totals: dict[str, list[float]] = {}
    for e in (e for e in events if e.get("cat") == "kernel"):
        entry = totals.setdefault(kind_of(e.get("name", "")), [0.0, 0])
        entry[0] += float(e.get("dur", 0.0)) / 1e3  # trace durations are in microseconds
        entry[1] += 1
    grand = sum(ms for ms, _ in totals.values()) or 1.0
    rows = [
        {"kind": k, "ms_per_step": ms / steps, "share": ms / grand, "kernels_per_step": n / steps}
        for k, (ms, n) in totals.items()
    ]
    return sorted(rows, key=lambda r: -r["ms_per_step"])


def write_breakdown(trace_path: Path, steps: int, out_csv: Path) -> list[dict]:
    rows = breakdown(trace_path, steps)
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["kind", "ms_per_step", "share", "kernels_per_step"])
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    return rows
