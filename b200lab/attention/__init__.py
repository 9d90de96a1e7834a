"""Attention backends behind one call, ``backend(q, k, v, mask) -> out`` (base.py's contract).

``sdpa`` family: PyTorch's scaled_dot_product_attention (sdpa.py); ``math``: the explicit
reference (base.py); ``flex``, ``flex_sliding``, ``flex_document``: FlexAttention (flex.py);
``te``: Transformer Engine's DotProductAttention (te.py). config/ holds each option's config
class (fields, checks, what its kernel can do). docs/attention.md compares them.
"""
