"""Collective bandwidth across the job's ranks (NCCL on GPU, gloo on CPU): all-reduce (sum),
all-gather and reduce-scatter, with nccl-tests' definitions.

``size`` is nccl-tests' message size: the all-reduce buffer, the all-gather *output* (each rank
sends size / n), the reduce-scatter *input* (each rank keeps size / n). algbw = size / time;
busbw = algbw x 2 (n - 1) / n for all-reduce and algbw x (n - 1) / n for the other two: the
traffic per link of a ring, comparable across rank counts.

The timed steps run one collective of ``options.max_bytes`` (the headline
``<op>_busbw_gbps``). After them, a size sweep from ``min_bytes`` to ``max_bytes`` (x ``factor``)
times ``sweep_iters`` collectives per size (after ``sweep_warmup``), takes each rank's median
and the slowest rank's, and reports the curve ``<op>_busbw_gbps_by_size`` (MLflow step = bytes)
plus ``comms_<op>.csv`` and ``comms_<op>.png`` (bus bandwidth against message size). Each
collective's result is checked once against the expected values. NVLink SHARP multicast is off
(NCCL_NVLS_ENABLE=0, set by b200lab/runner/launch.py) and the value is recorded.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from b200lab.workloads.base import Workload
from b200lab.workloads.config.comms import CommsConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def bus_factor(op: str, n: int) -> float:
    return 2 * (n - 1) / n if op == "all_reduce" else (n - 1) / n


def metric_prefix(op: str) -> str:
    return op.replace("_", "")  # allreduce_busbw_gbps, allgather_..., reducescatter_...


class Collective:
    """The buffers and the call of one collective of ``size`` bytes on ``n`` ranks."""

    def __init__(self, op: str, size: int, dtype: torch.dtype, n: int, rank: int, device, generator=None):
        elt = torch.tensor([], dtype=dtype).element_size()
        count = max(n, size // elt // n * n)  # divisible by the ranks, as nccl-tests rounds
        self.op, self.n, self.rank, self.size_bytes = op, n, rank, count * elt
        make = (
            (lambda k: torch.rand(k, device=device, generator=generator).to(dtype))
            if generator is not None
            else (lambda k: torch.empty(k, dtype=dtype, device=device))
        )
        if op == "all_reduce":
            self.inp = self.out = make(count)
        elif op == "all_gather":
            self.inp, self.out = make(count // n), torch.empty(count, dtype=dtype, device=device)
        else:
            self.inp, self.out = make(count), torch.empty(count // n, dtype=dtype, device=device)

    def __call__(self) -> None:
        if self.op == "all_reduce":
            dist.all_reduce(self.out)
        elif self.op == "all_gather":
            dist.all_gather_into_tensor(self.out, self.inp)
        else:
            dist.reduce_scatter_tensor(self.out, self.inp)

    def check(self) -> None:
        """Rank r contributes r + 1 everywhere; compare with what each collective must return."""
        n = self.n
        self.inp.fill_(self.rank + 1)
        self()
        if self.op == "all_gather":
            expected = torch.arange(1, n + 1, device=self.out.device, dtype=self.out.dtype).repeat_interleave(
                self.out.numel() // n
            )
        else:
            expected = torch.full_like(self.out, n * (n + 1) / 2)
        if not torch.equal(self.out, expected):
            bad = (self.out != expected).nonzero()[0].item()
            raise RuntimeError(
                f"{self.op} returned {self.out[bad].item()} at element {bad}, expected {expected[bad].item()}"
            )


class Comms(Workload):
    Config = CommsConfig

    @property
    def op(self) -> str:
        return self.options.op

    @property
    def metric_rules(self) -> dict:  # the slowest rank's bandwidth is the job's
        p = metric_prefix(self.op)
        return {f"{p}_busbw_gbps": "min", f"{p}_algbw_gbps": "min", f"{p}_busbw_gbps_by_size": "min"}

    def message(self) -> tuple[int, torch.dtype]:
        """(bytes, dtype) of the timed steps' collective."""
        return int(self.options.max_bytes), DTYPES[self.options.dtype]

    def sweep_sizes(self) -> list[int]:
        o = self.options
        if o.min_bytes is None:
            return []
        sizes, s = [], int(o.min_bytes)
        while s < o.max_bytes:
            sizes.append(s)
            s *= int(o.factor)
        return sizes + [int(o.max_bytes)]

    def setup(self) -> None:
        if self.ctx.world_size < 2:
            raise RuntimeError(f"workload={self.cfg.name} needs parallelism.nproc >= 2")
        size, self.dtype = self.message()
        ctx = self.ctx
        Collective(self.op, 4 * ctx.world_size * 4, self.dtype, ctx.world_size, ctx.rank, ctx.device).check()
        self.collective = Collective(self.op, size, self.dtype, ctx.world_size, ctx.rank, ctx.device, ctx.generator())
        self.curve: list[list[float]] = []
        self.effective = {
            "op": self.op,
            "size_bytes": self.collective.size_bytes,
            "dtype": str(self.dtype).removeprefix("torch."),
            "backend": dist.get_backend(),
            "ranks": ctx.world_size,
            "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE"),
        }

    def step(self) -> None:
        self.collective()

    def after_timing(self) -> None:
        """The size sweep, outside the step times; the slowest rank's median per size."""
        from b200lab.measure.timing import time_steps

        sizes = self.sweep_sizes()
        if not sizes:
            return
        ctx, o = self.ctx, self.options
        medians = []
        for size in sizes:
            coll = Collective(self.op, size, self.dtype, ctx.world_size, ctx.rank, ctx.device, ctx.generator())
            t = time_steps(coll, ctx.device, int(o.sweep_warmup), int(o.sweep_iters))
            medians.append([coll.size_bytes, float(torch.tensor(t.step_ms).median())])
        slowest = torch.tensor([m[1] for m in medians], dtype=torch.float64, device=ctx.device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        factor = bus_factor(self.op, ctx.world_size)
        self.curve = [[size, size / (ms / 1e3) / 1e9 * factor] for (size, _), ms in zip(medians, slowest.tolist())]

    def metrics(self, stats: dict) -> dict:
        if not stats.get("n_steps"):
            return {}
        p = metric_prefix(self.op)
        algbw = self.collective.size_bytes / (stats["step_ms_p50"] / 1e3) / 1e9
        return {f"{p}_algbw_gbps": algbw, f"{p}_busbw_gbps": algbw * bus_factor(self.op, self.ctx.world_size)}

    def curves(self) -> dict:
        return {f"{metric_prefix(self.op)}_busbw_gbps_by_size": self.curve} if self.curve else {}

    def write_artifacts(self, out_dir) -> None:
        if not self.curve:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"comms_{self.op}"
        rows = ["size_bytes,busbw_gbps"] + [f"{int(s)},{bw:.6g}" for s, bw in self.curve]
        stem.with_suffix(".csv").write_text("\n".join(rows) + "\n")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([s for s, _ in self.curve], [bw for _, bw in self.curve], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("message size (bytes, nccl-tests' definition)")
        ax.set_ylabel("bus bandwidth (GB/s)")
        e = self.effective
        ax.set_title(f"{self.op}: {e['ranks']} ranks, {e['backend']}, {e['dtype']}")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=120)
        plt.close(fig)
