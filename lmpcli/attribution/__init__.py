"""Attribution maps as small objects in captum's shape: built on a model, ``.attribute(images, target=...)``.

- :class:`Occlusion`: occlusion sensitivity (Zeiler & Fergus; Shan poster, *Coarse-scale
  keypoint detection*), a (B, H, W) map of probability drops.
- :class:`GuidedBackprop`: guided backpropagation (Springenberg et al.; Shan poster,
  *Fine-scale keypoint detection*), the (B, C, H, W) input gradient, with ReLU6 / Hardtanh and
  in-place activations handled (captum's ``GuidedBackprop`` handles neither);
  :func:`gbp_heatmap` reduces it to a (B, H, W) map.

The keypoint method that fuses the two is :class:`lmpcli.methods.occlusion_gbp.OcclusionGBPMethod`;
peak detection is in :mod:`lmpcli.peaks`.
"""

from __future__ import annotations

from .base import logits_of, normalise_max
from .guided_backprop import OBJECTIVES, GuidedBackprop, gbp_heatmap, guided_relu_hooks
from .occlusion import FILLS, Occlusion, occluder_starts

__all__ = ["FILLS", "OBJECTIVES", "GuidedBackprop", "Occlusion", "gbp_heatmap", "guided_relu_hooks", "logits_of",
           "normalise_max", "occluder_starts"]
