"""The GPU kernels a call launches, read from the profiler: what "the kernel it ran" means when a
library (Transformer Engine, FlexAttention's compiled templates) picks it out of sight."""

from __future__ import annotations

from collections.abc import Callable


def launched_kernels(fn: Callable[[], object], top: int = 3) -> list[str]:
    """Names of the CUDA kernels ``fn`` launches, longest total time first (at most ``top``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    times: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            times[event.name] = times.get(event.name, 0.0) + event.device_time
    return [name for name, _ in sorted(times.items(), key=lambda kv: -kv[1])[:top]]


def short(name: str, limit: int = 120) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def trial_kernels(attend, q, k, v, mask, backward: bool) -> list[str]:
    """One call of ``attend`` (and its backward when ``backward``) on random batch-1 tensors of the
    run's shapes: warms it up (compiles, lets a library pick its kernel), then returns the names of
    the CUDA kernels a second call launches, longest first."""
    import torch

    q1, k1, v1 = (torch.randn_like(t[:1]).requires_grad_(backward) for t in (q, k, v))

    def call():
        out = attend(q1, k1, v1, mask)
        if backward:
            out.sum().backward()

    call()
    return launched_kernels(call)
