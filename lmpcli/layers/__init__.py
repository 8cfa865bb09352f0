"""LMPNet building blocks: pure tensor code that runs on any device."""

from .clustering import Clusters, LearnableClustering, learnable_clustering
from .maskout import attention_mask, mask_out
from .pooling import POOLING_MODES, GlobalPool2d, global_pool2d, leaky_max_pool2d, pooling_vector
from .selection import Proposals, concat_proposals, gate_proposals, select_filters

__all__ = [
    "POOLING_MODES", "GlobalPool2d", "global_pool2d", "leaky_max_pool2d", "pooling_vector",
    "Proposals", "select_filters", "concat_proposals", "gate_proposals",
    "Clusters", "LearnableClustering", "learnable_clustering",
    "attention_mask", "mask_out",
]
