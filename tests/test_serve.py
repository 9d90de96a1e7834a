"""workload=serve: the block KV cache against full recomputation, continuous batching against
sequential generation, the latency metrics against a hand computation on a scripted trace, a
2-rank run that counts each request once, and refusals."""

from __future__ import annotations

import csv
import json
import textwrap

import numpy as np
import pytest
import torch

from b200lab.serving.bound import bound_metrics, bound_table
from b200lab.serving.engine import Engine, Limits, ScriptedClock, last_logits
from b200lab.serving.latency import request_metrics
from b200lab.serving.loadgen import RequestSpec, make_trace
from b200lab.serving.paged import BlockPool, Row
from b200lab.serving.sampling import next_token
from support import INLINE, results_files, run_cli
from tiny_models import (
    assert_context_matters,
    burst_trace,
    decoder_of,
    greedy_by_recompute,
    tiny_gpt,
)


def pool_for(model, blocks: int = 32, block_size: int = 4) -> BlockPool:
    return decoder_of(model).paged_cache(blocks, block_size, torch.float64, blocks * block_size)


def test_block_cache_rows_of_different_lengths_reproduce_the_full_recompute():
    """Two requests in one pool (blocks of 4), prefilled apart, then decoded together while
    their lengths differ: float64 logits equal each sequence's full forward."""
    model = tiny_gpt("sdpa", n_kv_heads=2)
    pool = pool_for(model)
    a, b = torch.randint(0, 97, (13,)), torch.randint(0, 97, (8,))
    with torch.no_grad():
        ref_a, ref_b = model(a[None])[0], model(b[None])[0]
        blocks_a, blocks_b = pool.allocate(13), pool.allocate(8)
        assert (model(a[None, :9], cache=pool.view([Row(blocks_a, 0, 9)]))[0] - ref_a[:9]).abs().max() < 1e-10
        assert (model(b[None, :4], cache=pool.view([Row(blocks_b, 0, 4)]))[0] - ref_b[:4]).abs().max() < 1e-10
        for s in range(4):
            out = model(
                torch.stack([a[9 + s : 10 + s], b[4 + s : 5 + s]]),
                cache=pool.view([Row(blocks_a, 9 + s, 1), Row(blocks_b, 4 + s, 1)]),
            )
            assert (out[0, 0] - ref_a[9 + s]).abs().max() < 1e-10 and (out[1, 0] - ref_b[4 + s]).abs().max() < 1e-10
    pool.release(blocks_a)
    assert pool.used_blocks == 2 and pool.allocate(5) == [0, 1]  # freed blocks are handed out again


def test_continuous_batching_returns_the_tokens_of_sequential_generation():
    """Six requests of different prompt and output lengths arriving at different times, at most
    two running, so some wait in the queue: each request's greedy tokens equal its tokens
    generated alone by full recomputation, with weights large enough that the tokens depend on
    the context (a key cached in the wrong slot or rotated at the wrong position changes them)."""
    model = tiny_gpt("sdpa", n_kv_heads=2, std=1.0)
    trace = burst_trace(3, 6, 200.0, prompt_len=6, output_len=5, spread=0.8, max_prompt=12, max_output=9)
    assert len({s.prompt_len for s in trace}) > 2 and len({s.output_len for s in trace}) > 2
    engine = Engine(
        decoder_of(model),
        pool_for(model, blocks=12),
        Limits(max_running=2, max_model_len=40),
        ScriptedClock(0.01, 0.0, 0.004),
        lambda logits: next_token(logits),
    )
    records = engine.run(trace)
    assert engine.max_batch >= 2 and any(r.waited for r in records)  # requests did share steps, and one did wait
    with torch.no_grad():
        for spec, rec in zip(trace, records):
            assert rec.status == "done"
            prompt = torch.tensor([spec.prompt])
            expected = greedy_by_recompute(model, prompt, spec.output_len)
            assert rec.tokens == expected[0].tolist(), spec.id
            if spec.output_len > 3:
                assert_context_matters(model, torch.cat([prompt, expected], dim=1), spec.prompt_len - 1)


def test_chunked_prefill_batches_a_burst_and_returns_the_tokens_of_sequential_generation():
    """Eight requests at t = 0 with prompts of 5 to 15 tokens, prefilled 4 tokens a step: the
    burst's chunks share forwards (prompts mid-way through the cache, at different positions), and
    each request's greedy tokens equal its tokens generated alone by full recomputation."""
    model = tiny_gpt("sdpa", n_kv_heads=2, std=1.0)
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    lengths = torch.randint(5, 16, (8,), generator=gen).tolist()
    trace = [
        RequestSpec(i, 0.0, tuple(torch.randint(0, 97, (n,), generator=gen).tolist()), int(o))
        for i, (n, o) in enumerate(zip(lengths, torch.randint(2, 7, (8,), generator=gen).tolist()))
    ]
    fed = []  # (rows, tokens) of every forward
    engine = Engine(
        decoder_of(model),
        pool_for(model, blocks=48),
        Limits(max_running=8, max_model_len=40, prefill_chunk=4),
        ScriptedClock(0.01, 0.0, 0.004),
        lambda logits: next_token(logits),
        forward=lambda decoder, idx, view: fed.append(tuple(idx.shape)) or last_logits(decoder, idx, view),
    )
    records = engine.run(trace)
    assert engine.max_prefill_rows == 8  # the whole burst's first chunks in one forward
    assert max(t for _, t in fed) == 4  # no prompt went in whole
    with torch.no_grad():
        for spec, rec in zip(trace, records):
            assert rec.status == "done"
            expected = greedy_by_recompute(model, torch.tensor([spec.prompt]), spec.output_len)
            assert rec.tokens == expected[0].tolist(), spec.id


def test_each_decode_step_is_held_against_its_bandwidth_bound():
    """Decode steps cost 4 ms (ScriptedClock); at a copy bandwidth of 0.05 GB/s the bound of a step
    is its bytes / 5e7 per second: every weight of the tiny model once (its token embedding one row
    per request, the head whole) and each row's keys and values up to its position, counted here
    from the model's own tensors, and the fraction reached the bound over the 4 ms."""
    model = tiny_gpt("sdpa", n_kv_heads=2, std=1.0)
    decoder = decoder_of(model)
    pool = pool_for(model, blocks=24)
    trace = [
        RequestSpec(i, 0.0, tuple(torch.randint(0, 97, (n,)).tolist()), o)
        for i, (n, o) in enumerate([(5, 4), (9, 6), (7, 3)])
    ]
    engine = Engine(decoder, pool, Limits(max_running=3, max_model_len=40), ScriptedClock(0.01, 0.0, 0.004), next_token)
    engine.run(trace)
    # A (4 tokens), B (6), C (3) each get a token at prefill: C leaves after 2 steps, A after 3, B runs alone
    assert [rows for rows, _, _ in engine.decode_log] == [3, 3, 2, 1, 1]
    assert all(s == pytest.approx(0.004) for _, _, s in engine.decode_log)
    size = pool.k[0].element_size()
    table_bytes = model.embed.weight.numel() * model.embed.weight.element_size()  # untied: the head is apart
    row_bytes = model.embed.weight.shape[1] * model.embed.weight.element_size()
    all_weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    table = bound_table(engine.decode_log, decoder, size, copy_gbps=0.05)
    for row in table:
        steps = [(r, pos) for r, pos, _ in engine.decode_log if r == row["rows"]]
        want = 0
        for rows, positions in steps:
            weights = all_weights - table_bytes + rows * row_bytes  # the table: one row per request
            kv = sum(decoder.n_layers * 2 * decoder.kv_heads * decoder.head_dim * size * (p + 2) for p in positions)
            want += weights + kv
        assert row["bytes_per_step"] == pytest.approx(want / len(steps))
        assert row["fraction_of_bound"] == pytest.approx(want / 5e7 / (0.004 * len(steps)))
    metrics = bound_metrics(table)
    assert metrics["decode_bw_util_max_batch"] == table[-1]["fraction_of_bound"] and table[-1]["rows"] == 3
    total = sum(r["bytes_per_step"] * r["steps"] for r in table)
    assert metrics["decode_bw_util"] == pytest.approx(total / 5e7 / (0.004 * len(engine.decode_log)))


def test_latency_metrics_match_a_hand_computation_on_a_scripted_trace():
    """Prefill costs 10 ms, a decode step 2 ms (ScriptedClock). A (t=0, 3 tokens), B (t=5 ms,
    2 tokens), C (t=100 ms, 1 token), D (too long for the cache). By hand:
      0: A prefill -> A0 at 10;  10: B prefill -> B0 at 20, decode [A] -> A1 at 22;
      22: decode [A, B] -> A2, B1 at 24;  idle to 100: C prefill -> C0 at 110.
    A: ttft 10, e2e 24, tpot 7, itl 12, 2;  B: ttft 15, e2e 19, tpot 4, itl 4;  C: ttft 10, e2e 10."""
    model = tiny_gpt("sdpa")
    p = lambda n: tuple(range(1, n + 1))  # noqa: E731
    trace = [
        RequestSpec(0, 0.0, p(4), 3),
        RequestSpec(1, 0.005, p(3), 2),
        RequestSpec(2, 0.100, p(5), 1),
        RequestSpec(3, 0.050, p(30), 20),
    ]
    finished = []
    engine = Engine(
        decoder_of(model),
        pool_for(model),
        Limits(max_running=2, max_model_len=32),
        ScriptedClock(prefill_s=0.010, decode_s=0.002),
        lambda logits: next_token(logits),
        on_complete=lambda rec: finished.append(rec.id),
    )
    records = engine.run(trace)
    assert (
        finished == [0, 1, 2] and records[3].status == "rejected" and "50 tokens exceed the cache" in records[3].reason
    )
    m = request_metrics([records], slo_ttft_ms=12.0)
    assert m["requests"] == 4 and m["completed"] == 3 and m["rejected"] == 1 and m["queued"] == 0
    assert m["ttft_ms_p50"] == pytest.approx(10.0) and m["ttft_ms_p99"] == pytest.approx(10 + 0.98 * 5)
    assert m["tpot_ms_p50"] == pytest.approx(5.5) and m["tpot_ms_p90"] == pytest.approx(4 + 0.9 * 3)
    assert m["itl_ms_p50"] == pytest.approx(4.0) and m["itl_ms_mean"] == pytest.approx(6.0)
    assert m["e2e_ms_p50"] == pytest.approx(19.0) and m["e2e_ms_p99"] == pytest.approx(19 + 0.98 * 5)
    assert m["output_tokens"] == 6 and m["duration_s"] == pytest.approx(0.110)
    assert m["request_throughput"] == pytest.approx(3 / 0.110) and m["output_tokens_per_s"] == pytest.approx(6 / 0.110)
    assert m["goodput"] == pytest.approx(2 / 0.110)  # A and C meet ttft <= 12 ms
    assert request_metrics([records], slo_ttft_ms=12.0, slo_tpot_ms=5.0)["goodput"] == pytest.approx(
        1 / 0.110
    )  # C only (tpot 0)


def test_the_queue_rejects_beyond_max_queue_and_max_concurrency_holds_requests_back():
    model = tiny_gpt("sdpa")
    burst = [RequestSpec(i, 0.0, (1, 2, 3), 2) for i in range(5)]
    full = Engine(
        decoder_of(model),
        pool_for(model),
        Limits(max_running=1, max_queue=2),
        ScriptedClock(0.01, 0.0, 0.002),
        next_token,
    ).run(burst)
    assert [r.status for r in full] == ["done", "done", "rejected", "rejected", "rejected"]
    held = Engine(
        decoder_of(model),
        pool_for(model),
        Limits(max_running=4, max_concurrency=2),
        ScriptedClock(0.01, 0.0, 0.002),
        next_token,
    ).run(burst)
    assert all(r.status == "done" for r in held)
    assert sorted(r.arrival_s for r in held)[2] > 0  # the third was sent only when one of the first two finished
    assert all(r.ttft_s == pytest.approx(r.token_s[0] - r.arrival_s) for r in held)


HOOK = """
import json, os

def record(row):
    with open(os.environ["HOOK_OUT"], "a") as f:
        f.write(json.dumps(row) + "\\n")
"""


@pytest.mark.e2e
def test_two_tensor_parallel_ranks_count_each_request_and_token_once(tmp_path, store):
    """parallelism=tp over 2 gloo ranks (torchrun) serving one trace with the compiled step
    (the eager one serves the data-parallel test below): the request counts, the tokens and the
    per-request CSV are those of one server, the completion hook ran once per request (not for
    the shape warm-up), only rank 0 reports request metrics, and nothing compiled once timing
    began. The warm-up step replays the timed trace (the default): the same requests, and its
    duration reported as warmup_s."""
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "lab_hook.py").write_text(textwrap.dedent(HOOK))
    env = {**store, "PYTHONPATH": str(tmp_path / "hooks"), "HOOK_OUT": str(tmp_path / "hook.jsonl")}
    proc = run_cli(
        [
            "workload=serve",
            "parallelism=tp",
            "seq=short",
            "workload.options.num_requests=6",
            "workload.options.qps=200",
            "workload.options.output_len=4",
            "workload.options.prompt_len=16",
            "workload.options.slo.ttft_ms=10000",
            "workload.options.on_complete=lab_hook:record",
            "compile=default",
        ],
        tmp_path,
        env,
    )
    assert proc.returncode == 0, proc.output
    (row,) = results_files(tmp_path / "outputs")
    m = row["metrics"]
    assert m["world_size"] == 2 and m["requests"] == 6 and m["completed"] == 6
    assert m["tokens_per_step"] == m["output_tokens"] and m["goodput"] == pytest.approx(m["request_throughput"])
    ranks = {r: json.loads(next((tmp_path / "outputs").rglob(f"rank{r}.json")).read_text()) for r in (0, 1)}
    assert ranks[0]["metrics"]["completed"] == 6 and "completed" not in ranks[1]["metrics"]
    assert (
        ranks[0]["tokens_per_step"] == ranks[1]["tokens_per_step"] == m["output_tokens"]
    )  # one data shard: counted once
    rows = list(csv.DictReader(open(next((tmp_path / "outputs").rglob("requests.csv")))))
    assert len(rows) == 6 and sum(int(r["output_len"]) for r in rows) == m["output_tokens"]
    hooked = [json.loads(line) for line in (tmp_path / "hook.jsonl").read_text().splitlines()]
    assert sorted(h["id"] for h in hooked if h["phase"] == "timed" and h["run"] == 0) == list(range(6))
    assert len(hooked) == 6 + 6 and all(float(h["ttft_ms"]) > 0 for h in hooked)  # the warm-up replay's 6 requests too
    lengths = {(h["phase"], h["id"]): (h["prompt_len"], h["output_len"]) for h in hooked}
    assert all(lengths[("warm-up", i)] == lengths[("timed", i)] for i in range(6))
    assert row["effective"]["serve"]["warmup"] == "1 replay(s) of the timed trace" and m["warmup_s"] > 0
    assert row["effective"]["serve"]["clock"].startswith("rank 0's")
    assert m["compiles_timed"] == 0 and row["effective"]["serve"]["compiled"]["graphs"] >= 3
    assert {"causal", "decode"} <= set(
        row["effective"]["attention"]["kernels"]
    )  # recorded though the calls are compiled


@pytest.mark.e2e
def test_two_data_parallel_replicas_count_each_request_and_token_once_and_profiled_runs_apart(tmp_path, store):
    """parallelism=ddp over 2 gloo ranks (torchrun): each rank serves the whole trace (two data
    shards), yet the tokens, requests and hook calls are those of one server. profile=torch runs
    the trace twice more after the timed run: the hook marks those runs 'profiled' and
    requests.csv holds the timed run. The short warm-up (6 requests at t = 0, more than the timed
    trace's 4) leaves no trace in the engine's counters, which cover the timed run."""
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "lab_hook.py").write_text(textwrap.dedent(HOOK))
    env = {**store, "PYTHONPATH": str(tmp_path / "hooks"), "HOOK_OUT": str(tmp_path / "hook.jsonl")}
    proc = run_cli(
        [
            "workload=serve",
            "parallelism=ddp",
            "seq=short",
            "workload.options.num_requests=4",
            "workload.options.qps=200",
            "workload.options.output_len=3",
            "workload.options.prompt_len=16",
            "workload.options.warmup=short",
            "workload.options.warmup_requests=6",
            "workload.options.on_complete=lab_hook:record",
            "profile=torch",
            "profile.options.wait=0",
            "profile.options.warmup=0",
            "profile.options.active=2",
        ],
        tmp_path,
        env,
    )
    assert proc.returncode == 0, proc.output
    (row,) = results_files(tmp_path / "outputs")
    m = row["metrics"]
    assert m["world_size"] == 2 and m["n_steps"] == 1 and m["requests"] == 4 and m["completed"] == 4
    ranks = {r: json.loads(next((tmp_path / "outputs").rglob(f"rank{r}.json")).read_text()) for r in (0, 1)}
    assert [ranks[r]["data_shard"] for r in (0, 1)] == [0, 1]
    assert ranks[0]["tokens_per_step"] == m["output_tokens"] and ranks[1]["tokens_per_step"] == 0
    assert m["tokens_per_step"] == m["output_tokens"]  # the aggregator sums the shards: the replica adds nothing
    hooked = [json.loads(line) for line in (tmp_path / "hook.jsonl").read_text().splitlines()]
    phases = sorted((h["phase"], h["run"]) for h in hooked)
    assert phases == [("profiled", 0)] * 4 + [("profiled", 1)] * 4 + [("timed", 0)] * 4 + [("warm-up", 0)] * 6
    assert row["effective"]["serve"]["warmup"] == "1 run(s) of 6 requests at t = 0"
    assert 1 <= m["max_batch"] <= 4 and m["max_queue_depth"] <= 4  # the timed trace's; the warm-up ran and queued 6
    timed = {h["id"]: h["ttft_ms"] for h in hooked if h["phase"] == "timed"}
    rows = list(csv.DictReader(open(next((tmp_path / "outputs").rglob("requests.csv")))))
    assert {int(r["id"]): float(r["ttft_ms"]) for r in rows} == timed


@pytest.mark.e2e
def test_serve_refuses_bad_input(tmp_path, store):
    proc = run_cli(
        [
            "workload=serve",
            INLINE,
            "seq=short",
            "workload.options.qps=0",
            "compile=reduce-overhead",
            "workload.options.on_complete=os:system",
            "workload.options.arrival=uniform",
            "attention=te",
            "workload.options.prompt_dist=lognormal",
            "workload.options.output_dist=fixed",
            "workload.options.len_spread=-0.5",
            "profile=torch",
            "workload.min_time_s=1",
            "workload.options.warmup=first",
            "precision=fp8_current",
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 2, proc.output
    for needle in (
        "workload.options.qps=0.0: must be > 0 requests per second",
        "compile=reduce-overhead: workload=serve compiles its step with symbolic shapes",
        "captures CUDA graphs, which replay one shape; use compile=default or compile=none",
        "workload.options.on_complete='os:system': a hook is a function of your own package, not the standard library",
        "workload.options.arrival='uniform': choose poisson or gamma",
        "attention=te has no decode path for workload=serve",
        "workload.options.len_spread=-0.5: lognormal lengths take it as sigma, which must be >= 0",
        "profile=torch with workload.min_time_s=1.0: the profiled runs follow the timed ones",
        "workload.options.warmup='first': choose replay (warm-up steps replay the timed trace) or short",
        "precision=fp8_current: Transformer Engine's FP8 GEMMs need a multiple of 8 rows, and a decode step has as "
        "many "
        "rows as requests running",
    ):
        assert needle in proc.stderr, needle


def test_the_compiled_step_serves_the_eager_tokens_and_compiles_nothing_after_the_shape_warmup():
    """compile=default's serve step (symbolic shapes): the shape warm-up trace compiles every
    graph, then a continuous-batching trace of other prompt lengths, batches and cache windows
    compiles none, and each request's greedy tokens equal the eager engine's (float64)."""
    from b200lab.serving.compiled import (
        compile_step,
        graphs_compiled,
        shape_warmup_trace,
    )

    model = tiny_gpt("sdpa", n_kv_heads=2, std=1.0)
    model.ensure_positions(27)
    trace = burst_trace(5, 8, 300.0, prompt_len=9, output_len=6, spread=0.7, max_prompt=16, max_output=11)
    assert len({s.prompt_len for s in trace}) > 3 and len({s.output_len for s in trace}) > 3

    def serve(forward):
        return (
            Engine(
                decoder_of(model),
                pool_for(model, blocks=40),
                Limits(max_running=3, max_model_len=27),
                ScriptedClock(0.01, 0.0, 0.004),
                next_token,
                forward=forward,
            )
            if forward
            else Engine(
                decoder_of(model),
                pool_for(model, blocks=40),
                Limits(max_running=3, max_model_len=27),
                ScriptedClock(0.01, 0.0, 0.004),
                next_token,
            )
        )

    torch._dynamo.reset()
    compiled = serve(compile_step("default", False))
    before = graphs_compiled()
    compiled.run(shape_warmup_trace(9, 27, 97))
    warm = graphs_compiled()
    assert warm - before >= 3  # a prefill, a one-row and a many-row decode step
    got = compiled.run(trace)
    assert graphs_compiled() == warm
    assert compiled.max_batch == 3
    expected = serve(None).run(trace)
    assert [r.tokens for r in got] == [r.tokens for r in expected]
    assert all(r.status == "done" and len(r.tokens) == s.output_len for r, s in zip(got, trace))


def test_compiled_serving_refuses_flex_attention_with_the_reason():
    """The compiled step with FlexAttention fails inside inductor (its block mask is rebuilt every
    step); validation refuses the pair before a rank starts, and each half alone passes."""
    from b200lab.core.machine import ConfigError
    from b200lab.core.validation import validate
    from support import compose

    for flex in ("flex", "flex_sliding"):
        with pytest.raises(ConfigError) as exc:
            validate(compose(["workload=serve", "seq=short", f"attention={flex}", "compile=default"]), "cpu")
        assert f"compile=default with attention={flex}: the compiled serve step fails in inductor" in str(exc.value)
    validate(compose(["workload=serve", "seq=short", "attention=flex"]), "cpu")
    validate(compose(["workload=serve", "seq=short", "compile=default"]), "cpu")


def _recomputed(rows: list[dict], slo_ttft_ms: float, slo_tpot_ms: float) -> dict:
    """The serve metrics from requests.csv alone, with vLLM's definitions written out again."""
    done = [r for r in rows if r["status"] == "done"]
    tokens = {id(r): [float(t) for t in r["token_s"].split()] for r in done}
    arrival = {id(r): float(r["arrival_s"]) for r in done}
    ttft = [tokens[id(r)][0] - arrival[id(r)] for r in done]
    e2e = [tokens[id(r)][-1] - arrival[id(r)] for r in done]
    tpot = [(e - t) / (len(tokens[id(r)]) - 1) for r, t, e in zip(done, ttft, e2e) if len(tokens[id(r)]) > 1]
    itl = [b - a for r in done for a, b in zip(tokens[id(r)], tokens[id(r)][1:])]
    runs = sorted({r["run"] for r in done})
    duration = sum(
        max(tokens[id(r)][-1] for r in done if r["run"] == k)
        - min(float(r["arrival_s"]) for r in rows if r["run"] == k)
        for k in runs
    )
    out = {}
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e", e2e)):
        ms = np.asarray(values) * 1e3
        out.update({f"{name}_ms_p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)})
        out[f"{name}_ms_mean"] = float(ms.mean())
    good = [
        r
        for r, t in zip(done, ttft)
        if t * 1e3 <= slo_ttft_ms
        and (
            len(tokens[id(r)]) == 1
            or (tokens[id(r)][-1] - tokens[id(r)][0]) / (len(tokens[id(r)]) - 1) * 1e3 <= slo_tpot_ms
        )
    ]
    out.update(
        completed=len(done),
        output_tokens=sum(len(v) for v in tokens.values()),
        request_throughput=len(done) / duration,
        output_tokens_per_s=sum(len(v) for v in tokens.values()) / duration,
        goodput=len(good) / duration,
        goodput_fraction=len(good) / len(done),
    )
    return out


@pytest.mark.e2e
def test_every_reported_serve_metric_is_recomputed_from_the_artifacts_alone(tmp_path, store):
    """Two timed runs of a seeded trace: requests.csv holds both (a run column, each token's time),
    and the percentiles, rates and goodput of results.json follow from it; the trace offers its
    label's rate (arrivals normalised as vLLM's benchmark does)."""
    slo_ttft_ms, slo_tpot_ms = 400.0, 25.0
    proc = run_cli(
        [
            "workload=serve",
            "seq=short",
            "workload.steps=2",
            "workload.warmup_steps=1",
            "workload.options.num_requests=10",
            "workload.options.qps=40",
            "workload.options.output_len=6",
            "workload.options.prompt_len=24",
            f"workload.options.slo.ttft_ms={slo_ttft_ms}",
            f"workload.options.slo.tpot_ms={slo_tpot_ms}",
            "workload.options.copy_gbps=2.5",  # a CPU measures none: given, the decode bound is computed
            INLINE,
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    (res,) = results_files(tmp_path / "outputs")
    # the decode steps against their bandwidth bound, per batch size, beside the request metrics
    bound = list(csv.DictReader(open(next((tmp_path / "outputs").rglob("decode_bound.csv")))))
    spent = sum(float(r["step_ms"]) * int(r["steps"]) for r in bound)
    moved = sum(float(r["bytes_per_step"]) * int(r["steps"]) for r in bound)
    assert res["metrics"]["decode_bw_util"] == pytest.approx(moved / 2.5e9 / (spent / 1e3), rel=1e-4)
    assert res["effective"]["decode_bound"]["copy_bandwidth"]["source"] == "given (workload.options.copy_gbps)"
    rows = list(csv.DictReader(open(next((tmp_path / "outputs").rglob("requests.csv")))))
    assert sorted({r["run"] for r in rows}) == ["0", "1"] and len(rows) == 2 * 10
    want = _recomputed(rows, slo_ttft_ms, slo_tpot_ms)
    got = res["metrics"]
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    assert got["offered_qps"] == pytest.approx(40.0, rel=0.02)
    assert res["effective"]["serve"]["offered_qps"] == pytest.approx(40.0, rel=0.02)


def test_normalised_arrivals_offer_the_labelled_rate_whatever_the_draws():
    """The serve_load preset's seeded trace offered 3.45 requests/s at qps=4 before arrivals were
    normalised; now its last request arrives at N / qps, for every seed, rate and process."""
    from b200lab.serving.loadgen import arrival_times, offered_rate

    kw = dict(
        duration_s=1e9,
        burstiness=0.5,
        prompt_len=8,
        prompt_dist="fixed",
        output_len=4,
        output_dist="fixed",
        spread=0.0,
        max_prompt=8,
        max_output=4,
        vocab_size=97,
    )
    for seed, qps, process in (
        (1234, 4.0, "poisson"),
        (7, 1.0, "gamma"),
        (int(np.random.randint(1e6)), 2.5, "poisson"),
    ):
        trace = make_trace(seed, 64, qps=qps, process=process, **kw)
        assert offered_rate(trace) == pytest.approx(qps, rel=0.02)
        times = [s.arrival_s for s in trace]
        assert times == sorted(times) and times[-1] == pytest.approx(64 / qps) and times[0] > 0
        raw = np.cumsum(np.random.default_rng(seed).exponential(1 / qps, 64)) if process == "poisson" else None
        if raw is not None:  # the same draws, rescaled: the pattern of gaps is kept
            assert np.allclose(np.diff(times) / np.diff(raw), (64 / qps) / raw[-1])
    assert np.array_equal(arrival_times(np.random.default_rng(0), 5, float("inf"), "poisson", 1.0), np.zeros(5))
