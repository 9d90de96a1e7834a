"""Launch one job as its own torchrun process group (or inline, for debugging) and collect the
rank files. The parent process never initialises CUDA: it only starts processes and reads JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LaunchOutcome:
    ranks: list[dict] = field(default_factory=list)
    returncode: int = 0
    interrupted: bool = False
    log_tail: str = ""
    profile: dict = field(default_factory=dict)


def _read_ranks(job_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((job_dir / "ranks").glob("rank*.json"))]


def torchrun_command(job_dir: Path, nproc: int) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        f"--nproc-per-node={nproc}", "-m", "b200lab.worker", "--job-dir", str(job_dir),
    ]


def launch_torchrun(job_dir: Path, nproc: int, timeout_s: float, log_path: Path, prefix: list[str] = ()) -> LaunchOutcome:
    """Run the ranks in a new process session, streaming their output to the console and the
    job log. Ctrl-C here is passed on as SIGINT to the whole group, which then writes what it
    measured; the KeyboardInterrupt is re-raised after the rank files are read."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if nproc > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    tail: list[str] = []
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [*prefix, *torchrun_command(job_dir, nproc)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env, start_new_session=True,
        )

        def pump() -> None:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
                tail.append(line)
                del tail[:-60]

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        interrupted = False
        try:
            proc.wait(timeout=timeout_s)
        except KeyboardInterrupt:
            interrupted = True
            _signal_group(proc, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGTERM)
            proc.wait()
            tail.append(f"b200lab: job exceeded run.timeout_s={timeout_s:g} s and was stopped\n")
        reader.join(timeout=5)
    return LaunchOutcome(_read_ranks(job_dir), proc.returncode, interrupted, "".join(tail))


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def launch_inline(job_dir: Path) -> LaunchOutcome:
    """Run the single rank in this process: for debuggers and profilers, not for measurements
    you compare (CUDA state persists across jobs of a sweep)."""
    from b200lab.worker import run_rank

    result = run_rank(job_dir)
    return LaunchOutcome([result], 0, result["status"] == "interrupted", "")


def launch(job_dir: Path, cfg, log_path: Path) -> LaunchOutcome:
    if cfg.run.launcher == "inline":
        return launch_inline(job_dir)
    from b200lab import profiling

    prefix, notes = profiling.command_prefix(cfg.profile, job_dir)
    outcome = launch_torchrun(job_dir, int(cfg.parallelism.nproc), float(cfg.run.timeout_s), log_path, prefix)
    outcome.profile = notes
    if cfg.profile.name == "ncu" and (job_dir / "ncu_raw.csv").exists():
        rows = profiling.ncu_table(job_dir / "ncu_raw.csv", notes["ncu_metrics"], int(cfg.profile.options.get("top", 15)))
        notes["ncu_top_kernels"] = rows
        notes["ncu_table"] = str(profiling.write_table(rows, job_dir / "ncu_top_kernels.csv"))
    return outcome
