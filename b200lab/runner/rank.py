"""One rank of one job. Launched by torchrun (or in-process by the inline launcher).

Reads ``JOB_DIR/config.yaml``, builds the workload, times it, and writes plain data to
``JOB_DIR/ranks/rankN.json``. It never talks to MLflow; the parent aggregates the rank files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch
from omegaconf import OmegaConf

from b200lab.core.registry import instantiate
from b200lab.measure.energy import EnergyMeter
from b200lab.measure.environment import device_env
from b200lab.measure.memory import memory_metrics, reset_peaks
from b200lab.measure.step_stats import step_stats
from b200lab.measure.timing import Timing, time_steps
from b200lab.records.rank_report import SCHEMA_VERSION, RankReport
from b200lab.runner.profiling import WorkerProfiler
from b200lab.workloads.base import Diverged, RankContext


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _interrupt_on_term() -> None:
    """SIGTERM (torchrun passing on a Ctrl-C) becomes KeyboardInterrupt once, so the rank still
    writes what it measured; later signals are ignored while it does."""

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class Progress:
    """Rank 0's status lines: end of warm-up, the first timed step, every quarter of the timed
    steps, and at least every 10 s in between."""

    def __init__(self, enabled: bool, every_s: float = 10.0):
        self.enabled = enabled
        self.every_s = every_s
        self.last = time.monotonic()

    def __call__(self, phase: str, i: int, n: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        marks = {n} if phase == "warm-up" else {1, *(max(1, n * q // 4) for q in (1, 2, 3, 4))}
        if i in marks or now - self.last >= self.every_s:
            self.last = now
            print(f"  {phase:8s} {i}/{n}", flush=True)


def _consensus(world_size: int):
    if world_size == 1:
        return None
    import torch.distributed as dist

    group = dist.new_group(backend="gloo")

    def all_done(local_done: bool) -> bool:
        flag = torch.tensor([0 if local_done else 1])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        return flag.item() == 0

    return all_done


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def run_rank(job_dir: Path, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> dict:
    cfg = OmegaConf.load(job_dir / "config.yaml")
    device = torch.device("cuda", local_rank) if cfg.run.device == "cuda" else torch.device("cpu")
    out: dict = {
        "schema_version": SCHEMA_VERSION,
        "rank": rank,
        "world_size": world_size,
        "status": "ok",
        "error": None,
        "data_shard": rank,
    }
    trials: list[Timing] = []
    workload = strategy = None
    setup_s = None
    energy: dict = {}
    try:
        if world_size > 1:
            import torch.distributed as dist

            if device.type == "cuda":
                torch.cuda.set_device(device)
                dist.init_process_group("nccl", device_id=device)
            else:
                dist.init_process_group("gloo")
        elif device.type == "cuda":
            torch.cuda.set_device(device)
        _seed(int(cfg.run.seed))
        profiler = WorkerProfiler(cfg.profile, device, job_dir, rank)
        strategy = instantiate("parallelism", cfg.parallelism, rank, world_size, device)
        strategy.setup()
        out["data_shard"] = strategy.data_shard()
        ctx = RankContext(cfg=cfg, device=device, strategy=strategy, rank=rank, world_size=world_size, job_dir=job_dir)
        workload = instantiate("workload", cfg.workload, ctx)
        t0 = time.perf_counter()
        workload.setup()
        setup_s = time.perf_counter() - t0
        reset_peaks(device)
        _timed_trials(workload, cfg, device, world_size, rank, job_dir, profiler, trials, energy)
        profiler.after_timing(workload.step)
        out["profile"] = profiler.notes
        workload.after_timing()  # e.g. validation: after every step, outside the step times
    except KeyboardInterrupt:
        out.update(status="interrupted", error="interrupted by the user (Ctrl-C / SIGTERM)")
    except Diverged as exc:
        out.update(status="error", error=f"{exc} (the steps timed before are kept)")
    except Exception as exc:  # recorded in the rank file, never swallowed
        oom = is_oom(exc)
        out.update(status="oom" if oom else "error", error=f"{type(exc).__name__}: {exc}".strip()[:2000])
        if not oom:
            out["traceback"] = traceback.format_exc()[-4000:]
    _fill_timing(out, workload, trials)
    out["effective"] = _effective(workload, strategy)
    out["metric_rules"] = dict(getattr(workload, "metric_rules", {}))
    ok = workload is not None and out["status"] == "ok"
    out["metrics"] = {**(workload.metrics(step_stats(out["step_ms"])) if ok else {}), **memory_metrics(device)}
    out["curves"] = workload.curves() if ok else {}
    if ok and rank == 0:
        try:
            workload.write_artifacts(job_dir / "artifacts")
        except Exception as exc:  # the measurement stands; the missing file is said
            out["effective"]["artifacts"] = f"not written: {type(exc).__name__}: {exc}"[:500]
    out["energy"] = energy
    if setup_s is not None:
        out["metrics"]["setup_s"] = setup_s
    if rank == 0:
        out["env"] = device_env(device)
    out = RankReport.from_dict(out, f"rank {rank}").to_json_dict()
    (job_dir / "ranks").mkdir(parents=True, exist_ok=True)
    _write_json(job_dir / "ranks" / f"rank{rank}.json", out)
    (job_dir / "ranks" / f"rank{rank}.partial.json").unlink(missing_ok=True)
    if world_size > 1 and out["status"] == "ok":
        import torch.distributed as dist

        dist.destroy_process_group()
    return out


def _seed(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fill_timing(out: dict, workload, trials: list) -> None:
    out["tokens_per_step"] = getattr(workload, "tokens_per_step", 0)
    out["flops_per_step"] = getattr(workload, "flops_per_step", 0)
    out["warmup_ms"] = trials[0].warmup_ms if trials else []
    out["step_ms"] = [ms for t in trials for ms in t.step_ms]
    out["span_s"] = sum(t.span_s for t in trials)
    out["trial_steps"] = [len(t.step_ms) for t in trials]
    out["trial_spans"] = [t.span_s for t in trials]


def _partial_writer(job_dir: Path, rank: int, base: dict, workload, trials: list):
    """A checkpoint callback: ``ranks/rankN.partial.json`` with the steps timed so far, so a rank
    killed outright (SIGKILL, the OOM killer) still leaves them; removed when the rank finishes."""
    path = job_dir / "ranks" / f"rank{rank}.partial.json"
    fixed = dict(
        base,
        status="error",
        error="the rank stopped before it finished (partial report)",
        partial=True,
        effective=_effective(workload, workload.ctx.strategy),
        metric_rules=dict(workload.metric_rules),
        env=device_env(workload.ctx.device) if rank == 0 else {},
    )

    def write(current: Timing) -> None:
        snapshot = dict(fixed)
        _fill_timing(snapshot, workload, [*trials[:-1], current])
        _write_json(path, RankReport.from_dict(snapshot, f"rank {rank} (partial)").to_json_dict())

    return write


def _timed_trials(
    workload, cfg, device, world_size: int, rank: int, job_dir: Path, profiler, trials: list, energy: dict
) -> None:
    """Warm-up, then ``workload.trials`` timed regions. ``trials`` and ``energy`` are filled in
    place, so an interrupt keeps what was measured. Energy and the Nsight capture range span all
    trials."""
    w = cfg.workload
    steps, min_time_s, n_trials = int(w.steps), float(w.min_time_s), int(w.trials)
    if cfg.profile.name == "ncu":  # every kernel is replayed: one timed step is plenty
        steps, min_time_s, n_trials = 1, 0.0, 1
    meter = EnergyMeter(device)
    opened = []

    def region_start() -> None:
        _check_health(workload)  # after the warm-up, before anything is timed
        profiler.region_start()
        meter.start()
        opened.append(True)

    all_done, progress = _consensus(world_size), Progress(rank == 0)
    checkpoint = _partial_writer(
        job_dir,
        rank,
        {
            "schema_version": SCHEMA_VERSION,
            "rank": rank,
            "world_size": world_size,
            "data_shard": workload.ctx.data_shard,
        },
        workload,
        trials,
    )
    try:
        for i in range(n_trials):
            trials.append(Timing())
            time_steps(
                workload.step,
                device,
                int(w.warmup_steps) if i == 0 else 0,
                steps,
                min_time_s,
                all_done=all_done,
                on_progress=progress,
                timing=trials[-1],
                on_region_start=region_start if i == 0 else (lambda: None),
                on_checkpoint=checkpoint,
            )
            _check_health(workload)
    finally:  # closed even on an interrupt
        if opened:
            energy.update(meter.stop())
            profiler.region_end()
    if meter.samples:
        (job_dir / "ranks").mkdir(parents=True, exist_ok=True)
        meter.write_csv(job_dir / "ranks" / f"power_rank{rank}.csv")


def _check_health(workload) -> None:
    why = workload.health()
    if why:
        raise Diverged(why)


def _effective(workload, strategy) -> dict:
    eff: dict = {}
    if strategy is not None:
        eff["parallelism"] = strategy.effective
    if workload is None:
        return eff
    eff.update({"workload": workload.cfg.name, **workload.effective})
    built = getattr(workload, "built", None)
    if built is not None:
        eff["model"] = {
            "family": built.family.cfg.family,
            "target": built.family.cfg._target_,
            **getattr(built.family, "effective", {}),
        }  # e.g. which expert path a mixture of experts ran
        eff["precision"] = built.precision.record()
        eff["attention"] = built.attention.effective
        eff["compiled"] = built.compiled
    return eff


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="one b200lab rank (launched by torchrun)")
    parser.add_argument("--job-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    _interrupt_on_term()
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    result = run_rank(args.job_dir, rank, world, local)
    # non-zero for oom too, so torchrun tears down peers that would wait on this rank
    return {"ok": 0, "oom": 3, "interrupted": 130}.get(result["status"], 1)


if __name__ == "__main__":
    sys.exit(main())
