"""GPU energy of any command: ``b200lab power [--interval S] [--csv FILE] -- CMD ...``

Measures every visible GPU with NVML's total-energy counter from just before the command starts
to just after it exits, and integrates power samples alongside as a cross-check; prints one JSON
object and exits with the command's exit code. Without NVML the command still runs and the JSON
says why there is no energy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def gpu_meters(interval_s: float) -> tuple[list, str | None]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:
        return [], f"NVML unavailable ({type(exc).__name__}: {exc})"
    from b200lab.measure.energy import EnergyMeter

    meters = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        meters.append((i, pynvml.nvmlDeviceGetName(h), EnergyMeter(handle=h, interval_s=interval_s)))
    return meters, None if meters else "NVML sees no GPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="b200lab power", description=__doc__.split("\n\n")[0].replace("``", "`"))
    parser.add_argument("--interval", type=float, default=0.05, help="power sampling interval, seconds")
    parser.add_argument("--csv", help="write the power samples (gpu, t_s, power_w) here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        parser.error("give the command to measure after --, e.g. -- python train.py")
    meters, unavailable = gpu_meters(args.interval)
    for _, _, m in meters:
        m.start()
    t0 = time.perf_counter()
    try:
        rc = subprocess.call(cmd)
    except FileNotFoundError:
        print(f"power: command not found: {cmd[0]}", file=sys.stderr)
        rc = 127
    duration = time.perf_counter() - t0
    gpus = []
    for index, name, m in meters:
        row = {"index": index, "name": name, **m.stop()}
        if m.samples:
            row["max_power_w"] = max(p for _, p in m.samples)
        gpus.append(row)
    report = {"command": cmd, "returncode": rc, "duration_s": duration, "gpus": gpus}
    if unavailable:
        report["energy_unavailable"] = unavailable
    elif all("energy_j" in g for g in gpus):
        report["energy_j"] = sum(g["energy_j"] for g in gpus)
        report["avg_power_w"] = report["energy_j"] / duration if duration > 0 else None
    if args.csv and meters:
        with open(args.csv, "w") as f:
            f.write("gpu,t_s,power_w\n")
            for index, _, m in meters:
                f.writelines(f"{index},{t:.4f},{p:.2f}\n" for t, p in m.samples)
    print(json.dumps(report, indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
