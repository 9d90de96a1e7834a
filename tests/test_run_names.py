"""Run names that fit MLflow's Run Name column (about 17 characters): what varied first, in short
words, and a sweep cut short still named by its axes."""

from __future__ import annotations

from b200lab.records.points import point_name, short_keys, sweep_name, unique_names


def record(point: str, kernel: str = "sdpa-flash", job: int = 0) -> dict:
    return {
        "point": point,
        "job_num": job,
        "sweep_id": "s1",
        "effective": {"precision": {"compute_dtype": "bfloat16"}, "attention": {"kernel": kernel}, "compiled": False},
        "config": {"compile": {"name": "none"}},
    }


def test_a_groups_option_stands_alone_and_option_paths_are_dropped():
    shown = short_keys(["precision", "seq.len", "workload.options.qps", "attention.kernel_options.BLOCK_M", "run.seed"])
    assert shown == {
        "precision": "",
        "seq.len": "seq",
        "workload.options.qps": "qps",
        "attention.kernel_options.BLOCK_M": "BLOCK_M",
        "run.seed": "run.seed",
    }
    assert short_keys(["seq.len", "seq"]) == {"seq.len": "seq.len", "seq": "seq"}  # would read alike: whole


def test_child_names_put_the_varied_values_first_and_cut_kernel_explanations():
    points = ["seq.len=16384 precision=bf16", "seq.len=32 precision=fp32"]
    kernels = [
        "sdpa-auto (flash|efficient|cudnn, chosen per call by PyTorch)",
        "te: cudnn_generated_fort_native_sdpa_sm90_flash_fprop",
    ]
    records = [record(p, k, i) for i, (p, k) in enumerate(zip(points, kernels))]
    assert unique_names(records) == ["seq=16k bf16 | bfloat16 sdpa-auto eager", "seq=32 fp32 | bfloat16 te eager"]
    assert point_name(record("workload.options.qps=4"), ["workload.options.qps"]).startswith("qps=4 | ")
    assert sweep_name(records).startswith("seq=16k,32 bf16,fp32")  # the parent words values as its children do


def test_a_sweep_cut_short_keeps_its_axes_in_the_parents_name():
    typed = "seq=1k,2k precision=fp32,bf16 model=tiny"
    ran = [record("seq=1k precision=fp32 model=tiny")]  # Ctrl-C during the second point
    assert sweep_name(ran, None, typed) == "seq=1k,2k fp32,bf16 tiny"
    both = [*ran, record("seq=2k precision=fp32 model=tiny", job=1)]
    assert sweep_name(both, "study", typed) == "study: seq=1k,2k fp32,bf16 tiny"  # seq from the points
    assert sweep_name([], None, typed) == typed  # before any point: the command line
