"""Profilers around a job: torch.profiler traces and CUDA memory snapshots inside the worker;
Nsight Systems and Nsight Compute as a prefix to the torchrun command (parent side).

``profile=ncu`` profiles the kernels of the timed steps only (the worker brackets them with
cudaProfilerStart/Stop and ncu runs with ``--profile-from-start off``), leaves the clocks alone
(``--clock-control none``) and turns ncu's CSV into a per-kernel table: time, achieved DRAM
throughput, tensor-pipe utilisation and achieved occupancy, top kernels first. Kernels under
ncu are serialised and replayed, so a profiled job's step times are not comparable; its
results say so.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
from collections import defaultdict
from pathlib import Path

from b200lab.core.machine import require_profiler

NCU_BASE_METRICS = {
    "gpu__time_duration.sum": "time_ns",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram_pct_of_peak",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "achieved_occupancy_pct",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed": "sm_pct_of_peak",
}
TENSOR_PIPES = ["sm__pipe_tensor_op_gmma_cycles_active", "sm__pipe_tensor_op_hmma_cycles_active"]


def ncu_metrics(ncu: str) -> dict[str, str]:
    """The metrics to collect, with tensor-pipe names taken from what this ncu and GPU offer."""
    listed = subprocess.run([ncu, "--query-metrics"], capture_output=True, text=True, timeout=120).stdout
    names = set(re.findall(r"^(\S+)", listed, flags=re.M))
    metrics = dict(NCU_BASE_METRICS)
    for pipe in TENSOR_PIPES:
        if pipe in names:
            metrics[f"{pipe}.avg.pct_of_peak_sustained_active"] = (
                pipe.replace("sm__pipe_", "").replace("_cycles_active", "") + "_pct"
            )
    return metrics


def command_prefix(profile, job_dir: Path) -> tuple[list[str], dict]:
    """(argv prefix for torchrun, notes for results.json)."""
    name = profile.name
    if name == "nsys":
        nsys = require_profiler("nsys")
        out = job_dir / "nsys_report"
        return [
            nsys,
            "profile",
            "-o",
            str(out),
            "--force-overwrite",
            "true",
            "--trace",
            "cuda,nvtx,osrt",
            "--capture-range",
            "none",
        ], {"nsys_report": f"{out}.nsys-rep"}
    if name == "ncu":
        ncu = require_profiler("ncu")
        metrics = ncu_metrics(ncu)
        limit = int(profile.options.get("launch_count", 4000))
        return [
            ncu,
            "--clock-control",
            "none",
            "--target-processes",
            "all",
            "--profile-from-start",
            "off",
            "--launch-count",
            str(limit),
            "--metrics",
            ",".join(metrics),
            "--csv",
            "--log-file",
            str(job_dir / "ncu_raw.csv"),
        ], {"ncu_metrics": metrics, "timing_comparable": False}
    return [], {}


def ncu_table(raw_csv: Path, metrics: dict[str, str], top: int = 15) -> list[dict]:
    """Per kernel name: launches, total time, time-weighted means of the percentage metrics."""
    text = raw_csv.read_text(errors="replace")
    start = text.find('"ID"')
    if start < 0:
        return []
    per_kernel: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    launches: dict[tuple, dict] = defaultdict(dict)
    for row in csv.DictReader(io.StringIO(text[start:])):
        metric = metrics.get(row.get("Metric Name", ""))
        if metric is None:
            continue
        try:
            value = float(row["Metric Value"].replace(",", ""))
        except (ValueError, KeyError):
            continue
        if row.get("Metric Unit") in ("usecond", "us"):
            value *= 1e3
        elif row.get("Metric Unit") in ("msecond", "ms"):
            value *= 1e6
        launches[(row["ID"], row["Kernel Name"])][metric] = value
    for (_, kernel), values in launches.items():
        k = per_kernel[kernel]
        t = values.get("time_ns", 0.0)
        k["launches"] += 1
        k["time_ns"] += t
        for metric, value in values.items():
            if metric != "time_ns":
                k[metric] += value * t
    total = sum(k["time_ns"] for k in per_kernel.values()) or 1.0
    rows = []
    for kernel, k in per_kernel.items():
        t = k["time_ns"] or 1.0
        row = {
            "kernel": kernel[:200],
            "launches": int(k["launches"]),
            "time_ms": k["time_ns"] / 1e6,
            "time_share": k["time_ns"] / total,
        }
        row.update({m: k[m] / t for m in set(metrics.values()) - {"time_ns"} if m in k})
        rows.append(row)
    return sorted(rows, key=lambda r: r["time_ms"], reverse=True)[:top]


def write_table(rows: list[dict], path: Path) -> Path | None:
    if not rows:
        return None
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


class WorkerProfiler:
    """In-rank profiling: torch.profiler over extra steps after the timed ones (so the trace's
    overhead never touches the timed numbers), a CUDA memory snapshot, and the profiler range
    that ncu/nsys capture."""

    def __init__(self, profile, device, job_dir: Path, rank: int):
        self.cfg, self.device, self.job_dir, self.rank = profile, device, job_dir, rank
        self.notes: dict = {}
        self.memory = bool(profile.get("memory", False))
        if self.memory and device.type == "cuda":
            import torch

            torch.cuda.memory._record_memory_history(max_entries=int(profile.options.get("memory_entries", 200000)))
        elif self.memory:
            self.notes["memory_snapshot"] = "not taken: CUDA memory snapshots need a CUDA device"

    def region_start(self) -> None:
        if self.cfg.name in ("ncu", "nsys") and self.device.type == "cuda":
            import torch

            torch.cuda.cudart().cudaProfilerStart()

    def region_end(self) -> None:
        if self.cfg.name in ("ncu", "nsys") and self.device.type == "cuda":
            import torch

            torch.cuda.cudart().cudaProfilerStop()

    def after_timing(self, step) -> None:
        import torch

        if self.cfg.name == "torch":
            opts = self.cfg.options
            wait, warmup, active = int(opts.get("wait", 1)), int(opts.get("warmup", 1)), int(opts.get("active", 3))
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            out = self.job_dir / "traces" / f"trace_rank{self.rank}.json.gz"
            out.parent.mkdir(parents=True, exist_ok=True)
            schedule = torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1)
            with torch.profiler.profile(
                activities=activities, schedule=schedule, on_trace_ready=lambda p: p.export_chrome_trace(str(out))
            ) as prof:
                for _ in range(wait + warmup + active):
                    with torch.profiler.record_function("b200lab_step"):
                        step()
                    if self.device.type == "cuda":  # the step's kernels end inside its window, not in the next one's
                        torch.cuda.synchronize(self.device)
                    prof.step()
            self.notes["torch_trace"] = str(out.relative_to(self.job_dir))
            self.notes["torch_trace_steps"] = active
            from b200lab.measure.kernel_breakdown import write_breakdown, write_trace_notes

            rows: list[dict] = []
            if self.device.type == "cuda":
                table = out.parent / f"kernel_breakdown_rank{self.rank}.csv"
                rows = write_breakdown(out, active, table)
                self.notes["kernel_breakdown"] = str(table.relative_to(self.job_dir))
                self.notes["kernel_ms_per_step"] = {r["kind"]: round(r["ms_per_step"], 3) for r in rows}
            write_trace_notes(out, rows, active)  # how to open the trace; the breakdown as a table and a chart
        if self.memory and self.device.type == "cuda":
            path = self.job_dir / "traces" / f"memory_snapshot_rank{self.rank}.pickle"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.cuda.memory._dump_snapshot(str(path))
            torch.cuda.memory._record_memory_history(enabled=None)
            self.notes["memory_snapshot"] = str(path.relative_to(self.job_dir)) + " (open at pytorch.org/memory_viz)"
