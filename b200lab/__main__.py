"""Entry point: ``python -m b200lab [overrides] [-m]`` or ``b200lab sync [paths]``.

Exit codes: 0 all points measured (oom counts as a measurement); 1 a point errored; 2 bad
configuration (nothing run); 3 measured but not in MLflow (run ``b200lab sync``); 130 Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from b200lab import session
from b200lab.config import register_configs

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_entry(cfg: DictConfig) -> None:
    from b200lab.job import run_job

    run_job(cfg)


def main() -> None:
    if sys.argv[1:2] == ["sync"]:
        from b200lab.sync import main as sync_main

        sys.exit(sync_main(sys.argv[2:]))
    register_configs()
    try:
        _hydra_entry()
    except KeyboardInterrupt:
        print("\nb200lab: interrupted; what was measured is kept (status interrupted, MLflow KILLED)", file=sys.stderr)
        if session.sweep_dir is not None:
            from b200lab.callbacks import finish_sweep

            finish_sweep(session.sweep_dir, interrupted=True)
        sys.exit(130)
    if session.unsynced:
        print(f"b200lab: {len(session.unsynced)} result(s) not in MLflow; upload with `b200lab sync`", file=sys.stderr)
    sys.exit(session.exit_code())


if __name__ == "__main__":
    main()
