"""Launch one job as its own torchrun process group (or inline, for debugging) and collect the
rank files. The parent process never initialises CUDA: it only starts processes and reads JSON.

A job over several machines (``parallelism.nnodes`` > 1) runs one torchrun per machine with a
static rendezvous at node 0's host:port (:func:`rendezvous`); the rank files land in the job
dir, which the nodes must share (as a SLURM cluster's shared file system does)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from b200lab.parallel.rendezvous import Rendezvous, rendezvous

FINAL = re.compile(r"rank(\d+)\.json")
PARTIAL = re.compile(r"rank(\d+)\.partial\.json")
# torchrun's failure summary: "rank      : 0 (local_rank: 0)" then "exitcode  : -9 (pid: 123)"
TORCHRUN_FAILURE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:[^)]*\)\s*\n\s*exitcode\s*:\s*(-?\d+)")


@dataclass
class LaunchOutcome:
    ranks: list[dict] = field(default_factory=list)
    returncode: int = 0
    interrupted: bool = False
    timed_out: bool = False
    log_tail: str = ""
    profile: dict = field(default_factory=dict)
    killed: dict[int, str] = field(default_factory=dict)  # rank -> "rank N was killed by SIG..."


def signal_message(who: str, signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    hint = "; often the kernel's out-of-memory killer" if signum == signal.SIGKILL else ""
    return f"{who} was killed by {name} (signal {signum}{hint})"


def killed_ranks(output: str) -> dict[int, str]:
    """Ranks that torchrun saw die of a signal (a negative exit code), from its failure summary."""
    return {
        int(rank): signal_message(f"rank {rank}", -int(code))
        for rank, code in TORCHRUN_FAILURE.findall(output)
        if int(code) < 0
    }


def read_ranks(job_dir: Path, killed: dict[int, str] | None = None) -> list[dict]:
    """Each rank's final report, else its last partial one (a rank that died mid-timing), marked
    as an error that says why, with the steps it had timed."""
    killed = killed or {}
    found: dict[int, tuple[bool, Path]] = {}
    for path in (job_dir / "ranks").glob("rank*.json"):
        if m := FINAL.fullmatch(path.name):
            found[int(m.group(1))] = (True, path)
        elif (m := PARTIAL.fullmatch(path.name)) and int(m.group(1)) not in found:
            found[int(m.group(1))] = (False, path)
    ranks = []
    for rank, (final, path) in sorted(found.items()):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # rank files are written atomically; an unreadable one is as good as absent
        if not final:
            why = killed.get(rank) or f"rank {rank} stopped before writing its final report"
            report.update(status="error", error=f"{why}; the steps it timed before are kept", partial=True)
        ranks.append(report)
    return ranks


# ``python -c`` puts the working directory first on sys.path, as ``python -m`` does: each bootstrap
# takes it off before importing anything, so a module there named like one the job imports
# (omegaconf.py, numpy.py) is never run. The ranks also ask the kernel for SIGKILL when torchrun
# dies (PR_SET_PDEATHSIG), and torchrun for SIGTERM when this process dies: no rank outlives its job.
_SAFE = "import sys; sys.path.pop(0); "
_PDEATHSIG = (
    "import ctypes, os, signal; ctypes.CDLL(None, use_errno=True).prctl(1, signal.{sig}); "
    "os.getppid() == {parent} or os.kill(os.getpid(), signal.{sig}); "
)
TORCHRUN_BOOT = _SAFE + "from torch.distributed.run import main; main()"
# the ranks import b200lab from the parent's own source tree (a folder holding only a link to the
# package), installed or not, and nothing else from the folder that tree lives in
RANK_BOOT = (
    "import sys; sys.path[0] = {lab!r}; "
    "import runpy; runpy.run_module('b200lab.runner.rank', run_name='__main__', alter_sys=True)"
)
LAB_PATH = ".b200lab_path"


def lab_path(job_dir: Path) -> Path:
    """``JOB_DIR/.b200lab_path``: a folder whose one entry links to the b200lab package this
    process runs, for the ranks' sys.path (a checkout that is not installed still works)."""
    import b200lab

    folder = Path(job_dir) / LAB_PATH
    link = folder / "b200lab"
    package = Path(b200lab.__file__).resolve().parent
    if not (link.is_symlink() and link.resolve() == package):
        folder.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(package, target_is_directory=True)
    return folder


def die_with_parent(sig: str = "SIGKILL", parent: int | None = None) -> str:
    """Python code that makes this process receive ``sig`` when its parent dies (Linux)."""
    return (
        _PDEATHSIG.format(sig=sig, parent=parent if parent is not None else "os.getppid()")
        if sys.platform == "linux"
        else ""
    )


def torchrun_command(job_dir: Path, rdzv: Rendezvous) -> list[str]:
    if rdzv.nnodes == 1:
        where = ["--standalone", "--nnodes=1"]
    else:
        host, _, port = rdzv.endpoint.rpartition(":")
        where = [
            f"--nnodes={rdzv.nnodes}",
            f"--node-rank={rdzv.node_rank}",
            f"--master-addr={host}",
            f"--master-port={port}",
        ]
    boot = die_with_parent("SIGTERM", os.getpid()) + TORCHRUN_BOOT
    rank = die_with_parent() + RANK_BOOT.format(lab=str(lab_path(job_dir).absolute()))
    return [
        sys.executable,
        "-c",
        boot,
        *where,
        f"--nproc-per-node={rdzv.per_node}",
        "--no-python",
        sys.executable,
        "-c",
        rank,
        "--job-dir",
        str(job_dir),
    ]


def rank_env(nproc: int) -> dict:
    """The ranks' environment: unbuffered output, CPU threads split between the ranks, and NVLink
    SHARP multicast off (NCCL_NVLS_ENABLE=0) unless the caller's environment sets it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if nproc > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    env.setdefault("NCCL_NVLS_ENABLE", "0")
    return env


def launch_torchrun(
    job_dir: Path, rdzv: Rendezvous, timeout_s: float, log_path: Path, prefix: list[str] = ()
) -> LaunchOutcome:
    """Run the ranks in a new process session, streaming their output to the console and the
    job log. Ctrl-C here is passed on as SIGINT to the whole group, which then writes what it
    measured; the caller re-raises the interrupt after the rank files are read. A job past
    ``timeout_s`` gets SIGTERM the same way and is reported as timed out."""
    env = rank_env(rdzv.per_node)
    tail: list[str] = []
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [*prefix, *torchrun_command(job_dir, rdzv)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )

        def pump() -> None:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                if not log.closed:
                    log.write(line)
                tail.append(line)
                del tail[:-200]

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        interrupted = timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except KeyboardInterrupt:
            interrupted = True
            _stop_group(proc, signal.SIGINT)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop_group(proc, signal.SIGTERM)
        finally:
            _signal_group(proc, signal.SIGKILL)  # whatever of the job outlived torchrun (a killed torchrun's ranks)
        reader.join(timeout=30)
    text = "".join(tail)
    killed = killed_ranks(text)
    if proc.returncode is not None and proc.returncode < 0 and not (interrupted or timed_out):
        killed.setdefault(-1, signal_message("torchrun", -proc.returncode))
    outcome = LaunchOutcome(read_ranks(job_dir, killed), proc.returncode, interrupted, timed_out, text)
    outcome.killed = killed
    return outcome


def _stop_group(proc: subprocess.Popen, sig: int, grace_s: float = 60) -> None:
    """Signal the job's process group, give it ``grace_s`` to write its rank files, then SIGKILL."""
    _signal_group(proc, sig)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def launch_inline(job_dir: Path) -> LaunchOutcome:
    """Run the single rank in this process: for debuggers and profilers, not for measurements
    you compare (CUDA state persists across jobs of a sweep)."""
    from b200lab.runner.rank import run_rank

    result = run_rank(job_dir)
    return LaunchOutcome([result], 0, result["status"] == "interrupted", False, "")


def await_all_ranks(job_dir: Path, nproc: int, ranks: list[dict], killed: dict, wait_s: float = 60.0) -> list[dict]:
    """Node 0 of a multi-node job: this node's ranks are done; the other nodes' ranks write their
    files into the shared job dir at about the same time. Wait up to ``wait_s`` for all of them."""
    deadline = time.monotonic() + wait_s
    while len(ranks) < nproc and time.monotonic() < deadline:
        time.sleep(0.5)
        ranks = read_ranks(job_dir, killed)
    return ranks


def launch(job_dir: Path, cfg, log_path: Path, parallelism=None) -> LaunchOutcome:
    """``parallelism``: the completed section (a derived nproc filled in; this node's rank), by
    default job_dir/config.yaml's (which the nodes of a multi-node job share)."""
    if cfg.run.launcher == "inline":
        return launch_inline(job_dir)
    from b200lab.runner import profiling

    prefix, notes = profiling.command_prefix(cfg.profile, job_dir)
    parallelism = parallelism or OmegaConf.load(job_dir / "config.yaml").parallelism
    rdzv = rendezvous(parallelism)
    outcome = launch_torchrun(job_dir, rdzv, float(cfg.run.timeout_s), log_path, prefix)
    if rdzv.nnodes > 1 and not outcome.interrupted:
        outcome.ranks = await_all_ranks(job_dir, int(parallelism.nproc), outcome.ranks, outcome.killed)
    outcome.profile = notes
    if cfg.profile.name == "ncu" and (job_dir / "ncu_raw.csv").exists():
        rows = profiling.ncu_table(
            job_dir / "ncu_raw.csv", notes["ncu_metrics"], int(cfg.profile.options.get("top", 15))
        )
        notes["ncu_top_kernels"] = rows
        notes["ncu_table"] = str(profiling.write_table(rows, job_dir / "ncu_top_kernels.csv"))
    return outcome
