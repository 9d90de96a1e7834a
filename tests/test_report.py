"""`b200lab report` on a real 4-point sweep: from MLflow (values read back from the store) and from
its results.json folders; line charts against the swept value; speedups against a reference."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tiny_sweep import tiny_sweep

from support import run_cli

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, template_store):
    return tiny_sweep(tmp_path_factory, template_store)


def _row(md: str, run_id: str) -> list[str]:
    """The run's row of the key-metrics table (its row in the requested-vs-effective table comes first)."""
    config_row, metrics_row = [line for line in md.splitlines() if line.endswith(f"| {run_id} |")]
    return [c.strip().replace("\\|", "|") for c in metrics_row.strip("|").split(" | ")]


@pytest.mark.e2e
def test_report_from_mlflow_holds_every_point_with_the_values_mlflow_has(sweep, tmp_path):
    proc = run_cli(
        ["report", "--parent", sweep["parent_run_id"], "--out", "rep", "--title", "tiny"],
        tmp_path,
        {"MLFLOW_TRACKING_URI": sweep["uri"]},
    )
    assert proc.returncode == 0, proc.output
    md = (tmp_path / "rep" / "report.md").read_text()
    client = MlflowClient(tracking_uri=sweep["uri"])
    children = client.search_runs(
        [client.get_run(sweep["parent_run_id"]).info.experiment_id],
        f"tags.mlflow.parentRunId = '{sweep['parent_run_id']}'",
    )
    assert len(children) == 4
    header = next(line for line in md.splitlines() if line.startswith("| point | status | tokens/s"))
    columns = [c.strip() for c in header.strip("|").split(" | ")]
    for child in children:
        m, tags = child.data.metrics, child.data.tags
        row = dict(zip(columns, _row(md, child.info.run_id)))
        assert row["point"] == child.info.run_name and row["status"] == "ok"
        assert row["tokens/s (p10–p90 band)"].startswith(f"{m['tokens_per_s']:,.0f} (")
        assert row["step p50 ms (p10–p90)"].startswith(f"{m['step_ms_p50']:.2f} (")
        assert (
            row["n steps"] == "5"
            and row["card"] == "cpu"
            and row["git sha"] == tags["git_sha"][:12] + "+dirty" * ("+dirty" in tags["git_sha"])
        )
        speedup = row[next(c for c in columns if c.startswith("speedup vs precision=fp32"))]
        assert (
            speedup == "reference"
            if child.data.params["precision.name"] == "fp32"
            else re.match(r"\d+\.\d{3}x \(", speedup)
        )
    assert md.count("| fp32 → float32 |") == 2 and md.count("| bf16 → bfloat16 |") == 2  # requested vs effective
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("<tr>") == 1 + 4 + 1 + 4
    chart = (tmp_path / "rep" / "charts" / "tokens_per_s_vs_seq_len.png").read_bytes()
    assert chart[:8] == PNG
    # self-contained: every image inline (MLflow's artifact preview cannot load a neighbouring file)
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
    assert chart in [base64.b64decode(src.split(",", 1)[1]) for src in sources]
    assert "![tokens/s](charts/tokens_per_s_vs_seq_len.png)" in md


@pytest.mark.e2e
def test_report_from_results_folders_with_a_chosen_reference(sweep, tmp_path):
    proc = run_cli(
        ["report", sweep["sweep_dir"], "--out", str(tmp_path / "rep"), "--reference", "seq.len=32", "--link-images"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "speedup vs seq.len=32 (tokens_per_s)" in md and md.count("| reference |") == 2
    html = (tmp_path / "rep" / "report.html").read_text()
    assert '<img src="charts/tokens_per_s_vs_seq_len.png"' in html and "data:image" not in html


@pytest.mark.e2e
def test_line_chart_axis_is_the_swept_numeric_value_one_line_per_other_key(sweep):
    from b200lab.records import results as results_io
    from b200lab.reports.charts import choose_axis, lines

    records = [r for _, r in results_io.read_all(results_io.find([Path(sweep["sweep_dir"])]))[0]]
    axis = choose_axis(records)
    assert (axis.x, axis.numeric, axis.lines) == ("seq.len", True, ["precision"])
    drawn = {line.label: [(x, v) for x, v, *_ in line.points] for line in lines(records, "tokens_per_s", axis)}
    expected = {}
    for r in records:
        expected.setdefault(f"precision={r['config']['precision']['name']}", []).append(
            (float(r["config"]["seq"]["len"]), r["metrics"]["tokens_per_s"])
        )
    assert drawn == {k: sorted(v) for k, v in expected.items()}


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args, message",
    [
        (["--parent", "0123456789abcdef"], "no run '0123456789abcdef'"),
        (["--experiment", "nope", "--parent", "latest"], "no experiment 'nope'"),
        (["SWEEP", "--reference", "fp32"], "--reference 'fp32': expected KEY=VALUE"),
        (["no/such/dir"], "no results.json under no/such/dir"),
    ],
)
def test_report_bad_selection_says_why_and_exits_2(sweep, tmp_path, args, message):
    args = [sweep["sweep_dir"] if a == "SWEEP" else a for a in args]
    proc = run_cli(["report", *args, "--out", "rep"], tmp_path, {"MLFLOW_TRACKING_URI": sweep["uri"]})
    assert proc.returncode == 2 and message in proc.stderr, proc.output
    assert not (tmp_path / "rep").exists()


SERVE_RUNS = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "2026-11-26-serving-tp2" / "runs"


def test_serve_sweep_report_shows_latency_and_goodput_and_no_speedup_across_rates(tmp_path):
    """A serve sweep over request rates (recorded GPU runs): each point's percentiles and goodput as
    results.json holds them, charts of them against the rate, and no 'speedup' of one offered load
    over another."""
    import json

    from b200lab.reports import sweep_report

    files = sorted(SERVE_RUNS.glob("single_q*.results.json"))
    records = [json.loads(f.read_text()) for f in files]
    assert len(records) == 3 and len({r["config"]["workload"]["options"]["qps"] for r in records}) == 3
    assert sweep_report.default_reference(records) == {}
    md_path, _ = sweep_report.write(records, tmp_path, "serve", "test", made="2026-11-26")
    md = md_path.read_text()
    assert "speedup vs" not in md
    table = md.split("## Serving: latency percentiles and goodput", 1)[1]
    header = [c.strip() for c in table.split("\n| point |", 1)[1].split("\n", 1)[0].strip("|").split("|")]
    for r in records:
        m, run = r["metrics"], r["mlflow"]["run_id"]
        row = next(line for line in table.splitlines() if line.endswith(f"| {run} |"))
        cells = dict(zip(["point", *header], [c.strip() for c in row.strip("|").split(" | ")]))
        assert cells["itl p50 ms"] == f"{m['itl_ms_p50']:.1f}" and cells["ttft p99 ms"] == f"{m['ttft_ms_p99']:,.1f}"
        assert (
            cells["goodput fraction"] == f"{m['goodput_fraction']:.3f}"
            and cells["completed"] == f"{m['completed']:.0f}"
        )
    charts = {p.name for p in (tmp_path / "charts").iterdir()}
    assert {"itl_ms_p50_vs_workload_options_qps.png", "goodput_fraction_vs_workload_options_qps.png"} <= charts
    assert (tmp_path / "charts" / "itl_ms_p50_vs_workload_options_qps.png").read_bytes().startswith(PNG)


def test_a_serve_sweep_that_varies_more_than_its_load_compares_within_a_rate():
    """Rates and parallelism swept together, against parallelism=tp: each one-GPU point is compared
    with the tp2 point of its own rate, never across rates."""
    import json

    from b200lab.reports import sweep_report

    files = sorted(SERVE_RUNS.glob("single_q*.results.json")) + [
        SERVE_RUNS / f"tp2_q{q}.results.json" for q in (1, 2, 4)
    ]
    records = [json.loads(f.read_text()) for f in files]
    assert list(sweep_report.default_reference(records)) == ["parallelism"]  # not the load
    refs = sweep_report.reference_of(records, {"parallelism": "tp"})
    for r, ref in zip(records, refs):
        assert (
            ref is not None and ref["config"]["workload"]["options"]["qps"] == r["config"]["workload"]["options"]["qps"]
        )
        assert ref["config"]["parallelism"]["name"] == "tp"


def test_a_rate_sweep_with_every_request_at_t0_is_drawn_as_categories(tmp_path):
    """qps=inf has no place on a numeric axis: the rates become categories, and every chart draws."""
    import json

    from b200lab.reports.charts import choose_axis, line_charts

    records = [json.loads((SERVE_RUNS / f"tp2_q{q}.results.json").read_text()) for q in ("1", "2", "4", "inf")]
    axis = choose_axis(records)
    assert axis is not None and not axis.numeric and axis.x == "workload.options.qps"
    assert sorted(axis.categories) == ["1", "2", "4", "inf"]
    charts = line_charts(records, tmp_path)
    assert any(p.name.startswith("itl_ms_p50") for _, p in charts) and all(
        p.read_bytes().startswith(PNG) for _, p in charts
    )
