"""Hydra callbacks: check the output dir, record a sweep, and at the end of a run or sweep read
the results back from disk to print the summary and end the process with the exit code.

Nothing is remembered in this process between jobs: with a launcher plugin the jobs run
elsewhere, and what they did is only in their results.json files (see b200lab/runner/sweep.py).
SystemExit passes through Hydra, which only catches Exception.
"""

from __future__ import annotations

import errno
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from b200lab.records import results as results_io
from b200lab.runner import progress, sweep

MIN_FREE_BYTES = 1 << 20  # the job's records (config, results, logs) need far less; a disk below this is full


def ensure_writable(directory: Path, key: str) -> None:
    """Create the output dir now and write to it, so a bad path (exit 2) or a full disk (exit 1)
    fails in one line before anything runs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".b200lab_write_test"
        probe.write_text("")
        probe.unlink()
        stats = os.statvfs(directory)
        free = stats.f_bavail * stats.f_frsize
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            _say_full(directory, key, exc.strerror)
        print(
            f"b200lab: {key}={directory} is not a writable directory ({exc.strerror or exc}); choose another with "
            f"{key}=PATH",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    if free < MIN_FREE_BYTES:
        _say_full(directory, key, f"{os.strerror(errno.ENOSPC)}: {free // 1024} KiB free")


def _say_full(directory: Path, key: str, why: str) -> None:
    print(
        f"b200lab: cannot write to {key}={directory} ({why}); free space there or choose another folder with "
        f"{key}=PATH",
        file=sys.stderr,
    )
    raise SystemExit(1)


def conclude(records: list[dict], bad: list, parent: dict | None = None) -> None:
    """Say what is not in MLflow and end the process with the exit code (returns on 0)."""
    if parent and parent.get("state") == "failed":
        print(
            f"b200lab: the sweep's parent run was never created ({parent.get('error')}); its points are orphans in "
            "MLflow",
            file=sys.stderr,
        )
    missing = sweep.unsynced(records)
    if missing:
        why = sorted(
            {
                f"{(r.get('mlflow') or {}).get('tracking_uri')}: "
                f"{(r.get('mlflow') or {}).get('error') or 'not uploaded'}"
                for r in missing
            }
        )
        print(
            f"b200lab: {len(missing)} result(s) not in MLflow ({'; '.join(why)}); `b200lab sync` uploads each to the "
            "store "
            "its results.json records (--uri URI for another)",
            file=sys.stderr,
        )
    elif (parent or {}).get("closed") is False:
        print("b200lab: the sweep's parent run was not closed; close it with `b200lab sync`", file=sys.stderr)
    code = sweep.exit_code(records, bad, parent)
    if code:
        raise SystemExit(code)


def claim_or_exit(directory: Path, key: str, node: int = 0) -> None:
    from b200lab.runner.dir_claim import DirBusy, claim

    try:
        claim(directory, key, node)
    except DirBusy as exc:
        print(f"b200lab: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _node(config: DictConfig) -> int:
    """This machine's node rank in a multi-node job (0 otherwise, or where the config cannot say)."""
    from b200lab.parallel.rendezvous import this_node

    try:
        return this_node(config.parallelism)
    except Exception:  # an unresolvable config: the job reports it
        return 0


class LabCallbacks(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        ensure_writable(Path(str(config.hydra.run.dir)), "hydra.run.dir")
        claim_or_exit(Path(str(config.hydra.run.dir)), "hydra.run.dir", _node(config))

    def on_run_end(self, config: DictConfig, job_return: JobReturn | None = None, **kwargs) -> None:
        from b200lab.runner.dir_claim import release

        release(Path(str(config.hydra.run.dir)), _node(config))
        if job_return is not None and job_return.status == JobStatus.FAILED:
            return  # Hydra re-raises the job's exception
        if _node(config):  # node 0 writes the job's results.json and concludes
            return
        job_dir = Path(str(config.hydra.runtime.output_dir or config.hydra.run.dir))
        good, bad = results_io.read_all(results_io.find([job_dir / results_io.FILENAME]))
        conclude([r for _, r in good], bad)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        ensure_writable(sweep_dir, "hydra.sweep.dir")
        claim_or_exit(sweep_dir, "hydra.sweep.dir")
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)  # as typed
        name = f"sweep {config.get('preset', 'none')} {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}"
        sweep.start(
            sweep_dir,
            config.tracking,
            name,
            {"preset": config.get("preset"), "overrides": " ".join(overrides), "sweep_dir": str(sweep_dir)},
        )
        params = config.hydra.sweeper.get("params")
        swept = OmegaConf.to_container(params, resolve=False) if params else {}
        progress.start(sweep_dir, *progress.plan(str(config.hydra.sweeper.get("_target_")), swept, overrides))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from b200lab.runner.dir_claim import release

        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        release(sweep_dir)
        records, bad = sweep.finish(sweep_dir)
        conclude(records, bad, sweep.read_parent(sweep_dir))
