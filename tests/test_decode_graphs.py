"""workload.options.decode_graphs: decode steps padded to batch-size buckets over the in-place pool,
one static graph per bucket (b200lab/serving/compiled.py). Padding rows change no real row's
logits or tokens, the scratch block is never a request's, and once every bucket is warm a served
trace compiles nothing more; on a GPU every bucket is recorded as a CUDA graph."""

from __future__ import annotations

import pytest
import torch

from b200lab.core.machine import ConfigError
from b200lab.core.validation import validate
from b200lab.serving.compiled import compile_decode, cudagraph_skips, decode_bucket_sizes, graphs_compiled
from b200lab.serving.engine import Engine, Limits, ScriptedClock, last_logits
from b200lab.serving.paged import Row
from b200lab.serving.sampling import next_token
from support import compose
from tiny_models import burst_trace, decoder_of, greedy_by_recompute, tiny_gpt

TOL = 2e-6  # float32: FlexAttention on a CPU takes no float64


def in_place_pool(model, blocks: int = 24, block_size: int = 4):
    return decoder_of(model).paged_cache(blocks, block_size, torch.float32, blocks * block_size, in_place=True)


def engine(model, pool, max_running: int, buckets=None, decode_forward=None) -> Engine:
    return Engine(
        decoder_of(model),
        pool,
        Limits(max_running=max_running, max_model_len=40),
        ScriptedClock(0.01, 0.0, 0.004),
        lambda logits: next_token(logits),
        decode_buckets=buckets,
        decode_forward=decode_forward,
    )


def test_bucket_sizes_are_the_powers_of_two_below_max_running_and_it():
    for max_running in range(1, 130):
        sizes = decode_bucket_sizes(max_running)
        expected = [2**i for i in range(8) if 2**i < max_running] + [max_running]
        assert sizes == expected, max_running


def test_padding_rows_change_no_real_rows_logits():
    """Three rows prefilled into interleaved blocks, then one decode step at their own size and the
    same step padded to a bucket of 8: the real rows' logits are equal."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=0.5)
    pool = in_place_pool(model)
    eng = engine(model, pool, max_running=3, buckets=[1, 8])  # 3 real rows, 5 padding rows on one scratch block
    assert eng.scratch == [0] and pool.usable_blocks == 23  # the lowest block, kept from every request
    tables = [pool.allocate(9), pool.allocate(6), pool.allocate(11)]
    lengths = [7, 5, 10]
    decoder = decoder_of(model)
    with torch.inference_mode():
        for table, n in zip(tables, lengths):
            last_logits(decoder, torch.randint(0, 97, (1, n)), pool.view([Row(table, 0, n)]))
        k_before = [k.clone() for k in pool.k]
        tokens = torch.randint(0, 97, (3,)).tolist()
        rows = [Row(t, n, 1) for t, n in zip(tables, lengths)]
        alone = last_logits(decoder, torch.tensor([[t] for t in tokens]), pool.view(rows))
        for layer, k in enumerate(pool.k):  # rewrite the same keys: the padded step starts from the same pool
            k.copy_(k_before[layer])
        padded_tokens, padded_rows = eng.padded_decode_rows(tokens, rows)
        assert len(padded_rows) == 8 and padded_tokens[3:] == [0] * 5
        assert all(r.blocks == eng.scratch for r in padded_rows[3:])
        view = pool.view(padded_rows)
        # the slot maps are the pool's own (no per-step copy); a step sends its rows' owners and positions
        assert view.keys.slot_owner is pool.slot_owner and view.keys.slot_pos is pool.slot_pos
        assert view.keys.row_owner.tolist() == [t[0] for t in tables] + eng.scratch * 5
        padded = last_logits(decoder, torch.tensor([[t] for t in padded_tokens]), view)
    assert padded.shape[0] == 8 and torch.isfinite(padded).all()  # padding rows see the scratch slot: no NaN
    assert (padded[:3] - alone).abs().max() < TOL
    for layer in range(len(pool.k)):  # the padding row wrote only its scratch slot
        changed = (pool.k[layer] != k_before[layer]).any(dim=(1, 2)).nonzero().flatten().tolist()
        scratch_slots = set(range(eng.scratch[0] * 4, eng.scratch[0] * 4 + 4))
        assert set(changed) - scratch_slots <= {t[n // 4] * 4 + n % 4 for t, n in zip(tables, lengths)}


def test_served_requests_with_bucketed_decode_return_the_tokens_of_sequential_generation():
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=1.0)
    seed = int(torch.randint(0, 2**31, (1,)))
    trace = burst_trace(seed, 7, 300.0, prompt_len=6, output_len=5, spread=0.8, max_prompt=12, max_output=9)
    pool = in_place_pool(model, blocks=20)
    eng = engine(model, pool, max_running=3, buckets=[1, 4])  # steps of 2 and 3 rows padded to 4
    records = eng.run(trace)
    assert eng.max_batch == 3
    with torch.no_grad():
        for spec, rec in zip(trace, records):
            assert rec.status == "done"
            expected = greedy_by_recompute(model, torch.tensor([spec.prompt]), spec.output_len)
            assert rec.tokens == expected[0].tolist(), spec.id
    assert pool.used_blocks == 0 and eng.scratch[0] not in pool.free


def test_a_request_that_needs_the_scratch_block_is_rejected_not_left_waiting():
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2)
    pool = in_place_pool(model, blocks=4, block_size=4)  # 16 slots, 12 usable with the scratch block
    trace = burst_trace(3, 1, 100.0, prompt_len=10, output_len=4, spread=0.0, max_prompt=10, max_output=4)
    [rec] = engine(model, pool, max_running=2, buckets=[1, 2]).run(trace)  # 14 tokens: 4 blocks
    assert rec.status == "rejected" and "pool 12" in rec.reason


def test_buckets_that_cannot_hold_max_running_are_refused():
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2)
    with pytest.raises(ValueError, match="do not hold max_running=4"):
        engine(model, in_place_pool(model), max_running=4, buckets=[1, 2])


def test_compiled_buckets_compile_once_each_then_serve_the_eager_tokens_without_compiling():
    """Buckets of 1 and 2 compiled (static shapes) and warmed on padding rows alone: each bucket's
    step compiles one graph there, and no decode step of the served traces after it compiles
    anything; the tokens are the eager engine's. The pool has 128 slots, a size inductor's CPU
    code for the block mask fails at (the CPU backend is aot_eager, CPU_DECODE_BACKEND)."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=1.0)
    trace = burst_trace(11, 4, 300.0, prompt_len=5, output_len=4, spread=0.5, max_prompt=8, max_output=6)
    eager = engine(model, in_place_pool(model, blocks=32), max_running=2).run(trace)
    step, compiles = compile_decode("cpu", 2), []

    def counted(*args):
        before = graphs_compiled()
        out = step(*args)
        compiles.append((args[1].shape[0], graphs_compiled() - before))
        return out

    compiled = engine(model, in_place_pool(model, blocks=32), 2, buckets=[1, 2], decode_forward=counted)
    compiled.warm_decode_buckets(runs=2)
    assert compiles == [(1, 1), (1, 0), (2, 1), (2, 0)]  # one graph a bucket, then replays
    compiles.clear()
    records = [compiled.run(trace) for _ in range(2)]
    assert {rows for rows, _ in compiles} == {1, 2} and all(n == 0 for _, n in compiles), compiles
    assert compiled.max_batch == 2
    assert [r.tokens for r in records[0]] == [r.tokens for r in records[1]] == [r.tokens for r in eager]


def test_decode_graphs_need_the_in_place_pool():
    with pytest.raises(ConfigError) as refused:
        validate(compose(["workload=serve", "seq=short", "workload.options.decode_graphs=true"]), "cpu")
    assert "workload.options.decode_graphs=true with kv_read=gather" in str(refused.value)
    validate(
        compose(
            [
                "workload=serve",
                "seq=short",
                "attention=flex",
                "workload.options.kv_read=in_place",
                "workload.options.decode_graphs=true",
            ]
        ),
        "cpu",
    )


@pytest.mark.gpu
def test_every_bucket_is_recorded_as_a_cuda_graph_and_serves_the_eager_tokens():
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=1.0).cuda()
    trace = burst_trace(5, 6, 300.0, prompt_len=6, output_len=5, spread=0.5, max_prompt=10, max_output=8)
    eager = engine(model, in_place_pool(model, blocks=20), max_running=4).run(trace)
    pool = in_place_pool(model, blocks=20)
    for t in (*pool.k, *pool.v, pool.slot_owner, pool.slot_pos):
        torch._dynamo.mark_static_address(t)
    graphed = engine(model, pool, 4, buckets=decode_bucket_sizes(4), decode_forward=compile_decode("cuda", 3))
    from torch._dynamo.utils import counters

    skips, recorded = cudagraph_skips(), counters["inductor"]["cudagraph_recorded_non_static_inputs"]
    before = graphs_compiled()
    graphed.warm_decode_buckets()
    assert graphs_compiled() - before >= 3  # every bucket compiled (none left to run eagerly)
    warmed = graphs_compiled()
    records = graphed.run(trace)
    assert graphs_compiled() == warmed  # serving compiled nothing
    assert cudagraph_skips() == skips  # no bucket's graph was run without recording
    assert counters["inductor"]["cudagraph_recorded_non_static_inputs"] > recorded  # and graphs were recorded
    assert [r.tokens for r in records] == [r.tokens for r in eager]
