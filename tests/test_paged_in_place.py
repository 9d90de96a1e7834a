"""workload.options.kv_read=in_place: FlexAttention reads the block pool itself (a mask over every
slot's row and position) instead of each row's blocks gathered into a window. The in-place path
equals the gathered path and the full recomputation, step by step and as whole served requests;
a backend that cannot read pages is refused."""

from __future__ import annotations

import pytest
import torch

from b200lab.serving.engine import Engine, Limits, ScriptedClock
from b200lab.serving.paged import Row
from b200lab.serving.sampling import next_token
from support import FAST, INLINE, compose, results_files, run_cli
from tiny_models import burst_trace, decoder_of, greedy_by_recompute, tiny_gpt

TOL = 2e-6  # float32: FlexAttention on a CPU takes no float64


def pools(model, blocks: int = 32, block_size: int = 4):
    decoder = decoder_of(model)
    return (
        decoder.paged_cache(blocks, block_size, torch.float32, blocks * block_size, in_place=True),
        decoder.paged_cache(blocks, block_size, torch.float32, blocks * block_size),
    )


@pytest.mark.parametrize("owners", [None, (40, 17)], ids=["row-index", "owner-ids"])
@pytest.mark.parametrize("window", [None, 3])
def test_flex_over_the_pool_equals_the_written_out_definition(window, owners):
    """One attention call over a whole pool (6 blocks of 4 slots, two rows holding interleaved blocks
    and one block free): FlexAttention's mask over the slots against the explicit scores and the
    dense mask of :class:`PagedKeys` (b200lab/attention/base.py), with and without a window; slots
    named by their row's index, or by owner ids the rows name (as the serving pool keeps them)."""
    from omegaconf import OmegaConf

    from b200lab.attention.base import AttnMask, PagedKeys, reference_attention
    from b200lab.attention.flex import FlexAttention

    tables, lengths = ([4, 1], [0, 5, 2]), (7, 10)  # block 3 belongs to no row
    slot_row, slot_pos = torch.full((24,), -1), torch.zeros(24, dtype=torch.long)
    for row, table in enumerate(tables):
        for j, block in enumerate(table):
            slot_row[block * 4 : block * 4 + 4] = row if owners is None else owners[row]
            slot_pos[block * 4 : block * 4 + 4] = torch.arange(j * 4, j * 4 + 4)
    q_pos = torch.tensor([[n - 2, n - 1] for n in lengths])  # each row's last two tokens ask
    row_owner = None if owners is None else torch.tensor(owners)
    mask = AttnMask(paged=PagedKeys(slot_row, slot_pos, q_pos, row_owner), window=window)
    q, k, v = torch.randn(2, 4, 2, 8), torch.randn(1, 2, 24, 8), torch.randn(1, 2, 24, 8)
    cfg = OmegaConf.merge(OmegaConf.structured(FlexAttention.Config), {"name": "flex", "_target_": "x"})
    out = FlexAttention(cfg, "cpu").attend(q, k, v, mask)
    expected = reference_attention(q, k, v, mask)  # k and v broadcast over the rows, as the pool does
    assert (out - expected).abs().max() < TOL
    seen = mask.dense(2, 24, "cpu")  # row 1's last query sees its 10 tokens, or the window's 3
    assert int(seen[1, 0, 1].sum()) == (10 if window is None else 3) and not seen[:, :, :, 12:16].any()


def test_in_place_reads_equal_the_gathered_window_and_the_full_forward():
    """Three requests of different lengths in one pool, blocks handed out interleaved so a row's
    blocks are not contiguous, prefilled apart and decoded together: every step's logits on the
    in-place path equal the gathered path's and each sequence's full forward."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2)
    in_place, gathered = pools(model)
    seqs = [torch.randint(0, 97, (n,)) for n in (13, 8, 10)]
    with torch.no_grad():
        refs = [model(s[None])[0] for s in seqs]
        tables = {id(p): [[] for _ in seqs] for p in (in_place, gathered)}
        for p in (in_place, gathered):  # one block at a time, round robin: interleaved tables
            for _ in range(4):
                for i, s in enumerate(seqs):
                    if len(tables[id(p)][i]) * 4 < len(s):
                        tables[id(p)][i] += p.allocate(1)
        assert tables[id(in_place)][0] != list(range(tables[id(in_place)][0][0], tables[id(in_place)][0][0] + 4))
        prefill = [6, 4, 5]
        for i, (s, n) in enumerate(zip(seqs, prefill)):
            outs = [model(s[None, :n], cache=p.view([Row(tables[id(p)][i], 0, n)]))[0] for p in (in_place, gathered)]
            assert (outs[0] - outs[1]).abs().max() < TOL and (outs[0] - refs[i][:n]).abs().max() < TOL
        for step in range(3):
            idx = torch.stack([s[n + step : n + step + 1] for s, n in zip(seqs, prefill)])
            outs = [
                model(idx, cache=p.view([Row(tables[id(p)][i], n + step, 1) for i, n in enumerate(prefill)]))
                for p in (in_place, gathered)
            ]
            assert (outs[0] - outs[1]).abs().max() < TOL
            for i, n in enumerate(prefill):
                assert (outs[0][i, 0] - refs[i][n + step]).abs().max() < TOL


def test_blocks_handed_out_again_show_nothing_of_their_last_request():
    """A request's table [0, 1, 2] is read, then returned; a new table starts at the same block 0
    (so the same owner id) but continues elsewhere: the keys left in blocks 1 and 2 must not join
    its attention. Its prefill equals the full forward of its own tokens."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=0.5)
    in_place, _ = pools(model, blocks=8)
    first = [in_place.allocate(4)[0] for _ in range(3)]
    assert first == [0, 1, 2]
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 12)), cache=in_place.view([Row(first, 0, 12)]))
        in_place.release(first)
        assert in_place.allocate(32) == list(range(8))  # all of them, the lowest first
        tokens = torch.randint(0, 97, (1, 12))
        out = model(tokens, cache=in_place.view([Row([0, 5, 6], 0, 12)]))[0]
        assert (out - model(tokens)[0]).abs().max() < TOL


def test_served_requests_read_in_place_return_the_tokens_of_sequential_generation():
    """Six requests, at most three running, weights large enough that the tokens depend on the
    context: each request's greedy tokens on the in-place path equal its tokens generated alone."""
    model = tiny_gpt("flex", dtype=torch.float32, n_kv_heads=2, std=1.0)
    seed = int(torch.randint(0, 2**31, (1,)))
    trace = burst_trace(seed, 6, 200.0, prompt_len=6, output_len=5, spread=0.8, max_prompt=12, max_output=9)
    in_place, _ = pools(model, blocks=16)
    engine = Engine(
        decoder_of(model),
        in_place,
        Limits(max_running=3, max_model_len=40),
        ScriptedClock(0.01, 0.0, 0.004),
        lambda logits: next_token(logits),
    )
    records = engine.run(trace)
    assert engine.max_batch >= 2
    with torch.no_grad():
        for spec, rec in zip(trace, records):
            assert rec.status == "done"
            expected = greedy_by_recompute(model, torch.tensor([spec.prompt]), spec.output_len)
            assert rec.tokens == expected[0].tolist(), spec.id


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["attention=sdpa", "workload.options.kv_read=in_place"], "kv_read=in_place with attention=sdpa"),
        (["attention=flex", "workload.options.kv_read=paged"], "workload.options.kv_read='paged': choose gather"),
    ],
)
def test_a_backend_that_cannot_read_pages_is_refused(overrides, message):
    from b200lab.core.machine import ConfigError
    from b200lab.core.validation import validate

    with pytest.raises(ConfigError) as exc:
        validate(compose(["workload=serve", "seq=short", *overrides]), "cpu")
    assert message in str(exc.value)
    validate(compose(["workload=serve", "seq=short", "attention=flex", "workload.options.kv_read=in_place"]), "cpu")


@pytest.mark.e2e
def test_the_cli_refuses_in_place_reads_without_flex_and_records_them_with_it(tmp_path, store):
    """Refused with sdpa, and decode_graphs refused without in-place reads; served with flex, the
    decode steps graphed per bucket and prompts fed beside them within a token budget (the serve
    workload's own path: warm-up, scratch block, mixed steps, record)."""
    refused = run_cli(
        ["workload=serve", "seq=short", "workload.options.kv_read=in_place", INLINE, *FAST], tmp_path, store
    )
    assert refused.returncode == 2 and "kv_read=in_place with attention=sdpa" in refused.stderr
    graphs = run_cli(["workload=serve", "seq=short", "workload.options.decode_graphs=true", INLINE], tmp_path, store)
    assert graphs.returncode == 2 and "decode_graphs=true with kv_read=gather" in graphs.stderr
    served = run_cli(
        [
            "workload=serve",
            "seq=short",
            "attention=flex",
            "workload.options.kv_read=in_place",
            "workload.options.decode_graphs=true",
            "workload.options.max_running=2",
            "workload.options.token_budget=6",
            "workload.options.num_requests=4",
            "workload.options.output_len=4",
            INLINE,
            *FAST,
        ],
        tmp_path,
        store,
    )
    assert served.returncode == 0, served.stdout + served.stderr
    (record,) = results_files(tmp_path / "outputs")
    assert record["status"] == "ok" and record["metrics"]["compiles_timed"] == 0
    serve = record["effective"]["serve"]
    assert serve["attention_reads"].startswith("the pool in place")
    graphs = serve["decode_graphs"]
    assert graphs["buckets"] == [1, 2] and graphs["mixed_buckets"] == [6] and graphs["mode"].startswith("aot_eager")
    assert graphs["graphs"] >= 3  # a graph per decode bucket and one for the mixed steps' 6 tokens
    assert serve["kv_pool"]["reserved_blocks"] == 1 and record["metrics"]["kv_blocks"] == serve["kv_pool"]["blocks"]
    assert "up to 6 tokens" in serve["scheduling"] and record["metrics"]["mixed_steps"] > 0
    assert 0 < record["metrics"]["max_step_tokens"] <= 6
