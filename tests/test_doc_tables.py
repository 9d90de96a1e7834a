"""The results tables embedded in the repository's Markdown (``<!-- b200lab:table ... -->`` blocks,
b200lab/reports/doc_tables.py) are what their results.json files give today; a bad spec is refused with a
message that names the file, line and problem; a ratio column and the ratios README prose states
agree with a computation straight from the raw results.json files."""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from b200lab.reports import doc_tables
from support import MEASUREMENTS, REPO, metric_of, one_line, run_record

RERUN = (
    "run `b200lab tables README.md docs/measurements/*/README.md` (or experiments/scripts/regenerate_reports.sh) and "
    "commit"
)


def markdown_with_tables() -> list[Path]:
    files = [REPO / "README.md", *sorted(REPO.glob("docs/**/*.md"))]
    return [p for p in files if doc_tables.OPEN.search(p.read_text())]


@pytest.mark.parametrize("path", markdown_with_tables(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_table_matches_its_data(path):
    text = path.read_text()
    fresh, count = doc_tables.refresh(text, path)
    assert count > 0
    assert fresh == text, f"{path.relative_to(REPO)}: a table differs from its results.json files: {RERUN}"


def test_every_measurement_readme_has_generated_tables():
    readmes = sorted(MEASUREMENTS.glob("*/README.md"))
    assert readmes
    assert set(markdown_with_tables()) >= {REPO / "README.md", *readmes}


# --- a ratio column against the raw files -------------------------------------------------------


def raw(folder: str, pattern: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((MEASUREMENTS / folder).glob(pattern))]


def block_rows(path: Path, index: int) -> list[list[str]]:
    """The cells of the ``index``-th generated table in ``path`` (header and rule dropped)."""
    body = list(doc_tables.BLOCK.finditer(path.read_text()))[index].group("body")
    lines = [line for line in body.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def test_microbenchmark_ratio_column_is_flex_over_sdpa_from_the_raw_files():
    runs = raw("2026-11-26-attention", "runs/attn_micro_*.results.json")
    by = {
        (r["config"]["seq"]["len"], r["config"]["workload"]["options"]["backward"], r["config"]["attention"]["name"]): r
        for r in runs
    }
    rows = block_rows(MEASUREMENTS / "2026-11-26-attention" / "README.md", 0)
    assert len(rows) == 6
    seq = {"4K": 4096, "16K": 16384, "32K": 32768}
    for row in rows:
        key = (seq[row[0]], row[1] == "forward + backward")
        flex, sdpa = by[(*key, "flex")], by[(*key, "sdpa")]
        expected = flex["metrics"]["attn_tflops"] / sdpa["metrics"]["attn_tflops"]
        assert float(row[4]) == pytest.approx(expected, abs=5e-4), row
        assert row[5] == f"{sdpa['mlflow']['run_id'][:8]}, {flex['mlflow']['run_id'][:8]}"


# --- ratios stated in prose, against the raw files -----------------------------------------------

PROSE_RATIOS = [  # (file, the text that states it, numerator run, denominator run, metric, stated ratio, decimals)
    ("2026-11-26-attention/README.md", "flex is 1.056x sdpa", "84b2d144", "46587518", "tokens_per_s", 1.056, 3),
    ("2026-11-26-attention/README.md", "te 0.88x", "91153fef", "46587518", "tokens_per_s", 0.88, 2),
    ("2026-11-26-attention/README.md", "1.22x faster than full", "23fda045", "84b2d144", "tokens_per_s", 1.22, 2),
    ("2026-11-26-attention/README.md", "104,383 tokens/s (1.045x)", "a7c348d2", "976fe3fe", "tokens_per_s", 1.045, 3),
    (
        "2026-11-26-fp8-moe/README.md",
        "fp8: 64,709 tokens/s (`0fd87948`), 1.386×",
        "0fd87948",
        "ffc0c379",
        "tokens_per_s",
        1.386,
        3,
    ),
    (
        "2026-11-26-fp8-moe/README.md",
        "fp8: 70,145 tokens/s (`e9e96f1f`), 0.70×",
        "e9e96f1f",
        "b492e746",
        "tokens_per_s",
        0.70,
        2,
    ),
    ("2026-11-26-fp8-moe/README.md", "The speedup is 1.392×", "7a7ad44d", "4358f661", "tokens_per_s", 1.392, 3),
    ("2026-11-26-h200x2-nccl/README.md", "(run e6ac9956), 1.65x", "e6ac9956", "01999527", "tokens_per_s", 1.65, 2),
    (
        "2026-11-26-seams-reverify/README.md",
        "476,268 on two (8eaeeecb), 1.75x",
        "8eaeeecb",
        "c4494bf6",
        "tokens_per_s",
        1.75,
        2,
    ),
    ("2026-11-26-parallel-partial/README.md", "0.912 of linear", "500696a9", "724e6535", "tokens_per_s", 2 * 0.912, 2),
    ("2026-11-26-parallel-scaling/README.md", "**FSDP2 0.968**", "a2807b48", "17c39c75", "tokens_per_s", 2 * 0.968, 3),
    ("2026-11-26-parallel-scaling/README.md", "**DDP 0.959**", "afe521d1", "cc9aa424", "tokens_per_s", 2 * 0.959, 3),
    (
        "2026-11-26-serving-preset/README.md",
        "token is 4.8x slower than one GPU's",
        "d54d3426",
        "869b65be",
        "itl_ms_p50",
        4.8,
        1,
    ),
    ("2026-11-26-serving-preset/README.md", "61.0 ms here is 2.7x that", "869b65be", "be46e3c1", "itl_ms_p50", 2.7, 1),
    (
        "2026-11-26-serving-compiled/README.md",
        "(be46e3c1), 0.59 of the eager time",
        "d1f8f8e2",
        "be46e3c1",
        "itl_ms_p50",
        0.59,
        2,
    ),
    (
        "2026-11-26-serving-tp2/README.md",
        "a token takes 2.9x as long as on one GPU",
        "324cf386",
        "a6a07bf2",
        "itl_ms_p50",
        2.9,
        1,
    ),
    ("2026-11-26-serving-tp2/README.md", "is made 12.7x faster", "d54d3426", "4708d7db", "itl_ms_p50", 12.7, 1),
]


@pytest.mark.parametrize("claim", PROSE_RATIOS, ids=lambda c: f"{c[0].split('/')[0][11:]}:{c[5]}")
def test_ratio_stated_in_prose_matches_the_runs(claim):
    file, text, a, b, metric, stated, decimals = claim
    assert text in (MEASUREMENTS / file).read_text(), f"{file} no longer says {text!r}: update PROSE_RATIOS"
    assert round(metric_of(a, metric) / metric_of(b, metric), decimals) == pytest.approx(
        stated, abs=10**-decimals / 2 + 1e-9
    )


def test_mfu_per_ghz_stated_in_prose():
    text = (MEASUREMENTS / "2026-11-26-seams-reverify" / "README.md").read_text()
    for run_id, stated in (("16487e50", "0.3619"), ("e198f690", "0.3622"), ("caeeef93", "0.3624")):
        assert f"{stated} ({run_id})" in text
        assert f"{metric_of(run_id, 'mfu') / metric_of(run_id, 'sm_clock_mhz_mean') * 1000:.4f}" == stated


FAMILIES = MEASUREMENTS / "2026-11-26-families"
FAMILIES_COMPILED = MEASUREMENTS / "2026-11-26-families-compiled"
REFERENCE_RATIOS = [  # (folder, the README's words, lab run, stated ratio)
    ("2026-11-26-families", "autocast 816.97 vs 814.25 images/s, **1.003x**", "e310026c", 1.003),
    ("2026-11-26-families", "bf16 957.80 vs 967.16, **0.990x**", "646dc64c", 0.990),
    ("2026-11-26-families", "autocast 295.18 vs 229.97\n  samples/s, **1.284x**", "0aead49f", 1.284),
    ("2026-11-26-families", "bf16 368.16 vs 247.30, **1.489x**", "66e10f89", 1.489),
    ("2026-11-26-families-compiled", "1127.23 vs 1114.62 images/s, **1.011x**", "ae90677b", 1.011),
    ("2026-11-26-families-compiled", "1015.96 vs 1005.20, **1.011x**", "399eff06", 1.011),
    ("2026-11-26-families-compiled", "981.62 vs 972.02, **1.010x**", "7c721b61", 1.010),
    ("2026-12-07-baseline", "970.06 vs 961.98, **1.008x**", "beace53b", 1.008),
]
REFERENCE_PRECISION = {"bf16_autocast": "autocast", "bf16": "bf16"}  # the lab's precision -> reference_families.py's


def references(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "runs" / "reference_families.jsonl").read_text().splitlines()]


def reference_for(folder: Path, lab: dict) -> dict:
    """The one line of the folder's reference_families.jsonl that ran what the lab run ran: the same
    model, precision, compile (or not), trials and batch."""
    cfg = lab["config"]
    if cfg["precision"]["name"] == "bf16":
        assert cfg["precision"]["master_dtype"] == "none", "the reference's bf16 keeps no float32 masters"
    want = {
        "model": cfg["model"]["name"],
        "precision": REFERENCE_PRECISION[cfg["precision"]["name"]],
        "compile": cfg["compile"]["name"] != "none",
        "trials": cfg["workload"]["trials"],
        "batch": cfg["seq"]["batch"],
    }
    found = [r for r in references(folder) if {k: r[k] for k in want} == want]
    assert len(found) == 1, f"{folder.name}: {len(found)} reference lines match {want}"
    return found[0]


@pytest.mark.parametrize("claim", REFERENCE_RATIOS, ids=lambda c: f"{c[0][11:]}:{c[2]}")
def test_lab_against_reference_ratio_matches_both_files(claim):
    """The families READMEs compare lab runs (results.json) with the reference script's lines
    (reference_families.jsonl in the same folder, same card and call): the reference line is the one
    that ran the lab run's model, precision, compile mode, trials and batch; each figure and the ratio
    come from the files."""
    folder, text, run_id, stated = claim
    folder = MEASUREMENTS / folder
    assert one_line(text) in one_line((folder / "README.md").read_text())
    lab = run_record(run_id)
    ref = reference_for(folder, lab)
    rate = lab["metrics"]["samples_per_s"]
    lab_text, ref_text = text.split(" vs ")[0].split()[-1], text.split(" vs ")[1].split(",")[0].split()[0]
    assert (f"{rate:.2f}", f"{ref['samples_per_s']:.2f}") == (lab_text, ref_text)
    assert round(rate / ref["samples_per_s"], 3) == pytest.approx(stated, abs=5e-4 + 1e-9)


def test_compile_gain_of_both_sides_stated_in_prose():
    """families-compiled: torch.compile's gain on the same card, the lab's (two results.json) and
    timm's (two reference lines: compiled 3 trials over eager 1 trial, bf16)."""
    text = one_line((FAMILIES_COMPILED / "README.md").read_text())
    lab = metric_of("ae90677b", "samples_per_s") / metric_of("7c721b61", "samples_per_s")
    assert f"the lab {lab:.3f}x over its eager bf16 run (ae90677b over 7c721b61)" in text
    timm = {
        (r["compile"], r["trials"]): r["samples_per_s"]
        for r in references(FAMILIES_COMPILED)
        if r["precision"] == "bf16"
    }
    compiled, eager = timm[(True, 3)], timm[(False, 1)]
    assert f"timm {compiled / eager:.3f}x ({compiled:.2f} over {eager:.2f})" in text


def test_compiled_pairs_lead_beyond_their_trial_spread():
    """The lab's slowest trial against timm's fastest, as the families-compiled README states them."""
    text = one_line((FAMILIES_COMPILED / "README.md").read_text())
    lab = [metric_of(run, "trial_tokens_per_s_min") for run in ("ae90677b", "399eff06")]
    ref = [reference_for(FAMILIES_COMPILED, run_record(run))["samples_per_s_max"] for run in ("ae90677b", "399eff06")]
    assert all(a > b for a, b in zip(lab, ref))
    assert f"({lab[0]:,.1f} and {lab[1]:,.1f} images/s) beats timm's fastest ({ref[0]:,.2f} and {ref[1]:,.2f}" in text


def kernel_rows(name: str) -> list[dict]:
    return csv_rows(FAMILIES_COMPILED / "runs" / f"vit_profile_{name}_kernels.csv")


def the_kernel(rows: list[dict], part: str) -> dict:
    (row,) = [r for r in rows if part in r["kernel"]]
    return row


def per_call(row: dict) -> float:
    return float(row["us_per_step"]) / float(row["calls_per_step"])


GELU = "GeluCUDAKernelImpl(at::TensorIteratorBase&, at::native::GeluType)::{lambda()#"
GELU_BACKWARD = "GeluBackwardCUDAKernelImpl(at::TensorIteratorBase&, at::native::GeluType)::{lambda()#"
KERNELS_PER_CALL = [  # (what the README states, lab / timm per call, "lab vs timm"; the lab's kernel, timm's kernel)
    ("103.9 vs 103.5 (`coopA_NNT`)", "nvjet_sm90_tst_256x128_64x4_2x1_v_bz_coopA_NNT", None),
    ("105.8 vs 105.9 (`coopA_bias_TNT`)", "nvjet_sm90_tst_256x128_64x4_2x1_v_bz_coopA_bias_TNT", None),
    ("128.2 vs 128.3 (`coopA_NTT`)", "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NTT", None),
    ("112.4 vs 113.1 (`coopB_bias_TNN`)", "nvjet_sm90_tst_192x192_64x4_2x1_v_bz_coopB_bias_TNN", None),
    ("forward 60.8 vs 61.3", "sdpa_sm90_flash_fprop", None),
    ("backward 163.4 vs 162.8", "sdpa_sm90_flash_bprop", None),
    ("LayerNorm forward 32.3 vs 33.2", "vectorized_layer_norm_kernel<", None),
    ("input gradient 28.6 vs 29.4", "layer_norm_grad_input_kernel_vectorized<", None),
    ("fused Adam 122.1 vs 122.5", "FusedAdamMathFunctor", None),
    ("convolution 462.6 vs 470.8", "s16816fprop_optimized_bf16_128x128", None),
    ("forward 69.1 vs 75.5 µs per call", GELU + "1}", GELU + "2}"),  # tanh form (lab) vs erf form (timm)
    ("backward 97.6 vs 104.1", GELU_BACKWARD + "1}", GELU_BACKWARD + "2}"),
]


@pytest.mark.parametrize("claim", KERNELS_PER_CALL, ids=lambda c: c[0].split(" (")[0])
def test_kernel_time_per_call_stated_in_prose_matches_both_csvs(claim):
    """families-compiled's kernel-by-kernel comparison: device time per call of each named kernel,
    from the lab's and timm's per-kernel CSVs (us per step / calls per step)."""
    text, lab_kernel, timm_kernel = claim
    assert text in one_line((FAMILIES_COMPILED / "README.md").read_text())
    lab = per_call(the_kernel(kernel_rows("lab"), lab_kernel))
    timm = per_call(the_kernel(kernel_rows("timm"), timm_kernel or lab_kernel))
    assert f"{lab:.1f} vs {timm:.1f}" in text


def test_the_lab_trace_holds_kernels_beyond_its_marked_steps():
    """The families-compiled README's reason to compare per call: fused-Adam and largest-GEMM calls in
    the lab's 3-step trace against timm's per-step counts."""
    text = one_line((FAMILIES_COMPILED / "README.md").read_text())
    adam = [float(the_kernel(kernel_rows(side), "FusedAdamMathFunctor")["calls_per_step"]) for side in ("lab", "timm")]
    gemm = [float(the_kernel(kernel_rows(side), "coopA_NNT")["calls_per_step"]) for side in ("lab", "timm")]
    assert (
        f"It has {round(3 * adam[0])} fused-Adam calls ({adam[0]:.1f} per step) where 3 steps make {round(3 * adam[1])}"
        in text
    )
    assert f"(timm: {adam[1]:g} per step)" in text
    assert f"{round(3 * gemm[0])} calls of the largest GEMM where timm has {gemm[1]:g} per step" in text


def test_dlrm_embedding_bandwidth_fraction_matches_the_copy_bandwidth_run():
    text = (FAMILIES / "README.md").read_text()
    assert "**0.294** of 3,031 (ba68959c)" in text and "forward onehot 0.055 (d5be44b7)" in text
    copy = metric_of("f382bf21", "hbm_gbps")
    assert f"{metric_of('ba68959c', 'embedding_gbps') / copy:.3f}" == "0.294"
    assert f"{metric_of('d5be44b7', 'embedding_gbps') / copy:.3f}" == "0.055"
    assert "(multihot, 0.059 of copy, 6acb9c3b)" in text and "(onehot, 0.005, ff4b545d)" in text
    assert f"{metric_of('6acb9c3b', 'embedding_gbps') / copy:.3f}" == "0.059"
    assert f"{metric_of('ff4b545d', 'embedding_gbps') / copy:.3f}" == "0.005"


# --- bad specs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """Two microbenchmark results.json files (sdpa and flex, 4K forward) under runs/ beside a Markdown
    file, and k.csv: 20 rows of fresh random numbers and a category column."""
    base = tmp_path_factory.mktemp("doc") / "runs"
    base.mkdir()
    for name in ("attn_micro_0", "attn_micro_2"):
        shutil.copy(MEASUREMENTS / "2026-11-26-attention" / "runs" / f"{name}.results.json", base)
    rng = random.Random()
    with open(base.parent / "k.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "group", "ms", "n"])
        for i in range(20):
            w.writerow([f"k{i}", "ab"[i % 2], rng.uniform(0.1, 100.0), rng.randint(1, 500)])
    return base.parent


def block(spec: str) -> str:
    return f"# t\n\n<!-- b200lab:table\n{spec}\n-->\n<!-- /b200lab:table -->\n"


BAD_SPECS = [
    ("files: runs/*.results.json\nrows: [seq.len]\ncolour: red", "unknown spec key(s) colour"),
    ("rows: [seq.len]\nmetrics: [attn_tflops]", "`files` is required"),
    ("files: runs/*.results.json\nmetrics: [attn_tflops]", "`rows` is required"),
    (
        "files: nothing/*.results.json\nrows: [seq.len]\nmetrics: [attn_tflops]",
        "files 'nothing/*.results.json' matches nothing",
    ),
    (
        "files: runs/*.results.json\nrows: [seq.len]\nmetrics: [atn_tflops]",
        "metric 'atn_tflops' is in none of the 2 selected runs",
    ),
    ("files: runs/*.results.json\nrows: [seq.len]\nmetrics: [attn_tflops]", "is claimed by 2 runs"),
    (
        "files: runs/*.results.json\nrows: [seq.len]\ncolumns: attention.name\nmetric: attn_tflops\nratio: [flex/sdpa]",
        "expected 'A / B'",
    ),
    (
        "files: runs/*.results.json\nrows: [seq.len]\ncolumns: attention.name\nmetric: attn_tflops\nratio: [te / sdpa]",
        "'te' is not a column; the columns are ['sdpa', 'flex']",
    ),
    ("files: runs/*.results.json\nrows: [seq.len]\ncolumns: attention.name", "needs `metric`"),
    (
        "files: runs/*.results.json\ncolumns: [a]\nrows:\n  - {label: x, metric: attn_tflops, runs: [deadbeef]}",
        "run 'deadbeef' is in none",
    ),
    ("files: runs/*.results.json\nrows: [seq.len\n", "the spec is not YAML"),
    ("csv: missing.csv\ncolumns: [name]", "csv 'missing.csv' matches nothing under"),
    ("csv: k.csv\ncolumns: [name, {column: msec}]", "column(s) 'msec' not in k.csv (its columns: name, group, ms, n)"),
    ("csv: k.csv\nrows: [kind]\nmetrics: [ms]", "column(s) 'kind' not in k.csv"),
    (
        "csv: k.csv\nfiles: runs/*.results.json\ncolumns: [name]",
        "give `files` (results.json) or `csv` (CSV files), not both",
    ),
    ("csv: k.csv\ncolumns: [name]\nlimit: 0", "`limit` is a positive integer"),
    ("csv: k.csv\ncolumns: [{header: x}]", "a csv column is a name or {column: NAME"),
]


@pytest.mark.parametrize("spec,message", BAD_SPECS, ids=[m[:30] for _, m in BAD_SPECS])
def test_a_bad_spec_is_refused_with_its_reason(runs_dir, spec, message):
    path = runs_dir / "README.md"
    with pytest.raises(doc_tables.TableSpecError) as err:
        doc_tables.refresh(block(spec), path)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}:3: ")  # the line of the block's start


def test_a_block_without_its_end_marker_is_refused(runs_dir):
    with pytest.raises(doc_tables.TableSpecError, match="needs a `<!-- /b200lab:table -->`"):
        doc_tables.refresh(
            block("files: runs/*.results.json").replace("<!-- /b200lab:table -->", ""), runs_dir / "README.md"
        )


@pytest.mark.e2e
def test_check_fails_on_a_stale_table_and_refresh_fixes_it(runs_dir):
    path = runs_dir / "README.md"
    spec = (
        "files: runs/*.results.json\nrows: [seq.len]\ncolumns: attention.name\nmetric: attn_tflops\nratio: [flex / "
        "sdpa]\nruns: true"
    )
    fresh, _ = doc_tables.refresh(block(spec), path)
    path.write_text(fresh.replace("178.5", "278.5"))  # a hand edit
    cmd = [sys.executable, "-m", "b200lab", "tables", "--check", str(path)]
    checked = subprocess.run(cmd, capture_output=True, text=True, cwd=runs_dir)
    assert checked.returncode == 1, checked.stderr
    assert (
        "-| 4096 | 439.8 | 278.5 | 0.406 | 7bd7c1e2, fbe26176 |" in checked.stdout
    )  # the diff: committed, then the data's
    assert "+| 4096 | 439.8 | 178.5 | 0.406 | 7bd7c1e2, fbe26176 |" in checked.stdout
    assert "tables: stale: 1 file(s)" in checked.stderr and str(path) in checked.stderr
    assert subprocess.run(cmd[:4] + [str(path)], capture_output=True, text=True, cwd=runs_dir).returncode == 0
    assert path.read_text() == fresh
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=runs_dir)
    assert again.returncode == 0 and "match their data" in again.stdout
    bad = subprocess.run(cmd[:4] + [str(runs_dir / "missing.md")], capture_output=True, text=True, cwd=runs_dir)
    assert bad.returncode == 2 and "cannot read" in bad.stderr


# --- tables from CSV files -----------------------------------------------------------------------


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rows_of_block_reading(path: Path, name: str) -> list[list[str]]:
    """The cells of the one generated table in ``path`` whose spec names ``name``."""
    specs = [m.group("spec") for m in doc_tables.BLOCK.finditer(path.read_text())]
    (index,) = [i for i, spec in enumerate(specs) if name in spec]
    return block_rows(path, index)


def test_ncu_table_is_the_top_rows_of_its_csv():
    """gpt1b-mfu's Nsight Compute table, cell by cell, against its CSV read with the csv module."""
    folder = MEASUREMENTS / "2026-11-26-gpt1b-mfu"
    want = sorted(
        csv_rows(folder / "ncu" / "gpt1b_ncu_compiled.ncu_top_kernels.csv"), key=lambda r: -float(r["time_ms"])
    )[:12]
    rows = rows_of_block_reading(folder / "README.md", "gpt1b_ncu_compiled.ncu_top_kernels.csv")
    assert len(rows) == 12
    decimals = (
        ("time_ms", 2),
        ("time_share", 3),
        ("tensor_op_hmma_pct", 1),
        ("dram_pct_of_peak", 1),
        ("achieved_occupancy_pct", 1),
    )
    for row, r in zip(rows, want):
        assert row == [f"`{r['kernel'][:60]}`", r["launches"], *(f"{float(r[c]):.{d}f}" for c, d in decimals)]


def test_kernel_share_table_joins_the_two_breakdown_csvs():
    """fp8-moe's "Where the step goes": one row per kind, bf16 and fp8 shares from their two CSVs, fp8's order."""
    folder = MEASUREMENTS / "2026-11-26-fp8-moe"
    share = {
        p: {r["kind"]: float(r["share"]) for r in csv_rows(folder / f"kernel_breakdown_{p}.csv")}
        for p in ("bf16", "fp8")
    }
    rows = rows_of_block_reading(folder / "README.md", "kernel_breakdown_fp8.csv")
    names = {
        "GEMMs": "gemm",
        "optimizer (fused AdamW)": "optimizer",
        "FP8 casts / transposes / amax": "fp8 cast/transpose",
        "attention (flash)": "attention",
        "other elementwise / copies": "other elementwise / copies",
        "norms": "norm",
        "loss": "loss",
    }
    assert [names[r[0]] for r in rows] == sorted(share["fp8"], key=lambda k: -share["fp8"][k])
    for row in rows:
        assert row[1:] == [f"{100 * share['bf16'][names[row[0]]]:.1f}%", f"{100 * share['fp8'][names[row[0]]]:.1f}%"]


def test_csv_rows_sorted_filtered_limited_against_the_file(runs_dir):
    spec = (
        "csv: k.csv\nwhere: {group: a}\nsort: -ms\nlimit: 4\n"
        "columns: [name, {column: ms, header: time ms, format: '{:.3f}'}, {column: n, header: launches}]"
    )
    fresh, count = doc_tables.refresh(block(spec), runs_dir / "README.md")
    assert count == 1
    want = sorted((r for r in csv_rows(runs_dir / "k.csv") if r["group"] == "a"), key=lambda r: -float(r["ms"]))[:4]
    lines = [line for line in fresh.splitlines() if line.startswith("|")]
    assert lines[0] == "| name | time ms | launches |"
    assert lines[2:] == [f"| {r['name']} | {float(r['ms']):.3f} | {r['n']} |" for r in want]


@pytest.mark.e2e
def test_cli_refuses_a_csv_spec_naming_an_unknown_column_with_exit_2(runs_dir):
    path = runs_dir / "bad.md"
    path.write_text(block("csv: k.csv\ncolumns: [name, time_ms]"))
    done = subprocess.run(
        [sys.executable, "-m", "b200lab", "tables", "--check", str(path)], capture_output=True, text=True, cwd=runs_dir
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"tables: {path}:3: column(s) 'time_ms' not in k.csv"), done.stderr
