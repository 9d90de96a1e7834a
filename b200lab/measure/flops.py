"""Model FLOPs per token: the one place they are counted (torchtitan's rule).

Notation: L layers, d model width, f MLP width, V vocabulary, T sequence length.

Matmul parameters N (embedding lookups do no arithmetic, so the embedding table is excluded;
the output head is included):

    dense:  N = L * (4 d^2 + 2 d f) + V d          # QKV + out projection, MLP up + down, head
    MoE:    N = L * (4 d^2 + d E + k * 2 d f_e) + V d
            (E experts, top-k routing, expert width f_e: only the k experts a token visits
             count, plus the router's d x E projection)

Attention scores and the weighted sum: for the query at position i (0-based), causal attention
touches i + 1 keys: (i + 1) * d multiply-adds for Q K^T and as many for A V, i.e. 4 d (i + 1)
FLOPs. Averaged over i = 0 .. T-1 that is 2 d (T + 1) per token per layer, half the 4 d T a
non-causal count would give.

    forward   = 2 N + 2 L d (T + 1)
    training  = 3 x forward = 6 N + 6 L d (T + 1)     (backward costs twice the forward)

Norms, activations, softmax and the optimizer are not counted (model FLOPs, as in PaLM's MFU).
"""

from __future__ import annotations


def matmul_params(m) -> int:
    L, d, V = int(m.n_layers), int(m.d_model), int(m.vocab_size)
    experts = int(getattr(m, "n_experts", 0) or 0)
    if experts:
        k, fe = int(m.top_k), int(getattr(m, "d_ff_expert", None) or m.d_ff)
        per_layer = 4 * d * d + d * experts + k * 2 * d * fe
    else:
        per_layer = 4 * d * d + 2 * d * int(m.d_ff)
    return L * per_layer + V * d


def attention_flops_per_token(m, seq_len: int) -> int:
    return 2 * int(m.n_layers) * int(m.d_model) * (int(seq_len) + 1)


def flops_per_token(m, seq_len: int, training: bool) -> int:
    forward = 2 * matmul_params(m) + attention_flops_per_token(m, seq_len)
    return 3 * forward if training else forward
