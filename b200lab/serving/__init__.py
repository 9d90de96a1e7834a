"""Generation and serving: the pieces ``workload=generate`` and ``workload=serve`` are built from.

- ``sampling.py``: the next token from logits (greedy, or sampled with temperature / top-k), on
  the device, no host sync;
- ``paged.py``: a block KV cache (fixed-size blocks from one pool, a block table per request) and
  the per-step view the GPT's decode path reads;
- ``loadgen.py``: seeded request traces (Poisson or gamma arrivals, prompt/output lengths);
- ``engine.py``: the in-process server: a queue, admission limits, continuous batching (requests
  join and leave the running batch every step), an injectable clock;
- ``latency.py``: vLLM's request metrics (ttft, tpot, itl, e2e, goodput) and the per-request CSV;
- ``bandwidth.py``: the bytes a decode step must move and the card's measured copy bandwidth;
- ``ranks.py``: which rank reports what, so replicated ranks count each request and token once.

docs/serving.md describes both workloads.
"""
