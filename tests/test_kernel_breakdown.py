"""The kernel-time breakdown of a profiler trace, against a hand sum over a crafted trace."""

from __future__ import annotations

import gzip
import json
import random

from b200lab.measure.kernel_breakdown import breakdown, kind_of, write_breakdown, write_trace_notes


def test_kinds_from_kernel_names():
    assert kind_of("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x128x64") == "gemm"
    assert kind_of("nvjet_tst_192x192_64x3_2x1_v_bz_coopA_TNN") == "gemm"
    assert kind_of("flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128>>") == "attention"
    assert kind_of("transformer_engine::cast_transpose_kernel<...>") == "fp8 cast/transpose"
    # ATen's plain bf16 copies carry "cast" in their template names: not FP8 work
    assert (
        kind_of(
            "void at::native::elementwise_kernel<128, 4, "
            "at::native::gpu_kernel_impl_nocast<at::native::direct_copy_kernel_cuda"
        )
        == "other elementwise / copies"
    )
    assert (
        kind_of(
            "void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda, LoadWithCast<1>, "
            "StoreWithCast<1> >"
        )
        == "other elementwise / copies"
    )
    assert kind_of("rmsnorm_fwd_tuned_kernel") == "norm"
    assert kind_of("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>") == "optimizer"
    assert kind_of("ncclDevKernel_AllReduce_Sum_bf16_RING_LL") == "communication"
    assert kind_of("triton_poi_fused_add_mul_0") == "other elementwise / copies"


def test_breakdown_sums_kernel_durations_per_step(tmp_path):
    rng = random.Random(7)
    names = {
        "gemm": "sm90_xmma_gemm_bf16",
        "attention": "flash_bwd_kernel",
        "optimizer": "multi_tensor_apply_kernel",
        "other elementwise / copies": "triton_poi_fused_0",
    }
    events, want = [], {k: 0.0 for k in names}
    for _ in range(200):
        kind = rng.choice(list(names))
        dur = rng.uniform(1.0, 500.0)  # microseconds
        want[kind] += dur
        events.append({"ph": "X", "cat": "kernel", "name": names[kind], "dur": dur, "ts": 0})
    events.append({"ph": "X", "cat": "cpu_op", "name": "aten::mm", "dur": 1e6, "ts": 0})  # host events do not count
    events += [{"ph": "X", "cat": "user_annotation", "name": "b200lab_step", "dur": 1.0, "ts": 0} for _ in range(4)]
    path = tmp_path / "trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    rows = write_breakdown(path, 3, tmp_path / "k.csv")  # the trace's 4 marked steps win over the schedule's 3
    got = {r["kind"]: r["ms_per_step"] for r in rows}
    total = sum(want.values())
    for kind, us in want.items():
        assert abs(got[kind] - us / 1e3 / 4) < 1e-9
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-12
    assert rows == sorted(rows, key=lambda r: -r["ms_per_step"])
    assert abs(dict((r["kind"], r["share"]) for r in breakdown(path, 4))["gemm"] - want["gemm"] / total) < 1e-12
    assert (tmp_path / "k.csv").read_text().startswith("kind,ms_per_step,share,kernels_per_step")


def test_a_trace_gets_a_note_and_a_chart_mlflow_can_show(tmp_path):
    rng = random.Random()
    kinds = {"gemm": "sm90_xmma_gemm_bf16", "attention": "flash_fwd_kernel", "norm": "rmsnorm_fwd_kernel"}
    want = {k: 0.0 for k in kinds}
    events = []
    for _ in range(60):
        kind = rng.choice(list(kinds))
        dur = rng.uniform(5.0, 900.0)
        want[kind] += dur
        events.append({"ph": "X", "cat": "kernel", "name": kinds[kind], "dur": dur, "ts": 0})
    events += [{"ph": "X", "cat": "user_annotation", "name": "b200lab_step", "dur": 1.0, "ts": 0} for _ in range(2)]
    trace = tmp_path / "traces" / "trace_rank1.json.gz"
    trace.parent.mkdir()
    with gzip.open(trace, "wt") as f:
        json.dump({"traceEvents": events}, f)
    rows = write_breakdown(trace, 2, tmp_path / "k.csv")
    note, chart = write_trace_notes(trace, rows, 2)
    assert (note.name, chart.name) == ("trace_rank1.md", "trace_rank1_kernels.png")
    text = note.read_text()
    assert "https://ui.perfetto.dev" in text and "trace_rank1.json.gz" in text
    for kind, us in want.items():  # the table's ms per step: the hand sum over 2 steps
        assert f"| {kind} | {us / 1e3 / 2:.3f} |" in text
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    cpu = tmp_path / "cpu" / "trace_rank0.json.gz"
    cpu.parent.mkdir()
    with gzip.open(cpu, "wt") as f:
        json.dump({"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "dur": 5.0, "ts": 0}]}, f)
    [only] = write_trace_notes(cpu, breakdown(cpu, 1), 1)  # no kernels: the note, no chart
    assert "No GPU kernels in this trace" in only.read_text() and not (cpu.parent / "trace_rank0_kernels.png").exists()
