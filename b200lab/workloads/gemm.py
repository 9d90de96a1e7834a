"""Matrix-multiply throughput: the ceiling MFU is judged against.

One step is one ``(M, K) @ (K, N)`` product on random inputs (never zeros). ``gemm_tflops`` is
2 M N K over the median step time; ``gemm_tflops_fast`` uses the 10th-percentile step, the rate
before a power-capped card lowers its clocks under sustained load (the energy meter records the
SM clocks and limit reasons). ``dtype`` is bf16, fp16, tf32, fp32 or fp8 (e4m3 inputs through
``torch._scaled_mm`` with per-tensor scales, bf16 output: the FP8 tensor-core path, on GPUs that
have it). ``shape`` is ``MxNxK`` or ``auto``: 8192^3 on a GPU, 1024^3 on a CPU (where
8192^3 takes minutes a product).
"""

from __future__ import annotations

import torch

from b200lab.workloads.base import Workload
from b200lab.workloads.config.gemm import GemmConfig, parse_shape

FLOAT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32}


AUTO_SHAPE = {"cuda": "8192x8192x8192", "cpu": "1024x1024x1024"}
DTYPES = (*FLOAT_DTYPES, "fp8")


class Gemm(Workload):
    Config = GemmConfig
    metric_rules = {"gemm_tflops": "mean", "gemm_tflops_fast": "mean"}

    def setup(self) -> None:
        device = self.ctx.device
        self.dtype = str(self.options.dtype)
        shape = AUTO_SHAPE[device.type] if self.options.shape == "auto" else self.options.shape
        self.m, self.n, self.k = parse_shape(shape)
        g = self.ctx.generator()
        if self.dtype == "fp8":
            if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
                raise RuntimeError("workload.options.dtype=fp8 needs a CUDA GPU with FP8 tensor cores (sm_89 or newer)")
            a = torch.randn(self.m, self.k, device=device, generator=g)
            b = torch.randn(self.n, self.k, device=device, generator=g)
            self.scale_a = (a.abs().max() / 448.0).float()
            self.scale_b = (b.abs().max() / 448.0).float()
            self.a = (a / self.scale_a).to(torch.float8_e4m3fn)
            self.b = (b / self.scale_b).to(torch.float8_e4m3fn).t()  # column-major K x N, as cuBLASLt wants
            self.step = self._fp8_step
        elif self.dtype in FLOAT_DTYPES:
            if device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = self.dtype == "tf32"
            dt = FLOAT_DTYPES[self.dtype]
            self.a = torch.randn(self.m, self.k, device=device, generator=g).to(dt)
            self.b = torch.randn(self.k, self.n, device=device, generator=g).to(dt)
            self.step = self._float_step
        else:
            raise ValueError(f"workload.options.dtype={self.dtype!r}: choose {', '.join(DTYPES)}")
        self.flops_per_step = 2 * self.m * self.n * self.k
        self.effective = {
            "dtype": self.dtype,
            "shape": f"{self.m}x{self.n}x{self.k}",
            "peak_key": self.dtype,
            "path": "torch._scaled_mm" if self.dtype == "fp8" else "torch.matmul",
        }

    def _float_step(self) -> None:
        self.out = self.a @ self.b

    def _fp8_step(self) -> None:
        self.out = torch._scaled_mm(
            self.a, self.b, scale_a=self.scale_a, scale_b=self.scale_b, out_dtype=torch.bfloat16
        )

    def metrics(self, stats: dict) -> dict:
        if not stats.get("n_steps"):
            return {}
        return {
            "gemm_tflops": self.flops_per_step / (stats["step_ms_p50"] / 1e3) / 1e12,
            "gemm_tflops_fast": self.flops_per_step / (stats["step_ms_p10"] / 1e3) / 1e12,
        }
