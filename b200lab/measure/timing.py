"""Step timing: warm-up, then timed steps with device-synchronised clocks.

On CUDA each timed step sits between two CUDA events and the steps are queued back to back, so
launch overhead hides as it would in production; the timed span runs from the first start event
to the last end event and therefore includes any gaps between steps. On CPU the ops run
synchronously, so ``perf_counter`` around each step is the device clock. Timing ends at the
later of ``steps`` timed steps and ``min_time_s`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    warmup_ms: list[float] = field(default_factory=list)  # each warm-up step, host clock after a sync
    step_ms: list[float] = field(default_factory=list)  # each timed step, device clock
    span_s: float = 0.0  # first timed step's start to last timed step's end


def _finished_so_far(t: Timing, events: list, begin: float, cuda: bool) -> Timing:
    if not cuda:
        return Timing(list(t.warmup_ms), list(t.step_ms), time.perf_counter() - begin)
    done = 0
    while done < len(events) and events[done][1].query():
        done += 1
    steps = [s.elapsed_time(e) for s, e in events[:done]]
    span = events[0][0].elapsed_time(events[done - 1][1]) / 1e3 if done else 0.0
    return Timing(list(t.warmup_ms), steps, span)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], object],
    device: torch.device,
    warmup: int,
    steps: int,
    min_time_s: float = 0.0,
    all_done: Callable[[bool], bool] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    timing: Timing | None = None,
    on_region_start: Callable[[], None] = lambda: None,
    on_region_end: Callable[[], None] = lambda: None,
    on_checkpoint: Callable[[Timing], None] | None = None,
    checkpoint_every_s: float = 5.0,
) -> Timing:
    """Run ``warmup`` untimed steps, then timed steps. ``all_done(local_done)`` lets ranks agree on
    when to stop; ``timing`` is filled in place so an interrupt keeps what was measured.
    ``on_region_start``/``on_region_end`` run with the device idle just before the first and
    just after the last timed step (energy counters). On CUDA each step is an NVTX range, and
    the timed steps sit inside the range ``b200lab_timed`` (Nsight filters on it).
    ``on_checkpoint`` receives, every ``checkpoint_every_s``, the steps finished so far (on CUDA
    those whose end event has completed: no synchronisation is added)."""
    t = timing if timing is not None else Timing()
    progress = on_progress or (lambda phase, i, n: None)
    cuda = device.type == "cuda"
    nvtx = torch.cuda.nvtx if cuda else None
    for i in range(warmup):
        _sync(device)
        t0 = time.perf_counter()
        if nvtx:
            nvtx.range_push(f"warmup {i}")
        step()
        if nvtx:
            nvtx.range_pop()
        _sync(device)
        t.warmup_ms.append((time.perf_counter() - t0) * 1e3)
        progress("warm-up", i + 1, warmup)
    _sync(device)

    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    on_region_start()
    if nvtx:
        nvtx.range_push("b200lab_timed")
    begin = last_checkpoint = time.perf_counter()
    n = 0
    try:
        while True:
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                nvtx.range_push(f"step {n}")
                start.record()
                step()
                end.record()
                nvtx.range_pop()
                events.append((start, end))
            else:
                t0 = time.perf_counter()
                step()
                t.step_ms.append((time.perf_counter() - t0) * 1e3)
            n += 1
            progress("timed", n, steps)
            if on_checkpoint is not None and time.perf_counter() - last_checkpoint >= checkpoint_every_s:
                last_checkpoint = time.perf_counter()
                on_checkpoint(_finished_so_far(t, events, begin, cuda))
            done = n >= steps and time.perf_counter() - begin >= min_time_s
            if all_done is not None and min_time_s > 0:
                done = all_done(done)
            if done:
                break
    finally:
        if nvtx:
            nvtx.range_pop()
        _sync(device)
        on_region_end()
        if cuda and events:
            t.step_ms.extend(s.elapsed_time(e) for s, e in events)
            t.span_s = events[0][0].elapsed_time(events[-1][1]) / 1e3
        elif not cuda:
            t.span_s = time.perf_counter() - begin
    return t
