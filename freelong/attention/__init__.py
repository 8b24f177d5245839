"""Attention, split by job: the interface every method reaches every backbone through, and the maths behind it.

- :mod:`~freelong.attention.context`: what a processor is handed (contexts, the position protocols);
- :mod:`~freelong.attention.processor`: the base processor, the layer, layer discovery;
- :mod:`~freelong.attention.windows`: window geometry over frames (masks, bounds, sliding windows);
- :mod:`~freelong.attention.kernels`: global, local and sparse-key attention;
- :mod:`~freelong.attention.lse`: several windows from one pass over the keys (log-sum-exp merge);
- :mod:`~freelong.attention.maps`: the explicit fp32 matrices each kernel applies, for analyses.

The names most code needs are re-exported here (``from freelong.attention import local_window_mask``).
"""

from .context import CallContext, FramePositions, PositionBias, TemporalAttentionContext
from .kernels import attention, global_attention, local_attention, sparse_global_attention
from .maps import attention_probs_of, global_attention_probs, local_attention_probs
from .processor import TemporalAttention, TemporalAttnProcessor, name_temporal_layers, temporal_attention_layers
from .windows import WINDOW_LAYOUTS, check_window_stride, local_window_bounds, local_window_mask, sliding_windows

__all__ = [
    "WINDOW_LAYOUTS",
    "CallContext",
    "FramePositions",
    "PositionBias",
    "TemporalAttention",
    "TemporalAttentionContext",
    "TemporalAttnProcessor",
    "attention",
    "attention_probs_of",
    "check_window_stride",
    "global_attention",
    "global_attention_probs",
    "local_attention",
    "local_attention_probs",
    "local_window_bounds",
    "local_window_mask",
    "name_temporal_layers",
    "sliding_windows",
    "sparse_global_attention",
    "temporal_attention_layers",
]
