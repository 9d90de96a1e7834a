"""workload.options.token_budget: prefill chunks ride in one forward with the running requests'
decode rows, packed into one row of the in-place pool. A packed forward equals each request's
full forward token by token; served requests give the tokens of sequential generation; a burst
of prompts no longer stalls the requests already decoding; the option is refused where it
cannot work."""

from __future__ import annotations

import pytest
import torch

from b200lab.core.machine import ConfigError
from b200lab.core.validation import validate
from b200lab.serving.compiled import compile_decode, graphs_compiled, mixed_bucket_sizes
from b200lab.serving.engine import Engine, Limits, ScriptedClock, last_logits
from b200lab.serving.loadgen import RequestSpec
from b200lab.serving.paged import Row
from b200lab.serving.sampling import next_token
from support import compose
from tiny_models import decoder_of, greedy_by_recompute, tiny_gpt

TOL = 2e-6  # float32: FlexAttention on a CPU takes no float64
CLOCK = dict(prefill_s=0.01, prefill_token_s=0.001, decode_s=0.004)
# one pool size and fixed lengths throughout: FlexAttention compiles once per shape on a CPU
BLOCKS = 41


def in_place_pool(model, blocks: int = BLOCKS):
    return decoder_of(model).paged_cache(blocks, 4, torch.float32, blocks * 4, in_place=True)


def test_a_packed_forward_equals_each_requests_full_forward_at_every_token():
    """Four requests of 8 tokens in one pool with interleaved blocks. One packed forward feeds the
    first 7, 5 and 3 tokens of three of them; a second feeds the rest of all four: one decode
    token (position 7), chunks mid-way through a prompt (from positions 5 and 3) and a whole
    prompt. At every token both give the logits of that request's own full forward at that
    position; ``last_only`` gives each row's last token's."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=0.5)
    pool = in_place_pool(model)
    seqs = torch.randint(0, 97, (4, 8))
    cached = [7, 5, 3, 0]  # tokens of each request fed by the first forward
    tables = [[] for _ in seqs]
    for _ in range(2):  # round robin, one block at a time
        for table in tables:
            table += pool.allocate(1)
    with torch.no_grad():
        full = model(seqs)
        first = pool.packed_view([Row(t, 0, c) for t, c in zip(tables[:3], cached)])
        out = model(torch.cat([s[:c] for s, c in zip(seqs, cached)])[None], cache=first)[0]
        assert (out - torch.cat([f[:c] for f, c in zip(full, cached)])).abs().max() < TOL
        rows = [Row(t, c, 8 - c) for t, c in zip(tables, cached)]
        packed = torch.cat([s[c:] for s, c in zip(seqs, cached)])[None]
        out = model(packed, cache=pool.packed_view(rows))[0]
        expected = torch.cat([f[c:] for f, c in zip(full, cached)])
        assert out.shape == expected.shape and (out - expected).abs().max() < TOL
        last = last_logits(decoder_of(model), packed, pool.packed_view(rows))
        assert (last - full[:, -1]).abs().max() < TOL


def burst(seed: int, n: int, running: int) -> list[RequestSpec]:
    """``running`` requests of 4 prompt tokens at t = 0 with long outputs, then ``n`` - ``running``
    of 14 a little later, while the first ones decode; ``seed`` draws the tokens."""
    gen = torch.Generator().manual_seed(seed)
    specs = []
    for i in range(n):
        early = i < running
        prompt = torch.randint(0, 97, (4 if early else 14,), generator=gen)
        specs.append(RequestSpec(i, 0.0 if early else 0.02, tuple(prompt.tolist()), 8 if early else 3))
    return specs


def segments(view) -> list[int]:
    """The token count of each row a packed step feeds."""
    ends = view.ends.tolist()
    return [b - a for a, b in zip([-1, *ends], ends)]


def served(model, trace, limits: Limits, blocks: int = BLOCKS, **engine):
    """(engine, records, [the rows of every eager forward: their token counts], [rows each sampler call drew])."""
    fed, sampled = [], []

    def forward(decoder, idx, view):
        fed.append(segments(view) if view.ends is not None else [idx.shape[1]] * idx.shape[0])
        return last_logits(decoder, idx, view)

    def pick(logits):
        sampled.append(logits.shape[0])
        return next_token(logits)

    eng = Engine(decoder_of(model), in_place_pool(model, blocks), limits, ScriptedClock(**CLOCK), pick, **engine)
    if "decode_forward" not in engine:
        eng.forward = forward
    eng.sampled = sampled
    return eng, eng.run(trace), fed


@pytest.mark.parametrize("chunk", [None, 4])
def test_served_requests_within_a_token_budget_return_the_tokens_of_sequential_generation(chunk):
    """Two requests decoding when four long prompts arrive, a budget of 8 tokens a step (with and
    without a per-request chunk): each request's greedy tokens equal its tokens generated alone,
    no forward feeds more than the budget, and prompts did ride with decode rows."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=1.0)
    trace = burst(int(torch.randint(0, 2**31, (1,))), 6, running=2)
    limits = Limits(max_running=6, max_model_len=40, prefill_chunk=chunk, token_budget=8)
    engine, records, fed = served(model, trace, limits)
    tokens = [sum(rows) for rows in fed]
    assert engine.mixed_steps > 0 and max(tokens) == engine.max_step_tokens == 8
    longest = max(max(rows) for rows in fed)  # a decode row feeds 1 token; a prompt chunk at most `chunk`
    if chunk:  # 6 prompt tokens beside the 2 decode rows: a chunk of 4 and one of 2
        assert longest == chunk and engine.max_prefill_rows >= 2
    else:  # what the budget leaves beside the decode rows, up to 8
        assert chunk is None and 6 <= longest <= 8
    # one forward an iteration: the decode-only steps are logged for the bandwidth bound, the mixed ones not
    assert len(fed) == engine.mixed_steps + len(engine.decode_log)
    # only rows that emit a token are sampled: each output token drawn once
    assert sum(engine.sampled) == sum(len(r.tokens) for r in records)
    with torch.no_grad():
        for spec, rec in zip(trace, records):
            assert rec.status == "done", rec.reason
            expected = greedy_by_recompute(model, torch.tensor([spec.prompt]), spec.output_len)
            assert rec.tokens == expected[0].tolist(), spec.id


def test_a_burst_of_prompts_no_longer_stalls_the_requests_decoding():
    """On the scripted clock (a prefill forward 10 ms + 1 ms a prompt token, a decode step 4 ms),
    four 14-token prompts arriving while two requests decode: fed whole, one forward each, they
    hold the running requests' next token back by more than 4 prefills; within a budget of 8
    tokens a step, no gap between a running request's tokens exceeds one decode step plus the
    budget's prompt tokens."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=1.0)
    trace = burst(0, 6, running=2)
    _, apart, _ = served(model, trace, Limits(max_running=6, max_model_len=40))
    _, mixed, _ = served(model, trace, Limits(max_running=6, max_model_len=40, token_budget=8))
    gap = lambda records: max(b - a for r in records[:2] for a, b in zip(r.token_s, r.token_s[1:]))  # noqa: E731
    assert gap(apart) > 4 * (CLOCK["prefill_s"] + 14 * CLOCK["prefill_token_s"])
    # the longest: a step of the 2 decode rows and 6 prompt tokens, charged decode_s plus the prompt tokens
    assert gap(mixed) == pytest.approx(CLOCK["decode_s"] + (8 - 2) * CLOCK["prefill_token_s"])
    assert [r.tokens for r in mixed] == [r.tokens for r in apart]


def test_a_token_budget_with_graphed_decode_buckets_serves_the_same_tokens():
    """Steps with prompt tokens are packed; steps without are the padded decode buckets."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=1.0)
    trace = burst(1, 6, running=2)
    limits = Limits(max_running=4, max_model_len=40, token_budget=8)
    engine, records, _ = served(model, trace, limits, decode_buckets=[1, 2, 4])
    assert engine.mixed_steps > 0 and engine.decode_log  # both kinds of step ran
    with torch.no_grad():
        for spec, rec in zip(trace, records):
            expected = greedy_by_recompute(model, torch.tensor([spec.prompt]), spec.output_len)
            assert rec.tokens == expected[0].tolist(), spec.id


def test_padding_a_packed_step_changes_no_real_token_and_writes_only_the_scratch_block():
    """The second packed forward of the first test, padded to 24 tokens and 6 rows: the real rows'
    logits are the unpadded step's, and beside the real tokens' slots only the scratch block's
    first slot is written."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=0.5)
    pools = [in_place_pool(model) for _ in range(2)]
    scratch = pools[1].reserve(1)
    seqs = torch.randint(0, 97, (2, 8))
    with torch.no_grad():
        outs = []
        for pool, padded in zip(pools, (None, (24, 6, scratch))):
            tables = [pool.allocate(8), pool.allocate(8)]
            model(seqs[:, :5].reshape(1, -1), cache=pool.packed_view([Row(t, 0, 5) for t in tables]))
            before = [k.clone() for k in pool.k]
            rows = [Row(tables[0], 5, 1), Row(tables[1], 5, 3)]
            fed = torch.cat([seqs[0, 5:6], seqs[1, 5:]])
            width = padded[0] if padded else 4
            idx = torch.cat([fed, torch.zeros(width - 4, dtype=torch.long)])[None]
            outs.append(last_logits(decoder_of(model), idx, pool.packed_view(rows, padded)))
            changed = {int(i) for k, b in zip(pool.k, before) for i in (k != b).any(-1).any(-1).nonzero()}
            real = {tables[0][1] * 4 + 1, tables[1][1] * 4 + 1, tables[1][1] * 4 + 2, tables[1][1] * 4 + 3}
            assert changed == (real | {scratch[0] * 4} if padded else real)
    assert outs[1].shape[0] == 6 and (outs[1][:2] - outs[0]).abs().max() < TOL and torch.isfinite(outs[1]).all()


def test_graphed_mixed_steps_compile_once_per_bucket_then_serve_the_eager_tokens():
    """A decode bucket of 4 rows and a mixed bucket of 16 tokens, compiled with static shapes and
    warmed on padding alone: each bucket compiles one graph there, no step of two served traces
    compiles after it, and the tokens are the eager engine's."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=1.0)
    trace = burst(2, 6, running=2)
    limits = Limits(max_running=4, max_model_len=40, token_budget=16)
    _, eager, _ = served(model, trace, limits)
    step, compiles = compile_decode("cpu", 2), []

    def counted(*args):
        before = graphs_compiled()
        out = step(*args)
        compiles.append((tuple(args[1].shape), graphs_compiled() - before))
        return out

    assert mixed_bucket_sizes(16) == [16] and mixed_bucket_sizes(100) == [16, 32, 64, 100]
    engine, _, _ = served(
        model, [], limits, decode_buckets=[4], decode_forward=counted, mixed_buckets=mixed_bucket_sizes(16)
    )
    engine.warm_decode_buckets(runs=2)
    engine.warm_mixed_buckets(runs=2)
    assert [n for _, n in compiles] == [1, 0] * 2
    compiles.clear()
    runs = [engine.run(trace) for _ in range(2)]
    assert {(4, 1), (1, 16)} <= {shape for shape, _ in compiles} and all(n == 0 for _, n in compiles), compiles
    assert engine.mixed_steps > 0 and [r.tokens for r in runs[0]] == [r.tokens for r in runs[1]] == [
        r.tokens for r in eager
    ]


def test_the_engine_refuses_a_budget_it_cannot_pack_or_fill():
    model = tiny_gpt("flex", dtype=torch.float32)
    gathered = decoder_of(model).paged_cache(8, 4, torch.float32, 32)
    with pytest.raises(ValueError, match="needs a pool read in place"):
        Engine(decoder_of(model), gathered, Limits(max_running=2, token_budget=8), ScriptedClock(), next_token)
    with pytest.raises(ValueError, match="leaves no prompt token beside 4 decode rows"):
        Engine(
            decoder_of(model), in_place_pool(model), Limits(max_running=4, token_budget=4), ScriptedClock(), next_token
        )
    with pytest.raises(ValueError, match="needs a pool read in place"):
        gathered.packed_view([Row([0], 0, 2)])
    with pytest.raises(ValueError, match="need decode buckets and a token budget they hold"):
        Engine(
            decoder_of(model),
            in_place_pool(model),
            Limits(max_running=2, token_budget=32),
            ScriptedClock(),
            next_token,
            decode_buckets=[1, 2],
            mixed_buckets=[16],
        )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["attention=flex", "workload.options.token_budget=64"], "token_budget=64 with kv_read=gather"),
        (
            ["attention=flex", "workload.options.kv_read=in_place", "workload.options.token_budget=32"],
            "token_budget=32 with max_running=32: a full batch of decode rows would leave no token",
        ),
        (["workload.options.token_budget=0"], "token_budget=0: must be a positive integer or null"),
        (
            ["model=moe_tiny", "attention=flex", "workload.options.kv_read=in_place"]
            + ["workload.options.decode_graphs=true", "model.capacity_factor=1.0"],
            "decode_graphs=true with model.capacity_factor=1.0: the padding rows and tokens",
        ),
    ],
)
def test_the_serve_workload_refuses_a_budget_that_cannot_work(overrides, message):
    with pytest.raises(ConfigError) as exc:
        validate(compose(["workload=serve", "seq=short", *overrides]), "cpu")
    assert message in str(exc.value)
    validate(
        compose(
            ["workload=serve", "seq=short", "attention=flex", "workload.options.kv_read=in_place"]
            + ["workload.options.token_budget=64"]
        ),
        "cpu",
    )


@pytest.mark.gpu
def test_mixed_buckets_are_recorded_as_cuda_graphs_and_serve_the_eager_tokens():
    """On a GPU: decode and mixed buckets compiled by inductor and recorded as CUDA graphs (no
    bucket run unrecorded), serving the eager engine's tokens."""
    from torch._dynamo.utils import counters

    from b200lab.serving.compiled import cudagraph_skips

    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=1.0).cuda()
    trace = burst(3, 6, running=2)
    limits = Limits(max_running=4, max_model_len=40, token_budget=32)

    def engine(**extra):
        pool = decoder_of(model).paged_cache(BLOCKS, 4, torch.float32, BLOCKS * 4, in_place=True)
        if extra:
            for t in (*pool.k, *pool.v, pool.slot_owner, pool.slot_pos):
                torch._dynamo.mark_static_address(t)
        return Engine(decoder_of(model), pool, limits, ScriptedClock(**CLOCK), next_token, **extra)

    eager = engine().run(trace)
    buckets = mixed_bucket_sizes(32)
    graphed = engine(
        decode_buckets=[1, 2, 4], decode_forward=compile_decode("cuda", 3 + len(buckets)), mixed_buckets=buckets
    )
    skips, recorded = cudagraph_skips(), counters["inductor"]["cudagraph_recorded_non_static_inputs"]
    before = graphs_compiled()
    graphed.warm_decode_buckets()
    graphed.warm_mixed_buckets()
    assert graphs_compiled() - before >= 3 + len(buckets)  # every bucket compiled (none left to run eagerly)
    warmed = graphs_compiled()
    records = graphed.run(trace)
    assert graphs_compiled() == warmed  # serving compiled nothing
    assert cudagraph_skips() == skips and counters["inductor"]["cudagraph_recorded_non_static_inputs"] > recorded
    assert graphed.mixed_steps > 0 and [r.tokens for r in records] == [r.tokens for r in eager]
