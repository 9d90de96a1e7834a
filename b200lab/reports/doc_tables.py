"""Tables in Markdown files generated from results.json (or CSV) files, so no table a person reads is typed by hand.

A block is a spec in an HTML comment (invisible when rendered), then the table it generates, then
an end marker. ``b200lab tables FILE...`` rewrites every block from its spec; ``--check`` rewrites
nothing, prints a diff of each stale block and exits 1::

    <!-- b200lab:table
    files: runs/attn_micro_*.results.json      # globs, relative to the Markdown file
    rows: [seq.len, workload.options.backward]  # one row per distinct value of these keys
    columns: {key: attention.name, values: {sdpa: sdpa, flex: flex}}   # optional pivot
    metric: attn_tflops                          # the value of a cell (with columns)
    ratio: [flex / sdpa]
    runs: true                                   # the 8-character MLflow run id of each cell
    -->
    | seq.len | ... (generated) |
    <!-- /b200lab:table -->

Three shapes (the spec keys are in SPEC_KEYS; docs/mlflow.md documents them):

- **pivot**: ``rows`` keys x ``columns`` key, ``metric`` in each cell, ``ratio`` columns (A / B of
  two column values), ``runs`` one id per column;
- **metrics**: ``rows`` keys, one run per row, a column per entry of ``metrics``; ``vs`` columns
  divide a metric by that of one reference run (``where``);
- **runs named**: ``rows`` a list of ``{label, metric, runs: [id, ...]}`` with ``columns`` a list
  of headers: each cell is the metric of the named run, ``value (id)``;
- **CSV rows**: ``csv`` (globs of CSV files, instead of ``files``) with ``columns`` a list of
  ``{column, header, format}``: one table row per CSV row, in file order (``sort: COLUMN`` or
  ``-COLUMN``), the first ``limit``. With ``csv`` the pivot and metrics shapes work too: each CSV row
  is a record whose keys and metrics are its columns, plus ``file`` (its path as the spec wrote it).

A key is a config key (``seq.len``, ``attention.name``), a path into the record (``status``,
``effective.attention.kernel``, ``env.gpu``, ``metrics.mfu``) or one of DERIVED. Rows sort by
their values (numbers ascending, other values in file order). A cell two runs claim, a metric no
selected run has, a glob that matches nothing or a run id that matches no file is an error, never
a silent blank.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import glob
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from b200lab.records import results as results_io
from b200lab.records.points import (
    attention_ran,
    card,
    compile_ran,
    precision_ran,
    what_ran,
)

# markers start a line, so an indented example of a block (docs/mlflow.md) is text, not a block
BLOCK = re.compile(r"^<!-- b200lab:table\b(?P<spec>.*?)-->\n(?P<body>.*?)^<!-- /b200lab:table -->", re.S | re.M)
OPEN, CLOSE = re.compile(r"^<!-- b200lab:table\b", re.M), re.compile(r"^<!-- /b200lab:table -->", re.M)
SPEC_KEYS = {
    "files",
    "where",
    "rows",
    "columns",
    "metric",
    "metrics",
    "format",
    "ratio",
    "ratio_format",
    "runs",
    "names",
    "headers",
    "vs",
    "sort",
    "csv",
    "limit",
}
RECORD_ROOTS = ("status", "point", "effective", "requested", "env", "metrics", "mlflow", "config", "measurement")
DERIVED: dict[str, Callable[[dict], Any]] = {
    "card": card,
    "ran": what_ran,
    "precision_ran": precision_ran,
    "attention_ran": attention_ran,
    "compile_ran": compile_ran,
    "run": lambda r: short_id(r),
}
FORMATS = {  # a metric's default format; others get "{:.4g}"
    "tokens_per_s": "{:,.0f}",
    "tokens_per_s_per_gpu": "{:,.0f}",
    "step_ms_p50": "{:.2f}",
    "step_ms_p99": "{:.2f}",
    "step_ms_mean": "{:.2f}",
    "n_steps": "{:.0f}",
    "tflops": "{:.1f}",
    "attn_tflops": "{:.1f}",
    "gemm_tflops": "{:.1f}",
    "mfu": "{:.3f}",
    "hbm_gbps": "{:,.0f}",
    "allreduce_busbw_gbps": "{:.1f}",
    "busbw_gbps": "{:.1f}",
    "peak_mem_allocated_gb": "{:.2f}",
    "energy_j": "{:,.0f}",
    "energy_j_sampled": "{:,.0f}",
    "tokens_per_j": "{:.1f}",
    "sm_clock_mhz_mean": "{:.0f}",
    "perplexity": "{:.4f}",
}
RUN_ID_CHARS = 8
CSV_ROW = "csv_row"  # a record made from a CSV row holds its columns (and `file`) under this key
NUMERIC_CELL = re.compile(
    r"(?:(?:[-+]?[\d,.]+(?:e[-+]\d+)?%?x?|oom|error|interrupted)(?: \([0-9a-f]{8}\))?|-|–|reference)"
)  # right-aligned


class TableSpecError(ValueError):
    """A spec that cannot make a table; the message names the file and line (exit 2)."""


def short_id(record: dict) -> str:
    return ((record.get("mlflow") or {}).get("run_id") or "-")[:RUN_ID_CHARS]


def value_of(record: dict, key: str) -> Any:
    """``seq.len`` -> config's seq.len; ``status`` / ``effective.…`` / ``env.…`` / ``metrics.…`` ->
    the record's; DERIVED by name."""
    if CSV_ROW in record:
        return record[CSV_ROW].get(key)
    if key in DERIVED:
        return DERIVED[key](record)
    parts = key.split(".")
    node: Any = record if parts[0] in RECORD_ROOTS else record.get("config")
    for part in parts:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _matches(record: dict, where: dict) -> bool:
    for key, want in where.items():
        wanted = want if isinstance(want, list) else [want]
        have = value_of(record, key)
        if have not in wanted and str(have) not in map(str, wanted):
            return False
    return True


@dataclass
class Column:
    """One metric column: which metric, how it reads."""

    metric: str
    header: str
    format: str


@dataclass
class Spec:
    where: str  # "FILE:LINE", for messages
    records: list[dict]
    raw: dict
    rows: list = field(default_factory=list)

    def fail(self, message: str) -> TableSpecError:
        return TableSpecError(f"{self.where}: {message}")


def _column(item: Any, default_format: str | None, spec: Spec) -> Column:
    if isinstance(item, str):
        item = {"metric": item}
    if not isinstance(item, dict) or not isinstance(item.get("metric"), str):
        raise spec.fail(f"a metric is a name or {{metric: NAME, header: TEXT, format: FORMAT}}, not {item!r}")
    metric = item["metric"]
    return Column(
        metric,
        str(item.get("header", metric)),
        str(item.get("format") or default_format or FORMATS.get(metric, "{:.4g}")),
    )


def _format(value: Any, fmt: str, spec: Spec) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise spec.fail(f"format {fmt!r} cannot show {value!r} ({exc})") from exc


def _cell(record: dict | None, col: Column, spec: Spec) -> str:
    """The metric's value, or the run's status where it failed without one."""
    if record is None:
        return "-"
    value = (record.get("metrics") or {}).get(col.metric)
    if value is None and record.get("status") != "ok":
        return str(record.get("status"))
    return _format(value, col.format, spec)


def _number(record: dict | None, metric: str) -> float | None:
    value = None if record is None else (record.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _ratio_text(a: float | None, b: float | None, fmt: str, spec: Spec) -> str:
    return _format(a / b, fmt, spec) if a is not None and b else "-"


def _parse_ratio(text: Any, labels: list[str], spec: Spec) -> tuple[str, str]:
    a, sep, b = str(text).partition(" / ")
    a, b = a.strip(), b.strip()
    if not sep or not a or not b:
        raise spec.fail(
            f"ratio {text!r}: expected 'A / B' (spaces around the slash), A and B among the columns {labels}"
        )
    for side in (a, b):
        if side not in labels:
            raise spec.fail(f"ratio {text!r}: {side!r} is not a column; the columns are {labels}")
    return a, b


def _label(spec: Spec, key: str, value: Any) -> str:
    names = (spec.raw.get("names") or {}).get(key) or {}
    for k, v in names.items():
        if k == value or str(k) == str(value):
            return str(v)
    return "-" if value is None else str(value)


def _header(spec: Spec, key: str) -> str:
    return str((spec.raw.get("headers") or {}).get(key, key))


def _sorted_groups(spec: Spec, keys: list[str]) -> list[tuple[tuple, list[dict]]]:
    groups: dict[tuple, list[dict]] = {}
    for r in spec.records:
        groups.setdefault(tuple(_hashable(value_of(r, k)) for k in keys), []).append(r)
    if spec.raw.get("sort", True) is False:
        return list(groups.items())
    first = {k: i for i, k in enumerate(groups)}

    def order(item):
        values, _ = item
        return tuple((0, float(v), 0) if isinstance(v, (int, float)) else (1, 0.0, first[values]) for v in values)

    return sorted(groups.items(), key=order)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _one(spec: Spec, runs: list[dict], what: str) -> dict:
    if len(runs) > 1:
        raise spec.fail(
            f"{what} is claimed by {len(runs)} runs ({', '.join(short_id(r) for r in runs)}): "
            "add a row key or a `where` that tells them apart"
        )
    return runs[0]


def _check_metrics(spec: Spec, metrics: list[str]) -> None:
    for metric in metrics:
        if not any(metric in (r.get("metrics") or {}) for r in spec.records):
            raise spec.fail(f"metric {metric!r} is in none of the {len(spec.records)} selected runs")


def _pivot(spec: Spec, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    raw = spec.raw
    col_spec = raw["columns"] if isinstance(raw["columns"], dict) else {"key": raw["columns"]}
    if "metric" not in raw:
        raise spec.fail("a table with `columns` needs `metric` (the value of each cell)")
    col_key = str(col_spec.get("key"))
    values = col_spec.get("values")
    if values is None:
        values = list(dict.fromkeys(_hashable(value_of(r, col_key)) for r in spec.records))
    labels = {v: str(v) for v in values} if isinstance(values, list) else {k: str(v) for k, v in values.items()}
    col = _column(
        raw["metric"] if isinstance(raw["metric"], dict) else {"metric": raw["metric"]}, raw.get("format"), spec
    )
    _check_metrics(spec, [col.metric])
    names = [str(v) for v in labels]  # ratios and the runs column name columns by their values: `flex / sdpa`
    ratios = [_parse_ratio(t, names, spec) for t in raw.get("ratio") or []]
    header = [_header(spec, k) for k in keys] + list(labels.values()) + [f"{a} / {b}" for a, b in ratios]
    if raw.get("runs"):
        header.append(f"runs ({', '.join(labels.values())})")
    rows = []
    for values_, group in _sorted_groups(spec, keys):
        cells = {}
        for value in labels:
            runs = [
                r for r in group if _hashable(value_of(r, col_key)) == value or str(value_of(r, col_key)) == str(value)
            ]
            cells[str(value)] = (
                _one(spec, runs, f"the cell {dict(zip(keys, values_))}, {col_key}={value}") if runs else None
            )
        row = [_label(spec, k, v) for k, v in zip(keys, values_)] + [_cell(cells[n], col, spec) for n in names]
        row += [
            _ratio_text(
                _number(cells[a], col.metric), _number(cells[b], col.metric), raw.get("ratio_format", "{:.3f}"), spec
            )
            for a, b in ratios
        ]
        if raw.get("runs"):
            row.append(", ".join(short_id(cells[n]) if cells[n] else "-" for n in names))
        rows.append(row)
    return header, rows


def _vs_columns(spec: Spec) -> list[tuple[Column, dict, bool]]:
    out = []
    for item in spec.raw.get("vs") or []:
        if not isinstance(item, dict) or "metric" not in item or not isinstance(item.get("where"), dict):
            raise spec.fail(
                f"a vs column is {{metric: NAME, where: {{KEY: VALUE}}, header: TEXT, format: FORMAT, change: BOOL}}, "
                f"not {item!r}"
            )
        refs = [r for r in spec.records if _matches(r, item["where"])]
        if not refs:
            raise spec.fail(f"vs {item['where']}: no selected run matches")
        ref = _one(spec, refs, f"the reference {item['where']}")
        col = Column(
            str(item["metric"]), str(item.get("header", f"vs {item['where']}")), str(item.get("format", "{:.3f}"))
        )
        out.append((col, ref, bool(item.get("change"))))
    return out


def _by_metrics(spec: Spec, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    raw = spec.raw
    metrics = raw.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise spec.fail("give `metrics: [NAME, ...]` (one column each), or `columns` with `metric`")
    cols = [_column(m, None, spec) for m in metrics]
    _check_metrics(spec, [c.metric for c in cols])
    vs = _vs_columns(spec)
    header = [_header(spec, k) for k in keys] + [c.header for c in cols] + [c.header for c, _, _ in vs]
    header += ["run"] if raw.get("runs", True) else []
    rows = []
    for values, group in _sorted_groups(spec, keys):
        r = _one(spec, group, f"the row {dict(zip(keys, values))}")
        row = [_label(spec, k, v) for k, v in zip(keys, values)] + [_cell(r, c, spec) for c in cols]
        for col, ref, change in vs:
            a, b = _number(r, col.metric), _number(ref, col.metric)
            row.append(
                "reference"
                if r is ref
                else (_format(a / b - 1 if change else a / b, col.format, spec) if a is not None and b else "-")
            )
        rows.append(row + ([short_id(r)] if raw.get("runs", True) else []))
    return header, rows


def _by_run_ids(spec: Spec) -> tuple[list[str], list[list[str]]]:
    raw = spec.raw
    labels = raw.get("columns")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise spec.fail("rows naming runs need `columns: [HEADER, ...]`, one per run of each row")
    ratios = [_parse_ratio(t, labels, spec) for t in raw.get("ratio") or []]
    header = [_header(spec, "label")] + labels + [f"{a} / {b}" for a, b in ratios]
    rows = []
    for item in raw["rows"]:
        if (
            not isinstance(item, dict)
            or not {"label", "metric", "runs"} <= set(item)
            or not isinstance(item["runs"], list)
        ):
            raise spec.fail(
                f"a row is {{label: TEXT, metric: NAME, format: FORMAT, runs: [RUN_ID or null, ...]}}, not {item!r}"
            )
        if len(item["runs"]) != len(labels):
            raise spec.fail(f"row {item['label']!r} names {len(item['runs'])} runs for {len(labels)} columns")
        col = _column({"metric": item["metric"], "format": item.get("format")}, raw.get("format"), spec)
        runs = [None if rid is None else _find_run(spec, str(rid)) for rid in item["runs"]]
        cells = []
        for r in runs:
            if r is not None and _number(r, col.metric) is None and r.get("status") == "ok":
                raise spec.fail(f"run {short_id(r)} has no metric {col.metric!r}")
            cells.append("–" if r is None else f"{_cell(r, col, spec)} ({short_id(r)})")
        numbers = dict(zip(labels, (_number(r, col.metric) for r in runs)))
        rows.append(
            [
                str(item["label"]),
                *cells,
                *(_ratio_text(numbers[a], numbers[b], raw.get("ratio_format", "{:.3f}"), spec) for a, b in ratios),
            ]
        )
    return header, rows


def _find_run(spec: Spec, run_id: str) -> dict:
    found = [r for r in spec.records if ((r.get("mlflow") or {}).get("run_id") or "").startswith(run_id)]
    if not found:
        raise spec.fail(f"run {run_id!r} is in none of the {len(spec.records)} selected results.json files")
    return _one(spec, found, f"run id {run_id!r}")


def parse_spec(text: str, where: str) -> dict:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TableSpecError(f"{where}: the spec is not YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise TableSpecError(f"{where}: the spec is a YAML mapping (files:, rows:, ...), found {type(raw).__name__}")
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise TableSpecError(
            f"{where}: unknown spec key(s) {', '.join(unknown)}; known: {', '.join(sorted(SPEC_KEYS))}"
        )
    if raw.get("files") and raw.get("csv"):
        raise TableSpecError(f"{where}: give `files` (results.json) or `csv` (CSV files), not both")
    if not raw.get("files") and not raw.get("csv"):
        raise TableSpecError(
            f"{where}: `files` is required (globs of results.json files, relative to the Markdown file), "
            "or `csv` (globs of CSV files)"
        )
    csv_rows = bool(raw.get("csv")) and isinstance(raw.get("columns"), list)
    if not raw.get("rows") and not csv_rows:
        raise TableSpecError(
            f"{where}: `rows` is required (config keys, or rows naming runs; "
            "with `csv`, `columns: [{column, header, format}]` needs none)"
        )
    if "limit" in raw and (
        not csv_rows or not isinstance(raw["limit"], int) or isinstance(raw["limit"], bool) or raw["limit"] < 1
    ):
        raise TableSpecError(
            f"{where}: `limit` is a positive integer, for a `csv` table with `columns: [...]`; got {raw['limit']!r}"
        )
    return raw


def _paths(raw: dict, key: str, base: Path, where: str) -> list[Path]:
    """The files the spec's ``key`` globs name, relative to ``base``, each once, in the globs' order."""
    patterns = raw[key] if isinstance(raw[key], list) else [raw[key]]
    paths: list[Path] = []
    for pattern in patterns:
        matched = sorted(Path(p) for p in glob.glob(str(base / pattern), recursive=True))
        if not matched:
            raise TableSpecError(f"{where}: {key} {pattern!r} matches nothing under {base}")
        paths += [p for p in matched if p not in paths]
    return paths


def _filtered(records: list[dict], raw: dict, files: int, where: str) -> list[dict]:
    filters = raw.get("where") or {}
    if not isinstance(filters, dict):
        raise TableSpecError(f"{where}: `where` is a mapping KEY: VALUE (or [VALUES]), not {filters!r}")
    records = [r for r in records if _matches(r, filters)]
    if not records:
        raise TableSpecError(
            f"{where}: no {'row' if raw.get('csv') else 'run'} of {files} files passes where {filters}"
        )
    return records


def load(raw: dict, base: Path, where: str) -> list[dict]:
    """The records the spec's ``files`` globs name (relative to ``base``), filtered by ``where``."""
    paths = _paths(raw, "files", base, where)
    try:
        records = [results_io.read(p) for p in paths]
    except results_io.ResultsError as exc:
        raise TableSpecError(f"{where}: {exc}") from exc
    return _filtered(records, raw, len(paths), where)


def _csv_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _csv_names(raw: dict) -> set[str]:
    """The column names a csv spec uses: row keys, the pivot key, metrics, columns, where keys, sort."""
    names = set(raw.get("where") or {})
    rows, cols = raw.get("rows"), raw.get("columns")
    names |= {rows} if isinstance(rows, str) else {k for k in rows or [] if isinstance(k, str)}
    if isinstance(cols, list):
        names |= {c if isinstance(c, str) else c.get("column") for c in cols if isinstance(c, (str, dict))}
    elif cols:
        names.add(cols.get("key") if isinstance(cols, dict) else cols)
    metric = raw.get("metric")
    names.add(metric.get("metric") if isinstance(metric, dict) else metric)
    names |= {
        m if isinstance(m, str) else m.get("metric") for m in raw.get("metrics") or [] if isinstance(m, (str, dict))
    }
    if isinstance(raw.get("sort"), str):
        names.add(raw["sort"].removeprefix("-"))
    return {str(n) for n in names if n is not None}


def load_csv(raw: dict, base: Path, where: str) -> list[dict]:
    """One record per row of the CSV files the spec's ``csv`` globs name, filtered by ``where``;
    a column the spec names that a file lacks is an error."""
    paths = _paths(raw, "csv", base, where)
    wanted = _csv_names(raw)
    records = []
    for path in paths:
        name = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                missing = sorted(wanted - set(header) - {"file"})
                if missing:
                    raise TableSpecError(
                        f"{where}: column(s) {', '.join(map(repr, missing))} not in {name} "
                        f"(its columns: {', '.join(header) or 'none, the file is empty'})"
                    )
                for row in reader:
                    if None in row or None in row.values():
                        raise TableSpecError(
                            f"{where}: {name}:{reader.line_num}: {len(header)} columns in the header, "
                            "a different number in this row"
                        )
                    values = {k: _csv_value(v) for k, v in row.items()}
                    records.append({CSV_ROW: {**values, "file": name}, "metrics": values, "status": "ok"})
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise TableSpecError(f"{where}: cannot read {name} ({exc})") from exc
    return _filtered(records, raw, len(paths), where)


def _csv_table(spec: Spec) -> tuple[list[str], list[list[str]]]:
    """One table row per CSV row: ``columns: [{column, header, format}]``, ``sort``, ``limit``."""
    cols = []
    for item in spec.raw["columns"]:
        item = {"column": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("column"), str):
            raise spec.fail(f"a csv column is a name or {{column: NAME, header: TEXT, format: FORMAT}}, not {item!r}")
        cols.append(Column(item["column"], str(item.get("header", item["column"])), str(item.get("format", ""))))
    records = spec.records
    order = spec.raw.get("sort")
    if isinstance(order, str):
        key = order.removeprefix("-")
        records = sorted(
            records, key=lambda r: (isinstance(value_of(r, key), str), value_of(r, key)), reverse=order.startswith("-")
        )
    records = records[: spec.raw.get("limit")]
    auto = lambda v: "{}" if isinstance(v, (str, int)) else "{:.4g}"  # noqa: E731
    return [c.header for c in cols], [
        [_format(value_of(r, c.metric), c.format or auto(value_of(r, c.metric)), spec) for c in cols] for r in records
    ]


def render(header: list[str], rows: list[list[str]]) -> str:
    numeric = [all(NUMERIC_CELL.fullmatch(row[i]) for row in rows) for i in range(len(header))]
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]) + "\n"


def table(spec_text: str, base: Path, where: str) -> str:
    """The Markdown table a spec makes from the results.json files under ``base``."""
    raw = parse_spec(spec_text, where)
    if raw.get("csv"):
        spec = Spec(where, load_csv(raw, base, where), {"runs": False, **raw})  # CSV rows have no run ids
        if isinstance(raw.get("columns"), list):
            return render(*_csv_table(spec))
    else:
        spec = Spec(where, load(raw, base, where), raw)
    rows = raw["rows"]
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        return render(*_by_run_ids(spec))
    keys = [rows] if isinstance(rows, str) else rows
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise spec.fail(f"`rows` is a list of keys (seq.len, attention.name, ...) or of rows naming runs, not {rows!r}")
    return render(*(_pivot(spec, keys) if raw.get("columns") else _by_metrics(spec, keys)))


def refresh(text: str, path: Path) -> tuple[str, int]:
    """``text`` with every block's table regenerated, and the number of blocks."""
    count = 0

    def one(match: re.Match) -> str:
        nonlocal count
        count += 1
        where = f"{path}:{text.count(chr(10), 0, match.start()) + 1}"
        return (
            match.group(0)[: match.start("body") - match.start()]
            + table(match.group("spec"), path.parent, where)
            + "<!-- /b200lab:table -->"
        )

    out = BLOCK.sub(one, text)
    opened, closed = len(OPEN.findall(text)), len(CLOSE.findall(text))
    if opened != count or closed != count:
        raise TableSpecError(
            f"{path}: {opened} block start(s), {closed} end(s), {count} whole block(s): "
            "each `<!-- b200lab:table ... -->` needs a `<!-- /b200lab:table -->` after its table"
        )
    return out, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="b200lab tables",
        description="Regenerate the results tables embedded in Markdown files "
        "(<!-- b200lab:table SPEC --> ... <!-- /b200lab:table -->) from their results.json files.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="Markdown files holding table blocks")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; print a diff of each stale table and exit 1"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    stale: list[str] = []
    blocks = 0
    for path in args.files:
        try:
            text = path.read_text()
            fresh, count = refresh(text, path)
        except OSError as exc:
            print(f"tables: {path}: cannot read ({exc.strerror or exc})", file=sys.stderr)
            return 2
        except TableSpecError as exc:
            print(f"tables: {exc}", file=sys.stderr)
            return 2
        blocks += count
        if fresh == text:
            continue
        stale.append(str(path))
        if args.check:
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(True), fresh.splitlines(True), f"{path} (committed)", f"{path} (from the data)"
                )
            )
        else:
            path.write_text(fresh)
            print(f"tables: {path}: {count} table(s) regenerated")
    if args.check and stale:
        print(
            f"tables: stale: {len(stale)} file(s) hold tables that differ from their results.json files: run "
            f"`b200lab tables {' '.join(stale)}` and commit",
            file=sys.stderr,
        )
        return 1
    print(
        f"tables: {blocks} table(s) in {len(args.files)} file(s) {'match their data' if args.check else 'up to date'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
