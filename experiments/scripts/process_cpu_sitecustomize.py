"""Per-process CPU accounting for a test tier (docs/measurements/2026-12-08-ci-profile).

Copy this file as ``sitecustomize.py`` into the virtualenv's site-packages, run the tier, then
remove it: every Python process the tier starts (pytest workers, CLI runs, torchrun agents and
ranks, servers) appends one JSON line to /tmp/acct/log.jsonl at exit, with its argv, its own CPU
seconds (children not counted), whether it imported torch, MLflow or inductor, and the test that
was running. A process killed by a signal writes nothing.
"""

import atexit
import json
import os
import resource
import sys
import time

_t0 = time.time()


def _dump():
    try:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        mods = sys.modules
        row = {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "argv": sys.argv[:6],
            "wall": time.time() - _t0,
            "cpu": ru.ru_utime + ru.ru_stime,
            "torch": "torch" in mods,
            "mlflow": "mlflow" in mods,
            "inductor": "torch._inductor.compile_fx" in mods,
            "test": os.environ.get("PYTEST_CURRENT_TEST", "")[:150],
        }
        os.makedirs("/tmp/acct", exist_ok=True)
        with open("/tmp/acct/log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    except Exception as exc:  # the profiled process must exit as it would; say what was not logged
        sys.stderr.write(f"process_cpu_sitecustomize: no accounting line for pid {os.getpid()}: {exc}\n")


atexit.register(_dump)
