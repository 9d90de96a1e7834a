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


def profiled_steps(events: list[dict], steps: int) -> int:
    """The steps a trace holds: its ``b200lab_step`` ranges when it has them, else ``steps``."""
    marked = sum(
        1 for e in events if e.get("name") == STEP_ANNOTATION and e.get("cat") in ("user_annotation", "cpu_op")
    )
    return marked or steps


def breakdown(trace_path: Path, steps: int) -> list[dict]:
    """Rows of (kind, ms per step, share of kernel time, kernel count per step), largest first.
    Per step means over the steps the trace holds: its ``b200lab_step`` ranges when it has them
    (a trace can hold one more step than the schedule's active ones), else ``steps``."""
    events = _events(trace_path)
    steps = profiled_steps(events, steps)
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


PERFETTO = (
    "Open {trace} in https://ui.perfetto.dev (drag the file onto the page; .json.gz opens as is) or "
    "chrome://tracing; each profiled step is a `b200lab_step` range."
)


def write_trace_notes(trace_path: Path, rows: list[dict], steps: int) -> list[Path]:
    """A note beside a trace (``trace_rank0.md``: how to open it, where its kernel time goes) and,
    when the trace has GPU kernels, a bar chart of the breakdown (``trace_rank0_kernels.png``):
    what MLflow's artifact view can show, since it cannot open the trace itself. One pair per
    trace, so ranks never write the same file. Returns the files written."""
    folder = trace_path.parent
    stem = trace_path.name.split(".")[0]
    readme = folder / f"{stem}.md"
    lines = [f"# {trace_path.name}", "", PERFETTO.format(trace=trace_path.name), ""]
    if rows:
        steps = profiled_steps(_events(trace_path), steps)  # the count the breakdown divided by
        lines += [
            f"GPU kernel time per step over {steps} profiled steps (kernels on different streams may overlap: "
            "shares are of kernel time, not of wall time):",
            "",
            "| kind | ms per step | share | kernels per step |",
            "| --- | ---: | ---: | ---: |",
            *(
                f"| {r['kind']} | {r['ms_per_step']:.3f} | {r['share']:.1%} | {r['kernels_per_step']:.1f} |"
                for r in rows
            ),
        ]
    else:
        lines.append("No GPU kernels in this trace (a CPU run): its host operators are in the trace itself.")
    readme.write_text("\n".join(lines) + "\n")
    return [readme, _chart(rows, folder / f"{stem}_kernels.png", trace_path.name)] if rows else [readme]


def _chart(rows: list[dict], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    kinds = [r["kind"] for r in rows][::-1]
    values = [r["ms_per_step"] for r in rows][::-1]
    ax.barh(kinds, values, color="#3b75af")
    for y, (value, row) in enumerate(zip(values, rows[::-1])):
        ax.text(value, y, f" {value:.2f} ms ({row['share']:.0%})", va="center", fontsize=8)
    ax.set_xlabel("GPU kernel time per step (ms)")
    ax.set_title(f"{title}: where the kernel time goes", fontsize=10)
    ax.set_xlim(0, max(values) * 1.3 or 1)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
