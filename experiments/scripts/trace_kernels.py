"""Per-kernel device time of a lab run's torch.profiler trace, in the columns reference_families.py
``--kernels`` writes (kernel, calls per step, us per step; longest first), so a lab run and a
reference run can be compared kernel by kernel.

    python3 experiments/scripts/trace_kernels.py JOB_DIR/traces/<trace>.json[.gz] OUT.csv
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: b200lab need not be installed
from b200lab.measure.kernel_breakdown import STEP_ANNOTATION, _events  # noqa: E402


def main(trace: str, out: str) -> None:
    events = _events(Path(trace))
    steps = (
        sum(1 for e in events if e.get("name") == STEP_ANNOTATION and e.get("cat") in ("user_annotation", "cpu_op"))
        or 1
    )
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in (e for e in events if e.get("cat") == "kernel"):
        totals[e["name"]][0] += 1
        totals[e["name"]][1] += float(e.get("dur", 0.0))
    with open(out, "w") as f:
        f.write("kernel,calls_per_step,us_per_step\n")
        for name, (calls, us) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
            f.write(f'"{name.replace(chr(34), chr(39))}",{calls / steps:g},{us / steps:.1f}\n')
    print(f"{out}: {len(totals)} kernels over {steps} steps")


if __name__ == "__main__":
    main(*sys.argv[1:3])
