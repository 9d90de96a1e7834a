"""Reports over recorded results.

``b200lab report [PATH... | --experiment E --parent RUN --tag K=V] --out DIR``: the sweep report
(b200lab/reports/sweep_report.py), Markdown and HTML with line charts, from results.json folders or MLflow.

``b200lab report {table,compile,plot} PATH [...]``: quick views of results.json files:

``table``: one markdown row per results.json: point, status, the headline metrics that apply,
energy, peak memory, the card and the MLflow run id.

``compile``: for every (model, workload, seq, precision) the sweep measured eagerly and
compiled, speedup = eager step p50 / compiled step p50, with a spread band from the step-time
percentiles: [eager p10 / compiled p90, eager p90 / compiled p10] (p10 is derived from the step
times kept in results.json). A speedup whose band straddles 1.0 is reported as no difference.

``plot``: a PNG bar chart of one rate per result (default: the first of tokens/s, GEMM TFLOP/s,
HBM GB/s, all-reduce bus GB/s present) with its step-time spread; see b200lab/reports/plot.py.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from b200lab.records import results as results_io


def _key(r: dict) -> tuple:
    c = r["config"]
    return (c["model"]["name"], c["workload"]["name"], c["seq"]["name"], c["precision"]["name"])


def compile_speedups(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["status"] == "ok" and r.get("step_ms"):
            groups[_key(r)][r["config"]["compile"]["name"]] = r
    out = []
    for key, by_mode in sorted(groups.items()):
        eager = by_mode.get("none")
        if eager is None:
            continue
        e10, e50, e90 = np.percentile(eager["step_ms"], [10, 50, 90])
        for mode, r in sorted(by_mode.items()):
            if mode == "none":
                continue
            c10, c50, c90 = np.percentile(r["step_ms"], [10, 50, 90])
            low, high = e10 / c90, e90 / c10
            out.append(
                {
                    "model": key[0],
                    "workload": key[1],
                    "seq": key[2],
                    "precision": key[3],
                    "compile": mode,
                    "eager_p50_ms": e50,
                    "compiled_p50_ms": c50,
                    "speedup": e50 / c50,
                    "speedup_low": low,
                    "speedup_high": high,
                    "verdict": "faster" if low > 1 else ("slower" if high < 1 else "no clear difference"),
                    "compile_s": r["metrics"].get("compile_s"),
                    "n_eager": len(eager["step_ms"]),
                    "n_compiled": len(r["step_ms"]),
                    "eager_run": eager["mlflow"].get("run_id"),
                    "compiled_run": r["mlflow"].get("run_id"),
                }
            )
    # points that failed (oom, error) are listed so a missing row is explained
    for r in rows:
        if r["status"] != "ok":
            k = _key(r)
            out.append(
                {
                    "model": k[0],
                    "workload": k[1],
                    "seq": k[2],
                    "precision": k[3],
                    "compile": r["config"]["compile"]["name"],
                    "verdict": r["status"],
                    "compiled_run": r["mlflow"].get("run_id"),
                }
            )
    return out


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | workload | compile | eager p50 ms | compiled p50 ms | speedup [band] | verdict | compile s | runs "
        "(eager / compiled) |\n"
    )
    head += "| --- | --- | --- | ---: | ---: | --- | --- | ---: | --- |\n"
    lines = []
    for r in rows:
        if "speedup" in r:
            lines.append(
                f"| {r['model']} | {r['workload']} | {r['compile']} | {r['eager_p50_ms']:.2f} | "
                f"{r['compiled_p50_ms']:.2f} | "
                f"{r['speedup']:.3f} [{r['speedup_low']:.3f}, {r['speedup_high']:.3f}] | {r['verdict']} | "
                f"{(r['compile_s'] or 0):.1f} | {r['eager_run']} / {r['compiled_run']} |"
            )
        else:
            lines.append(
                f"| {r['model']} | {r['workload']} | {r['compile']} | | | | {r['verdict']} | | {r['compiled_run']} |"
            )
    return head + "\n".join(lines)


TABLE = [
    ("tokens/s", "tokens_per_s", "{:,.0f}"),
    ("step p50 ms", "step_ms_p50", "{:.2f}"),
    ("p99 ms", "step_ms_p99", "{:.2f}"),
    ("n", "n_steps", "{}"),
    ("TFLOP/s", "tflops", "{:.1f}"),
    ("MFU", "mfu", "{:.3f}"),
    ("GEMM TFLOP/s", "gemm_tflops", "{:.1f}"),
    ("HBM GB/s", "hbm_gbps", "{:,.0f}"),
    ("all-reduce bus GB/s", "allreduce_busbw_gbps", "{:,.1f}"),
    ("all-gather bus GB/s", "allgather_busbw_gbps", "{:,.1f}"),
    ("reduce-scatter bus GB/s", "reducescatter_busbw_gbps", "{:,.1f}"),
    ("energy J", "energy_j", "{:,.0f}"),
    ("sampled J", "energy_j_sampled", "{:,.0f}"),
    ("tokens/J", "tokens_per_j", "{:.1f}"),
    ("SM MHz mean", "sm_clock_mhz_mean", "{:.0f}"),
    ("peak alloc GB", "peak_mem_allocated_gb", "{:.2f}"),
]


def table(rows: list[dict]) -> str:
    cols = [c for c in TABLE if any(c[1] in r.get("metrics", {}) for r in rows)]
    out = [
        "| point | status | " + " | ".join(c[0] for c in cols) + " | GPU | MLflow run |",
        "| --- | --- | " + " | ".join("---:" for _ in cols) + " | --- | --- |",
    ]
    for r in rows:
        m = r.get("metrics", {})
        cells = [fmt.format(m[key]) if key in m else "-" for _, key, fmt in cols]
        out.append(
            f"| {r.get('point')} | {r['status']} | "
            + " | ".join(cells)
            + f" | {r.get('env', {}).get('gpu') or 'cpu'} | {r.get('mlflow', {}).get('run_id')} |"
        )
    return "\n".join(out)


QUICK_VIEWS = ("table", "compile", "plot")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in QUICK_VIEWS:
        return quick_view(argv)
    return sweep_report(argv)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} precision=fp32")
        out[key] = value
    return out


def sweep_report(argv: list[str]) -> int:
    from b200lab.reports import selection
    from b200lab.reports import sweep_report as doc

    parser = argparse.ArgumentParser(
        prog="b200lab report",
        description="A sweep report (Markdown and HTML, line charts) from results.json "
        "folders or MLflow runs; `b200lab report {table,compile,plot} PATH...` for the quick views.",
    )
    selection.add_arguments(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("report"),
        help="folder for report.md, report.html and charts/ (default: report)",
    )
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="speedups against the point with this value (default: the first point's value of the first varied key)",
    )
    parser.add_argument(
        "--x", help="config key the line charts are drawn against (default: the swept numeric value, seq.len first)"
    )
    parser.add_argument("--title", default="b200lab report")
    parser.add_argument(
        "--link-images",
        action="store_true",
        help="report.html links the charts in charts/ instead of carrying them inline (smaller; for reports "
        "committed beside their charts)",
    )
    parser.add_argument(
        "--date",
        help="the generation date the report states (default: now, UTC); a fixed one makes the "
        "report reproducible (experiments/scripts/regenerate_reports.sh)",
    )
    args = parser.parse_args(argv)
    try:
        reference = _pairs(args.reference, "--reference") or None
        records, source, skipped = selection.select(args)
    except (ValueError, selection.SelectionError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    for problem in skipped:
        print(f"report: skipped {problem}", file=sys.stderr)
    md, page = doc.write(records, args.out, args.title, source, reference, args.x, args.date, not args.link_images)
    print(f"report: {md} and {page} ({len(records)} points, {source})")
    return 1 if skipped else 0


def quick_view(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="b200lab report", description=__doc__.split("\n\n")[2].replace("``", "`"))
    sub = parser.add_subparsers(dest="report", required=True)
    comp = sub.add_parser("compile", help="eager vs torch.compile speedups from a sweep")
    comp.add_argument("paths", nargs="+", type=Path)
    tab = sub.add_parser("table", help="a markdown table of results")
    tab.add_argument("paths", nargs="+", type=Path)
    plot_cmd = sub.add_parser("plot", help="a PNG bar chart of one rate per result")
    plot_cmd.add_argument("paths", nargs="+", type=Path)
    plot_cmd.add_argument("--metric", help="metric name as in results.json (default: the headline rate)")
    plot_cmd.add_argument("--out", type=Path, default=Path("b200lab_plot.png"))
    args = parser.parse_args(argv)
    files = results_io.find(args.paths)
    if not files:
        print(f"report: no results.json under {' '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    good, bad = results_io.read_all(files)
    for err in bad:  # named and skipped; the exit code says so after the report of the others
        print(f"report: skipped {err}", file=sys.stderr)
    records = [r for _, r in good]
    code = 1 if bad else 0
    if not records:
        return 1
    if args.report == "plot":
        from b200lab.reports.plot import plot

        try:
            drawn = plot(records, args.out, args.metric)
        except ValueError as exc:
            print(f"report: {exc}", file=sys.stderr)
            return 2
        print(f"report: {args.out} ({len(drawn)} points)")
        return code
    if args.report == "table":
        print(table(records))
        return code
    rows = compile_speedups(records)
    if not any("speedup" in r for r in rows):
        print(
            "report: no (eager, compiled) pairs found: sweep compile=none together with a compile mode", file=sys.stderr
        )
        return 2
    print(markdown(rows))
    return code


if __name__ == "__main__":
    sys.exit(main())
