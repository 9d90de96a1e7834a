"""Measurement: timing, FLOPs, MFU, energy, profilers, microbenchmarks, reports."""

from __future__ import annotations

import gzip
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from b200lab.attention.sdpa import SdpaAttention
from b200lab.core.registry import complete
from b200lab.measure import flops
from b200lab.measure.energy import EnergyMeter, integrate
from b200lab.measure.peaks import lookup
from b200lab.measure.timing import time_steps
from b200lab.models.gpt.family import GPTFamily
from b200lab.models.gpt.model import GPT
from b200lab.records.aggregate import aggregate
from b200lab.reports.report import compile_speedups
from b200lab.runner.profiling import ncu_table
from support import copy_store, results_files, run_cli, runs


def test_timing_of_a_known_sleep():
    t = time_steps(lambda: time.sleep(0.02), torch.device("cpu"), warmup=2, steps=10)
    assert len(t.warmup_ms) == 2 and len(t.step_ms) == 10
    assert all(ms >= 19.9 for ms in t.step_ms), t.step_ms  # a sleep never ends early; a loaded machine may end it late
    assert t.span_s >= sum(t.step_ms) / 1e3  # the span holds every step and the gaps between them


def test_min_time_extends_a_short_step_count():
    t = time_steps(lambda: time.sleep(0.01), torch.device("cpu"), warmup=0, steps=2, min_time_s=0.25)
    assert t.span_s >= 0.25 and len(t.step_ms) >= 2
    # timing stops at the first step that ends past min_time: the steps before it add up to less
    assert sum(t.step_ms[:-1]) / 1e3 < 0.25


def test_checkpoints_hand_over_the_steps_finished_so_far():
    seen = []
    t = time_steps(
        lambda: time.sleep(0.005),
        torch.device("cpu"),
        warmup=1,
        steps=6,
        on_checkpoint=lambda part: seen.append(part),
        checkpoint_every_s=0.0,
    )
    assert [len(p.step_ms) for p in seen] == [1, 2, 3, 4, 5, 6]
    assert seen[-1].step_ms == t.step_ms and seen[2].warmup_ms == t.warmup_ms


def _cfg(**kw):
    base = dict(
        _target_="b200lab.models.gpt.family.GPTFamily",
        name="t",
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_ff=256,
        vocab_size=1000,
        max_seq_len=4096,
    )
    base.update(kw)
    return complete("model", base)


def _per_token(cfg, T, training):
    return GPTFamily(cfg).flops_per_sample(T, training) / T


def test_dense_flops_hand_count():
    # L=2, d=64, f=256, V=1000, T=128, written out:
    # per layer: QKV 64*192 + out 64*64 + up 64*256 + down 256*64 = 12288 + 4096 + 16384 + 16384 = 49152
    # N = 2 * 49152 + head 1000*64 = 98304 + 64000 = 162304
    # causal attention per token per layer: mean over i of 4*64*(i+1) = 2*64*129 = 16512; two layers: 33024
    assert GPTFamily(_cfg()).matmul_params() == 162304
    assert GPTFamily(_cfg()).flops_per_sample(128, training=False) == 128 * (2 * 162304 + 33024)
    assert GPTFamily(_cfg()).flops_per_sample(128, training=True) == 128 * 3 * (2 * 162304 + 33024)


def test_grouped_query_flops_hand_count():
    # 4 query heads of 16 dims, 1 K/V head: QKV 64*(64+16+16) = 6144, out 4096, MLP 32768 -> 43008
    # N = 2 * 43008 + 64000 = 150016; attention still scores every query head: 33024 per token
    fam = GPTFamily(_cfg(n_kv_heads=1))
    assert fam.matmul_params() == 150016
    assert fam.flops_per_sample(128, training=False) == 128 * (2 * 150016 + 33024)


def test_moe_mlp_flops_hand_count():
    # 8 experts, top-2, expert width 128, d=64: router 64*8 = 512, two experts 2 * (64*128 + 128*64) = 32768
    assert flops.moe_mlp_params(64, 8, 2, 128) == 33280


def test_causal_attention_term_matches_a_brute_force_count():
    T, d, L = 37, 64, 2
    brute = 0
    for i in range(T):  # query i: (i+1) keys, d multiply-adds each for QK^T and for AV, 2 FLOPs per multiply-add
        brute += 2 * (i + 1) * d * 2
    assert _per_token(_cfg(), T, False) - 2 * GPTFamily(_cfg()).matmul_params() == pytest.approx(L * brute / T)


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_matmul_params_equal_the_models_linear_weights(kv_heads):
    cfg = _cfg(n_kv_heads=kv_heads)
    model = GPT(
        cfg,
        SdpaAttention(
            complete("attention", {"_target_": "b200lab.attention.sdpa.SdpaAttention", "name": "sdpa"}), "cpu"
        ),
    )
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert GPTFamily(cfg).matmul_params() == linear


@pytest.mark.parametrize(
    "name,dtype,peak",
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4),
        ("NVIDIA H100 PCIe", "bfloat16", 756.5),
        ("NVIDIA H100 NVL", "fp8", 1670.5),
        ("NVIDIA H200", "bfloat16", 989.4),
        ("NVIDIA H200 NVL", "tf32", 417.5),
        ("NVIDIA B200", "fp8", 4500.0),
        ("NVIDIA GB200", "bfloat16", 2500.0),
        ("NVIDIA GH200 480GB", "bfloat16", None),  # not an H200 SXM: a whole-word match only
    ],
)
def test_peak_table(name, dtype, peak):
    assert lookup(name, dtype)[0] == peak


def test_mfu_follows_the_recipes_peak_key_and_its_extra_peaks():
    """An FP8 recipe names fp8 as its MFU basis and asks for the bf16 ratio too; no dtype string is
    interpreted by the aggregator."""
    rank = {
        "rank": 0,
        "world_size": 1,
        "status": "ok",
        "error": None,
        "data_shard": 0,
        "tokens_per_step": 1000,
        "flops_per_step": 2e15,
        "step_ms": [100.0] * 4,
        "warmup_ms": [],
        "span_s": 0.4,
        "metrics": {},
        "env": {"gpu": "NVIDIA H100 80GB HBM3"},
        "effective": {"precision": {"compute_dtype": "bfloat16", "peak_key": "fp8", "extra_peak_keys": ["bf16"]}},
        "energy": {},
    }
    m = aggregate([rank])["metrics"]
    assert m["timed_span_s"] == 0.4
    assert m["tflops"] == pytest.approx(2e15 * 4 / 0.4 / 1e12)
    assert m["mfu"] == pytest.approx(m["tflops"] / 1978.9) and m["mfu_vs_bf16_peak"] == pytest.approx(
        m["tflops"] / 989.4
    )


def test_unknown_card_gets_no_mfu_and_a_reason():
    peak, why = lookup("NVIDIA A100-SXM4-80GB", "bfloat16")
    assert peak is None and "unknown GPU" in why
    peak, why = lookup("NVIDIA B200", "fp32")
    assert peak is None and "no datasheet fp32 peak" in why


def test_mfu_is_achieved_flops_over_the_dtype_peak():
    rank = {
        "rank": 0,
        "world_size": 1,
        "status": "ok",
        "error": None,
        "data_shard": 0,
        "tokens_per_step": 8192,
        "flops_per_step": 8192 * 8.5e9,
        "step_ms": [180.0] * 10,
        "warmup_ms": [500.0],
        "span_s": 1.8,
        "metrics": {},
        "effective": {"precision": {"compute_dtype": "bfloat16"}},
        "env": {"gpu": "NVIDIA H200"},
        "energy": {
            "energy_j": 900.0,
            "energy_j_sampled": 890.0,
            "avg_power_w": 500.0,
            "energy_method": "nvml_total_energy_counter",
        },
    }
    out = aggregate([rank])
    tflops = 8192 * 8.5e9 * 10 / 1.8 / 1e12
    assert out["metrics"]["tflops"] == pytest.approx(tflops)
    assert out["metrics"]["mfu"] == pytest.approx(tflops / 989.4)
    assert out["metrics"]["tokens_per_j"] == pytest.approx(8192 * 10 / 900.0)
    assert "H200 SXM dense bf16" in out["info"]["mfu_basis"]


def test_trapezoid_integral_of_a_ramp():
    samples = [(t / 100, 100 + 50 * t / 100) for t in range(101)]  # 100 W -> 150 W over 1 s
    assert integrate(samples) == pytest.approx(125.0)
    assert integrate(samples[:1]) is None


def test_energy_degrades_with_a_reason_without_nvml():
    meter = EnergyMeter(torch.device("cpu"))
    meter.start()
    out = meter.stop()
    assert list(out) == ["energy_unavailable"] and (
        "NVML unavailable" in out["energy_unavailable"] or "not a CUDA device" in out["energy_unavailable"]
    )


def test_power_tool_wraps_a_command_and_passes_its_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "b200lab.tools.power", "--", sys.executable, "-c", "import sys; sys.exit(7)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 7
    report = json.loads(proc.stdout)
    assert report["returncode"] == 7 and report["duration_s"] > 0
    if not report["gpus"]:
        assert "energy_unavailable" in report
    usage = subprocess.run([sys.executable, "-m", "b200lab.tools.power"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "give the command to measure after --" in usage.stderr


def test_ncu_csv_becomes_a_per_kernel_table(tmp_path):
    metrics = {
        "gpu__time_duration.sum": "time_ns",
        "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram_pct_of_peak",
    }
    lines = ["==PROF== Connected to process", '"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"']
    launches = [(0, "gemm", 3000, 20.0), (1, "gemm", 1000, 60.0), (2, "norm", 500, 90.0)]
    for i, k, t, dram in launches:
        lines.append(f'"{i}","{k}","gpu__time_duration.sum","nsecond","{t:,}"')
        lines.append(f'"{i}","{k}","dram__throughput.avg.pct_of_peak_sustained_elapsed","%","{dram}"')
    (tmp_path / "raw.csv").write_text("\n".join(lines))
    rows = ncu_table(tmp_path / "raw.csv", metrics)
    assert [r["kernel"] for r in rows] == ["gemm", "norm"]
    assert rows[0]["launches"] == 2 and rows[0]["time_ms"] == pytest.approx(0.004)
    assert rows[0]["dram_pct_of_peak"] == pytest.approx((3000 * 20 + 1000 * 60) / 4000)  # time-weighted
    assert rows[0]["time_share"] == pytest.approx(4000 / 4500)


def test_compile_report_speedup_and_band():
    rng = random.Random()
    eager = [100 + rng.uniform(-2, 2) for _ in range(50)]
    fast = [80 + rng.uniform(-2, 2) for _ in range(50)]
    same = [100 + rng.uniform(-2, 2) for _ in range(50)]

    def row(mode, steps):
        cfg = {
            "model": {"name": "m"},
            "workload": {"name": "train"},
            "seq": {"name": "2k"},
            "precision": {"name": "bf16"},
            "compile": {"name": mode},
        }
        return {
            "status": "ok",
            "config": cfg,
            "step_ms": steps,
            "metrics": {"compile_s": 12.0},
            "mlflow": {"run_id": mode},
        }

    out = {
        r["compile"]: r for r in compile_speedups([row("none", eager), row("default", fast), row("max-autotune", same)])
    }
    import numpy as np

    assert out["default"]["speedup"] == pytest.approx(np.median(eager) / np.median(fast))
    assert out["default"]["verdict"] == "faster"
    assert out["max-autotune"]["verdict"] == "no clear difference"


@pytest.fixture(scope="module")
def hbm_run(tmp_path_factory, template_store) -> Path:
    """One in-process workload=hbm run (2 x 32 MB, ten timed steps) in its own store: the job dir
    holding its results.json, read by the microbenchmark, report table and report plot tests."""
    work = tmp_path_factory.mktemp("hbm")
    proc = run_cli(
        [
            "workload=hbm",
            "workload.options.size_mb=32",
            "workload.min_time_s=0",
            "workload.steps=10",
            "hydra.run.dir=hbm",
            "run.launcher=inline",
        ],
        work,
        {"MLFLOW_TRACKING_URI": copy_store(template_store, work)},
    )
    assert proc.returncode == 0, proc.output
    return work / "hbm"


@pytest.mark.e2e
def test_microbenchmarks_report_their_ceiling_metrics(tmp_path, store, hbm_run):
    proc = run_cli(
        [
            "-m",
            "workload=gemm",
            "workload.options.dtype=fp32",
            "workload.options.shape=256x384x512",
            "workload.min_time_s=0",
            "workload.steps=10",
            "workload.warmup_steps=2",
            "run.launcher=inline",
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    proc = run_cli(
        ["workload=allreduce", "parallelism.nproc=2", "workload.options.size_mb=2", "hydra.run.dir=ar"], tmp_path, store
    )
    assert proc.returncode == 0, proc.output
    import numpy as np

    by = {r["config"]["workload"]["name"]: r for r in [*results_files(tmp_path), *results_files(hbm_run)]}
    g = by["gemm"]
    assert g["metrics"]["gemm_tflops"] == pytest.approx(
        2 * 256 * 384 * 512 / (np.median(g["step_ms"]) / 1e3) / 1e12, rel=1e-6
    )
    h = by["hbm"]
    assert h["effective"]["bytes_per_step"] == 2 * 32_000_000
    assert h["metrics"]["hbm_gbps"] == pytest.approx(64e6 / (np.median(h["step_ms"]) / 1e3) / 1e9, rel=1e-6)
    a = by["allreduce"]
    ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "ar" / "ranks").glob("rank*.json"))]
    algbw = [2_000_000 / (np.median(r["step_ms"]) / 1e3) / 1e9 for r in ranks]
    assert a["metrics"]["allreduce_busbw_gbps"] == pytest.approx(min(algbw) * 2 * (2 - 1) / 2, rel=1e-6)
    assert a["effective"]["backend"] == "gloo"
    assert "tokens_per_s" not in g["metrics"]


@pytest.mark.e2e
def test_allreduce_needs_two_ranks(tmp_path, store):
    proc = run_cli(["workload=allreduce", "workload.options.size_mb=1"], tmp_path, store)
    assert proc.returncode == 2  # refused before anything runs
    assert "workload=allreduce needs parallelism.nproc >= 2 (it is 1)" in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == []


@pytest.mark.e2e
def test_torch_profiler_trace_is_a_loadable_chrome_trace_and_an_artifact(tmp_path, store):
    proc = run_cli(
        [
            "profile=torch",
            "workload=train",
            "seq=short",
            "workload.steps=3",
            "workload.warmup_steps=1",
            "run.launcher=inline",
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    [trace] = list((tmp_path / "outputs").rglob("trace_rank0.json.gz"))
    events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    steps = [e for e in events if e.get("name") == "b200lab_step"]
    assert len(steps) == 3  # the active steps of the schedule (wait 1, warm-up 1, active 3)
    [res] = results_files(tmp_path / "outputs")
    assert res["profile"]["torch_trace"] == "traces/trace_rank0.json.gz"
    assert res["metrics"]["n_steps"] == 3  # profiled steps are extra, never timed
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    from mlflow import MlflowClient

    names = [a.path for a in MlflowClient(store["MLFLOW_TRACKING_URI"]).list_artifacts(run.info.run_id, "traces")]
    assert names == ["traces/trace_rank0.json.gz", "traces/trace_rank0.md"]  # the note says how to open it
    assert "ui.perfetto.dev" in (trace.parent / "trace_rank0.md").read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("tool", ["nsys", "ncu"])
def test_nsight_profilers_say_when_they_are_missing(tmp_path, store, tool):
    import shutil

    if shutil.which(tool):
        pytest.skip(f"{tool} is installed here; this test checks the message when it is not")
    proc = run_cli([f"profile={tool}", "seq=short"], tmp_path, store)
    assert proc.returncode == 2
    assert f"`{tool}` is not on PATH" in proc.stderr


@pytest.mark.e2e
def test_report_table_reads_archived_results(tmp_path, hbm_run):
    [src] = list(hbm_run.rglob("results.json"))
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "hbm-0.results.json").write_text(src.read_text())
    (archive / "notes.json").write_text("{}")  # not a results file: ignored
    out = subprocess.run(
        [sys.executable, "-m", "b200lab.reports.report", "table", str(archive)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(src.read_text())
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and "HBM GB/s" in lines[0]
    assert f"{res['metrics']['hbm_gbps']:,.0f}" in lines[2] and res["mlflow"]["run_id"] in lines[2]
    empty = subprocess.run(
        [sys.executable, "-m", "b200lab.reports.report", "table", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 2 and "no results.json under" in empty.stderr


@pytest.mark.gpu
def test_energy_regions_too_short_for_the_counter_report_no_number():
    """On a machine with NVML: a region shorter than MIN_REGION_S reports energy unavailable with
    the reason, never 0 J."""
    from b200lab.measure import energy

    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pytest.skip("needs an NVIDIA driver (NVML) to read a real energy counter; none on this machine")
    meter = energy.EnergyMeter(handle=pynvml.nvmlDeviceGetHandleByIndex(0))
    meter.start()
    out = meter.stop()
    assert "energy_j" not in out and "shorter than" in out["energy_unavailable"]


def _quantile(xs, q):
    """Linear interpolation between order statistics, written out (numpy's default method)."""
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (pos - lo)


def test_plot_draws_each_rate_with_its_step_time_spread(tmp_path):
    from b200lab.reports.plot import plot

    rng = random.Random()
    rows = []
    for i in range(3):
        steps = [10.0 + i + rng.uniform(0, 3) for _ in range(25)]
        rows.append(
            {
                "status": "ok",
                "point": f"seq={i}",
                "step_ms": steps,
                "env": {"gpu": None},
                "metrics": {"tokens_per_s": 4096 / (_quantile(steps, 0.5) / 1e3)},
                "mlflow": {"run_id": f"r{i}"},
            }
        )
    rows.append({"status": "oom", "point": "seq=huge", "metrics": {}, "mlflow": {"run_id": "r9"}})
    drawn = plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert [b.label for b in drawn] == ["seq=0", "seq=1", "seq=2", "seq=huge"]
    for b, r in zip(drawn[:3], rows[:3]):
        v, steps = r["metrics"]["tokens_per_s"], r["step_ms"]
        p10, p50, p90 = (_quantile(steps, q) for q in (0.1, 0.5, 0.9))
        assert b.value == v and b.low == pytest.approx(v * p50 / p90) and b.high == pytest.approx(v * p50 / p10)
        assert b.low < b.value < b.high
    assert drawn[3].value is None and drawn[3].status == "oom"


def test_plot_labels_read_back_to_three_significant_digits_without_an_exponent():
    from b200lab.reports.plot import readable

    rng = random.Random()
    for _ in range(500):
        value = rng.choice((1, -1)) * 10 ** rng.uniform(-5, 8)
        text = readable(value)
        assert "e" not in text.lower(), text
        if abs(value) >= 100:  # every integer digit, grouped
            assert text == f"{round(value):,}"
        else:  # three significant digits
            last_digit = 10 ** (math.floor(math.log10(abs(value))) - 2)
            assert abs(float(text) - value) <= 0.5 * last_digit * (1 + 1e-9), (value, text)
    assert readable(0.0) == "0"


def test_report_table_has_a_column_for_each_collectives_bus_bandwidth():
    from b200lab.reports.report import table

    rng = random.Random()
    rows = [
        {
            "status": "ok",
            "point": f"parallelism.nproc={n}",
            "metrics": {"allreduce_busbw_gbps": rng.uniform(1, 400), "allgather_busbw_gbps": rng.uniform(1, 400)},
            "env": {"gpu": "NVIDIA H100 80GB HBM3"},
            "mlflow": {"run_id": f"run{n}"},
        }
        for n in (2, 4)
    ]
    head, _, *body = table(rows).splitlines()
    assert "all-reduce bus GB/s" in head and "all-gather bus GB/s" in head and "reduce-scatter" not in head
    for line, r in zip(body, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == f"{r['metrics']['allreduce_busbw_gbps']:,.1f}"
        assert cells[3] == f"{r['metrics']['allgather_busbw_gbps']:,.1f}"


@pytest.mark.e2e
def test_report_plot_cli_writes_a_png_and_names_the_metrics_it_has(tmp_path, hbm_run):
    report = [sys.executable, "-m", "b200lab.reports.report", "plot", str(hbm_run)]
    ok = subprocess.run([*report, "--out", str(tmp_path / "hbm.png")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "(1 points)" in ok.stdout and (tmp_path / "hbm.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([*report, "--metric", "tokens_per_s"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    assert "no ok result has metric 'tokens_per_s'; these do:" in bad.stderr and "hbm_gbps" in bad.stderr


def test_microbenchmark_defaults_fit_the_device_they_land_on():
    """On a CPU, shape=auto is 1024^3 (8192^3 takes minutes a product) and size_mb=null is 256 MB
    (4096 MB buffers took 8.4 GB of RAM); on a GPU they stay 8192^3 and 4096 MB."""
    from b200lab.parallel.data_parallel import DataParallel
    from b200lab.workloads import gemm, hbm
    from b200lab.workloads.base import RankContext

    device = torch.device("cpu")
    cfg = OmegaConf.create(
        {
            "run": {"seed": random.randrange(10_000)},
            "parallelism": complete(
                "parallelism", {"_target_": "b200lab.parallel.data_parallel.DataParallel", "name": "single"}
            ),
        }
    )
    ctx = RankContext(cfg=cfg, device=device, strategy=DataParallel(cfg.parallelism, 0, 1, device))
    g = gemm.Gemm(complete("workload", {"_target_": "b200lab.workloads.gemm.Gemm", "name": "gemm"}), ctx)
    g.setup()
    assert g.effective["shape"] == "1024x1024x1024" and g.flops_per_step == 2 * 1024**3
    assert g.a.abs().sum() > 0  # random inputs, never zeros
    h = hbm.HbmCopy(complete("workload", {"_target_": "b200lab.workloads.hbm.HbmCopy", "name": "hbm"}), ctx)
    h.setup()
    assert h.effective["size_mb"] == pytest.approx(256.0) and h.bytes_per_step == 2 * 256_000_000
    assert (gemm.AUTO_SHAPE["cuda"], hbm.AUTO_SIZE_MB["cuda"]) == ("8192x8192x8192", 4096.0)
