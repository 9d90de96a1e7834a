"""Shared FLOPs formulas; each model family adds them up for itself (``flops_per_sample``).

Notation: L layers, d model width, f MLP width, V vocabulary, T sequence length, H query heads,
G key/value heads, D = d / H.

Matmul parameters N (embedding lookups do no arithmetic, so the embedding table is excluded;
the output head is included). For the dense GPT:

    N = L * (attention projections + 2 d f) + V d
    attention projections = d * (H + 2 G) * D   (Q, K, V)  +  d^2   (output)  = 4 d^2 when G = H

A mixture-of-experts layer (for the MoE family) counts only the k experts a token visits plus
the router's d x E projection: d E + k * 2 d f_e.

Attention scores and the weighted sum: for the query at position i (0-based), causal attention
touches i + 1 keys: (i + 1) * d multiply-adds for Q K^T and as many for A V, i.e. 4 d (i + 1)
FLOPs. Averaged over i = 0 .. T-1 that is 2 d (T + 1) per token per layer, half the 4 d T a
non-causal count would give. (Grouped K/V heads do not change it: every query head still
scores every key.) A sliding window of w tokens keeps w(w+1)/2 + (T-w)w pairs instead of
T(T+1)/2 (``causal_pairs``). A document mask (packed sequences) is counted as causal: the pairs it
skips depend on the batch, so MFU with attention=flex_document overstates the useful work a little.

    forward   = 2 N + 2 L d (T + 1)
    training  = 3 x forward                        (backward costs twice the forward)

Norms, activations, softmax and the optimizer are not counted (model FLOPs, as in PaLM's MFU).

The vision, diffusion and recommender families (docs/measurement.md, "Vision, diffusion and
recommender families") add up the same pieces per sample: ``linear_flops`` (2 x rows x in x out:
a patch embedding is one per patch, a conditioning layer one per sample), ``encoder_layer_flops``
(a non-causal pre-norm block: QKV, output, MLP and full attention over T tokens, 4 T^2 d) and
``mlp_stack_flops`` (a DLRM's MLPs).
"""

from __future__ import annotations


def attention_proj_params(d: int, heads: int, kv_heads: int) -> int:
    head_dim = d // heads
    return d * (heads + 2 * kv_heads) * head_dim + d * d


def mlp_params(d: int, d_ff: int) -> int:
    return 2 * d * d_ff


def moe_mlp_params(d: int, n_experts: int, top_k: int, d_ff_expert: int) -> int:
    """Active matmul parameters of one MoE MLP per token: the router and the top-k experts."""
    return d * n_experts + top_k * mlp_params(d, d_ff_expert)


def moe_layer_params(d: int, n_experts: int, top_k: int, d_ff_expert: int, n_shared_experts: int = 0) -> int:
    """Active matmul parameters of one MoE MLP per token with shared experts: the router, the top-k
    routed experts and the always-on shared experts (each d_ff_expert wide)."""
    return moe_mlp_params(d, n_experts, top_k, d_ff_expert) + mlp_params(d, n_shared_experts * d_ff_expert)


def causal_pairs(seq_len: int, window: int | None = None) -> int:
    """Query-key pairs causal attention computes over ``seq_len`` tokens: T(T+1)/2, or with a
    sliding window of ``window`` (a query sees itself and window - 1 keys back) w(w+1)/2 + (T-w)w."""
    if window is None or window >= seq_len:
        return seq_len * (seq_len + 1) // 2
    return window * (window + 1) // 2 + (seq_len - window) * window


def causal_attention_flops(n_layers: int, d: int, seq_len: int, window: int | None = None) -> int:
    """Forward attention FLOPs of one sequence: QK^T and PV, 2 FLOPs per multiply-add each, over
    the pairs the mask keeps (d = heads x head dim)."""
    return 4 * n_layers * d * causal_pairs(seq_len, window)


def full_attention_flops_per_token(n_layers: int, d: int, seq_len: int) -> int:
    """Non-causal attention (every query sees every key), e.g. a vision transformer."""
    return 4 * n_layers * d * seq_len


def training_multiple(forward_flops: int, training: bool) -> int:
    return 3 * forward_flops if training else forward_flops


def linear_flops(rows: int, d_in: int, d_out: int) -> int:
    """A matmul of ``rows`` vectors through a d_in x d_out weight: 2 FLOPs per multiply-add."""
    return 2 * rows * d_in * d_out


def encoder_layer_flops(tokens: int, d: int, d_ff: int) -> int:
    """One non-causal transformer layer over ``tokens``: the QKV, output and MLP matmuls, and full
    attention (every query scores every key: QK^T and PV, 2 T^2 d multiply-adds)."""
    projections = linear_flops(tokens, d, 3 * d) + linear_flops(tokens, d, d) + 2 * linear_flops(tokens, d, d_ff)
    return projections + full_attention_flops_per_token(1, d, tokens) * tokens


def mlp_stack_flops(widths: list[int]) -> int:
    """An MLP of layers widths[0] -> widths[1] -> ... for one sample."""
    return sum(linear_flops(1, a, b) for a, b in zip(widths[:-1], widths[1:]))
