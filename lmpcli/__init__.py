"""lmp: weakly-supervised semantic keypoint discovery (LMPNet, Guo & Farrell) from class labels only."""

__version__ = "0.1.0"
