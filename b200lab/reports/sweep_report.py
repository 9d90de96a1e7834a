"""A sweep (or any set of runs) as a document a person reads in a minute, in Markdown and HTML:
what was asked and what ran, the key metrics with their spread, speedups against a reference
point, line charts against the swept value. Every row names its run id, card and git sha, so
every number in it can be traced to a run.

The speedup of a point is its headline rate over that of its reference: the point that matches
it in every varied key except those the reference names (``precision=fp32``: each point against
the fp32 point of the same seq, model ...). Its band divides the point's step-time band by the
reference's, so a band that straddles 1.0 is no clear difference.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from b200lab.records.points import (
    attention_ran,
    card,
    compile_ran,
    overrides,
    precision_ran,
    short_sha,
    unique_names,
    varied_keys,
)
from b200lab.reports.charts import line_charts
from b200lab.reports.plot import headline
from b200lab.reports.spread import band

RunLink = Callable[[dict], str]  # a record -> the text (Markdown) of its run id cell


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    title: str
    path: Path


Section = tuple[str, "str | Table | Image"]  # ("h2" | "p", text) or ("table", Table) or ("img", Image)


def run_id(r: dict) -> str:
    return (r.get("mlflow") or {}).get("run_id") or "not in MLflow"


def _asked_ran(asked: str | None, ran: str | None, reason: str | None) -> str:
    text = f"{asked or '-'} → {ran or '-'}" if ran and ran != asked else (asked or ran or "-")
    return f"{text} ({reason})" if reason else text


def config_table(records: list[dict], names: list[str], link: RunLink) -> Table:
    rows = []
    for r, name in zip(records, names):
        req, eff = r.get("requested") or {}, r.get("effective") or {}
        rows.append(
            [
                name,
                r.get("status", "?"),
                _asked_ran(req.get("precision"), precision_ran(r), (eff.get("precision") or {}).get("reason")),
                _asked_ran(req.get("attention"), attention_ran(r), (eff.get("attention") or {}).get("reason")),
                compile_ran(r) or req.get("compile") or "-",
                req.get("parallelism") or "-",
                card(r),
                short_sha(r),
                link(r),
            ]
        )
    return Table(
        [
            "point",
            "status",
            "precision (asked → ran)",
            "attention (asked → kernel)",
            "compile",
            "parallelism",
            "card",
            "git sha",
            "run",
        ],
        rows,
    )


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _with_band(r: dict, metric: str, fmt: str) -> str:
    value = (r.get("metrics") or {}).get(metric)
    if value is None:
        return "-"
    b = band(r, metric)
    return fmt.format(value) + (f" ({fmt.format(b[0])}–{fmt.format(b[1])})" if b else "")


def reference_of(records: list[dict], spec: dict[str, str]) -> list[dict | None]:
    """Each record's reference: the record equal to it in every varied key, but with ``spec``'s values."""
    keys = varied_keys(records)
    by_values = {}
    for r in records:
        if r.get("status") == "ok":
            by_values.setdefault(tuple(overrides(r.get("point")).get(k) for k in keys), r)
    out = []
    for r in records:
        wanted = {**overrides(r.get("point")), **spec}
        out.append(by_values.get(tuple(wanted.get(k) for k in keys)))
    return out


REFERENCE_KEYS = ("precision", "attention", "compile", "model", "parallelism")
# the offered load of a serve sweep: more tokens/s at a higher rate is more demand, not a speedup
LOAD_KEYS = ("workload.options.qps", "workload.options.max_concurrency")


def default_reference(records: list[dict]) -> dict[str, str]:
    """The first point's value of the first varied key of REFERENCE_KEYS, else of any varied key
    but the offered load (``precision=fp32`` for a precision x seq sweep); none for a serve sweep
    that varied only its load."""
    keys = [k for k in varied_keys(records) if k not in LOAD_KEYS]
    if not keys or not records:
        return {}
    key = next((k for k in REFERENCE_KEYS if k in keys), keys[0])
    return {key: overrides(records[0].get("point")).get(key, "-")}


def speedup(r: dict, ref: dict | None, metric: str) -> tuple[float, float | None, float | None] | None:
    """(rate / reference rate, low, high) or None."""
    if ref is None or r.get("status") != "ok":
        return None
    a, b = (r.get("metrics") or {}).get(metric), (ref.get("metrics") or {}).get(metric)
    if not a or not b:
        return None
    mine, theirs = band(r, metric), band(ref, metric)
    if mine and theirs:
        return a / b, mine[0] / theirs[1], mine[1] / theirs[0]
    return a / b, None, None


def _speedup_text(s) -> str:
    if s is None:
        return "-"
    value, low, high = s
    if low is None:
        return f"{value:.3f}x"
    verdict = "faster" if low > 1 else ("slower" if high < 1 else "no clear difference")
    return f"{value:.3f}x ({low:.3f}–{high:.3f}, {verdict})"


METRIC_COLUMNS = [  # (header, metric, format, with its step-time band)
    ("tokens/s (p10–p90 band)", "tokens_per_s", "{:,.0f}", True),
    ("step p50 ms (p10–p90)", "step_ms_p50", "{:.2f}", True),
    ("n steps", "n_steps", "{:.0f}", False),
    ("TFLOP/s", "tflops", "{:.1f}", True),
    ("MFU", "mfu", "{:.3f}", True),
    ("GEMM TFLOP/s", "gemm_tflops", "{:.1f}", True),
    ("HBM GB/s", "hbm_gbps", "{:,.0f}", True),
    ("bus GB/s", "allreduce_busbw_gbps", "{:.1f}", True),
    ("peak mem GB", "peak_mem_allocated_gb", "{:.2f}", False),
    ("tokens/J", "tokens_per_j", "{:.1f}", False),
    ("perplexity", "perplexity", "{:.4f}", False),
]


def metric_table(records: list[dict], names: list[str], link: RunLink, reference: dict[str, str]) -> Table:
    cols = [c for c in METRIC_COLUMNS if any(c[1] in (r.get("metrics") or {}) for r in records)]
    rate = headline(records)
    refs = reference_of(records, reference) if reference and rate else [None] * len(records)
    with_speedup = any(ref is not None for ref in refs)
    header = ["point", "status", *[c[0] for c in cols]]
    header += [f"speedup vs {' '.join(f'{k}={v}' for k, v in reference.items())} ({rate})"] if with_speedup else []
    rows = []
    for r, name, ref in zip(records, names, refs):
        m = r.get("metrics") or {}
        cells = [_with_band(r, key, fmt) if banded else _fmt(m.get(key), fmt) for _, key, fmt, banded in cols]
        if with_speedup:
            cells.append("reference" if ref is r else _speedup_text(speedup(r, ref, rate)))
        rows.append([name, r.get("status", "?"), *cells, card(r), short_sha(r), link(r)])
    return Table(header + ["card", "git sha", "run"], rows)


SERVE_COLUMNS = [  # (header, metric, format): vLLM's definitions (docs/serving.md)
    ("requests/s", "request_throughput", "{:.2f}"),
    ("output tokens/s", "output_tokens_per_s", "{:,.0f}"),
    ("ttft p50 ms", "ttft_ms_p50", "{:,.1f}"),
    ("ttft p99 ms", "ttft_ms_p99", "{:,.1f}"),
    ("tpot p50 ms", "tpot_ms_p50", "{:.1f}"),
    ("tpot p99 ms", "tpot_ms_p99", "{:.1f}"),
    ("itl p50 ms", "itl_ms_p50", "{:.1f}"),
    ("itl p99 ms", "itl_ms_p99", "{:.1f}"),
    ("e2e p50 ms", "e2e_ms_p50", "{:,.0f}"),
    ("goodput fraction", "goodput_fraction", "{:.3f}"),
    ("completed", "completed", "{:.0f}"),
    ("rejected", "rejected", "{:.0f}"),
    ("max batch", "max_batch", "{:.0f}"),
]


def serving_table(records: list[dict], names: list[str], link: RunLink) -> Table | None:
    """The latency percentiles and goodput of the serve points, or None when there are none."""
    served = [(r, n) for r, n in zip(records, names) if "goodput_fraction" in (r.get("metrics") or {})]
    if not served:
        return None
    rows = [
        [name, *[_fmt((r.get("metrics") or {}).get(key), fmt) for _, key, fmt in SERVE_COLUMNS], link(r)]
        for r, name in served
    ]
    return Table(["point", *[c[0] for c in SERVE_COLUMNS], "run"], rows)


def sections(
    records: list[dict],
    link: RunLink,
    reference: dict[str, str] | None = None,
    charts: list[tuple[str, Path]] = (),
    names: list[str] | None = None,
) -> list[Section]:
    names = names or unique_names(records)
    reference = default_reference(records) if reference is None else reference
    keys = varied_keys(records)
    out: list[Section] = [
        (
            "p",
            f"{len(records)} points; varied: {', '.join(keys) or 'nothing'}; "
            f"cards: {', '.join(sorted({card(r) for r in records}))}; "
            f"git: {', '.join(sorted({short_sha(r) for r in records}))}. A point's name is what varied, then what ran "
            "(effective precision, attention kernel, compile mode).",
        ),
        ("h2", "Requested vs effective"),
        ("table", config_table(records, names, link)),
        ("h2", "Key metrics"),
        (
            "p",
            "Bands are the step-time p10–p90 of each run (a rate's band is value × p50/p90 … value × p50/p10); "
            "a speedup's band divides the point's band by its reference's.",
        ),
        ("table", metric_table(records, names, link, reference)),
    ]
    served = serving_table(records, names, link)
    if served is not None:
        out += [
            ("h2", "Serving: latency percentiles and goodput"),
            (
                "p",
                "Percentiles over every request of a point's timed runs (vLLM's definitions: docs/serving.md); goodput "
                "counts the requests that met the SLO (`serve.slo`). A higher request rate offers more load: tokens/s "
                "rises with it, so the serve points are not compared by speedup across rates.",
            ),
            ("table", served),
        ]
    if charts:
        out.append(("h2", "Charts"))
        out += [("img", Image(title, path)) for title, path in charts]
    return out


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(parts: list[Section], base: Path | None = None) -> str:
    lines: list[str] = []
    for kind, body in parts:
        if kind == "h1":
            lines += [f"# {body}", ""]
        elif kind == "h2":
            lines += [f"## {body}", ""]
        elif kind == "p":
            lines += [str(body), ""]
        elif kind == "table":
            lines.append("| " + " | ".join(_md_cell(h) for h in body.header) + " |")
            lines.append("|" + "|".join(" --- " for _ in body.header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body.rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{body.title}]({_rel(body.path, base)})", ""]
    return "\n".join(lines)


def _rel(path: Path, base: Path | None) -> str:
    return os.path.relpath(path, base) if base else str(path)


def _image_src(path: Path, base: Path | None, inline: bool) -> str:
    """The chart as a data: URI (the page opens anywhere, MLflow's artifact preview included, which
    cannot load a neighbouring file), or its path relative to the page."""
    if inline:
        return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return _rel(path, base)


def html_page(title: str, parts: list[Section], base: Path | None = None, inline_images: bool = True) -> str:
    esc = html.escape
    body: list[str] = [f"<h1>{esc(title)}</h1>"]
    for kind, part in parts:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{esc(str(part))}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{esc(str(part))}</p>")
        elif kind == "table":
            body.append(
                "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in part.header) + "</tr></thead><tbody>"
            )
            body += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in part.rows]
            body.append("</tbody></table>")
        elif kind == "img":
            body.append(
                f'<figure><img src="{esc(_image_src(part.path, base, inline_images))}" alt="{esc(part.title)}">'
                f"<figcaption>{esc(part.title)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1600px}table{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eee}img{max-width:760px}"
    )
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title><style>{style}</style></head>\n'
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write(
    records: list[dict],
    out_dir: Path,
    title: str,
    source: str,
    reference: dict[str, str] | None = None,
    x: str | None = None,
    made: str | None = None,
    inline_images: bool = True,
) -> tuple[Path, Path]:
    """report.md, report.html and charts/ in ``out_dir``; ``made`` is the date it names (default now),
    fixed for a report that must regenerate byte for byte (docs/measurements). report.html carries
    its charts inline unless ``inline_images`` is off (then it links charts/, as report.md does)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = line_charts(records, out_dir / "charts", x)
    made = made or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        ("p", f"Generated by `b200lab report` on {made} from {source}."),
        *sections(records, lambda r: run_id(r), reference, charts),
    ]
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(markdown([("h1", title), *parts], out_dir))
    page.write_text(html_page(title, parts, out_dir, inline_images))
    return md, page
