"""Attention backends behind one call, ``backend(q, k, v, mask) -> out`` (b200lab/attention/base.py).

``sdpa`` family: PyTorch's scaled_dot_product_attention (sdpa.py); ``math``: the explicit
reference (base.py); ``flex``, ``flex_sliding``, ``flex_document``: FlexAttention (flex.py);
``te``: Transformer Engine's DotProductAttention (te.py). docs/attention.md compares them.
"""

from b200lab.attention.base import (CAUSAL, AttentionBackend, AttentionConfig, AttentionUnsupported, AttnMask,
                                    MathAttention, expand_kv, reference_attention)
from b200lab.attention.flex import FlexAttention, FlexConfig
from b200lab.attention.sdpa import SdpaAttention, SdpaConfig
from b200lab.attention.te import TEAttention

__all__ = ["CAUSAL", "AttentionBackend", "AttentionConfig", "AttentionUnsupported", "AttnMask", "MathAttention", "expand_kv", "reference_attention",
           "FlexAttention", "FlexConfig", "SdpaAttention", "SdpaConfig", "TEAttention"]
