"""GPU energy over the timed region, from NVML.

Primary: the total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since
driver load, Volta and newer) read at the start and end of the timed region. Cross-check and
fallback: power samples (``nvmlDeviceGetPowerUsage``) taken every ``interval_s`` on a thread,
integrated with the trapezoid rule. Both are reported; ``energy_method`` names the one that
``energy_j`` came from. Without NVML nothing is reported except the reason.
"""

from __future__ import annotations

import csv
import os
import threading
import time
from pathlib import Path

MIN_REGION_S = 1.0


def nvml_handle(device) -> tuple[object | None, str | None]:
    """NVML handle of a torch CUDA device (matched by UUID, so CUDA_VISIBLE_DEVICES is honoured)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:
        return None, f"NVML unavailable ({type(exc).__name__}: {exc})"
    if getattr(device, "type", None) != "cuda":
        return None, "not a CUDA device: NVML measures GPUs only"
    import torch

    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"), None
    except (pynvml.NVMLError, AttributeError, RuntimeError) as exc:
        if os.environ.get("CUDA_VISIBLE_DEVICES"):  # an index would name the wrong GPU
            return None, f"cannot match {device} to an NVML device by UUID ({exc}) while CUDA_VISIBLE_DEVICES is set"
        return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0), None


class EnergyMeter:
    """Energy of one GPU over a region: ``EnergyMeter(device)`` for a torch device, or
    ``EnergyMeter(handle=...)`` for an NVML handle."""

    def __init__(self, device=None, interval_s: float = 0.01, handle=None):
        if handle is not None:
            self.handle, self.unavailable = handle, None
        else:
            self.handle, self.unavailable = nvml_handle(device)
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, watts)
        self.clocks: list[int] = []  # SM clock (MHz) at each sample
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counter0: int | None = None
        self.counter_error: str | None = None

    def _read_counter(self) -> int | None:
        import pynvml

        try:
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except pynvml.NVMLError as exc:
            self.counter_error = f"energy counter unsupported ({exc})"
            return None

    def _sample(self) -> None:
        import pynvml

        t0 = self._t0
        while not self._stop.is_set():
            try:  # read both before keeping either, so samples and clocks stay row-aligned
                watts = pynvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3
                mhz = pynvml.nvmlDeviceGetClockInfo(self.handle, pynvml.NVML_CLOCK_SM)
            except pynvml.NVMLError:
                pass  # a missed sample: the trapezoid rule spans the gap
            else:
                self.samples.append((time.perf_counter() - t0, watts))
                self.clocks.append(mhz)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self.handle is None:
            return
        self._t0 = time.perf_counter()
        self._counter0 = self._read_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        """Call after the device is synchronised at the end of the region."""
        if self.handle is None:
            return {"energy_unavailable": self.unavailable}
        counter1 = self._read_counter() if self._counter0 is not None else None
        elapsed = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        out: dict = {"energy_region_s": elapsed}
        if self.clocks:
            out.update(
                sm_clock_mhz_min=min(self.clocks),
                sm_clock_mhz_max=max(self.clocks),
                sm_clock_mhz_mean=sum(self.clocks) / len(self.clocks),
            )
        out["clock_limits"] = clock_limits(self.handle)
        if elapsed < MIN_REGION_S:
            out["energy_unavailable"] = (
                f"timed region {elapsed:.3f} s is shorter than the {MIN_REGION_S:g} s the NVML "
                "energy counter needs to resolve it; raise workload.min_time_s"
            )
            return out
        sampled = integrate(self.samples)
        if sampled is not None:
            out["energy_j_sampled"] = sampled
            out["power_samples"] = len(self.samples)
        if counter1 is not None:
            out["energy_j"] = (counter1 - self._counter0) / 1e3
            out["energy_method"] = "nvml_total_energy_counter"
        elif sampled is not None:
            out["energy_j"] = sampled
            out["energy_method"] = f"nvml_power_samples_integrated ({self.counter_error})"
        if "energy_j" in out and elapsed > 0:
            out["avg_power_w"] = out["energy_j"] / elapsed
        if elapsed < 5.0:
            out["energy_note"] = (
                f"timed region {elapsed:.1f} s: NVML power readings lag by up to a second, so the "
                "sampled integral undercounts; use workload.min_time_s >= 10 for energy"
            )
        return out

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "power_w", "sm_clock_mhz"])
            w.writerows((t, p, c) for (t, p), c in zip(self.samples, self.clocks))


CLOCK_LIMIT_BITS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}


def clock_limits(handle) -> list[str]:
    """What is holding the clocks down right now (NVML's clock event reasons)."""
    import pynvml

    read = (
        getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
    )
    try:
        bits = read(handle)
    except pynvml.NVMLError:
        return ["unknown"]
    return [name for bit, name in CLOCK_LIMIT_BITS.items() if bits & bit]


def integrate(samples: list[tuple[float, float]]) -> float | None:
    """Trapezoid integral of (t, watts) samples, in joules; None with fewer than two samples."""
    if len(samples) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))
