"""Occlusion + guided-backprop keypoints (Shan, "Weakly supervised keypoint detection", poster).

Pipeline (poster sections in brackets), composed of the attribution objects of
:mod:`lmpcli.attribution` and the peak detection of :mod:`lmpcli.peaks`:

1. *Coarse scale* [Coarse-scale keypoint detection]: :class:`~lmpcli.attribution.Occlusion`,
   the mean drop ``d(x, b) = max(p_c(x) - p_c(h_g(x, b)), 0)`` of the predicted class' softmax
   probability under the ``size`` x ``size`` random-colour occluders covering each pixel.
2. *Fine scale* [Fine-scale keypoint detection]: :class:`~lmpcli.attribution.GuidedBackprop`
   from the predicted class' softmax probability to the input; the map is the max over
   colour channels of the absolute input gradient (:func:`~lmpcli.attribution.gbp_heatmap`).
3. *Fusion* [Fine-scale keypoint detection, last paragraph]: each map (normalised to [0, 1])
   goes through a sigmoid; the two are combined linearly; the value is the confidence score
   (:func:`fuse_heatmaps`).
4. *Post-processing* [Post-processing, Keypoint prediction]: max-pool non-maximum
   suppression, Förstner sub-pixel refinement, the top 40 % of peaks by confidence kept,
   then the ``k`` best are the keypoints (:func:`lmpcli.peaks.detect_keypoints`).

CPU cost: the coarse map needs ``ceil((S' - size) / stride + 1) ** 2`` forwards per image,
``S'`` the side the occlusion runs at (``input_size``, default the network input side
``S``): 16 per image with the default 160-px occluders every 96 px at 448 px (0.41-0.60
images/s on a 2-core CPU; quality log section 37), 36 with section 36's 128/64, 3,025 with the
poster's 16/8 (about 100 s per image there; section 36). Use a larger ``chunk_size`` on a GPU.

Coordinates: heat maps are (B, S, S) on the network input's pixel grid; map pixel index
``(col, row)`` has its centre at ``(col + 0.5, row + 0.5)`` input pixels, the convention of
:class:`lmpcli.methods.base.KeypointOutput`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur

from ..attribution import GuidedBackprop, Occlusion, gbp_heatmap, logits_of, normalise_max
from ..attribution.guided_backprop import check_objective
from ..attribution.occlusion import check_occlusion_settings
from ..backends.onnx import torch_network
from ..peaks import check_peak_settings, detect_keypoints
from ..settings import METHOD_DEFAULTS
from .base import KeypointOutput, main_forward


def _pair(value: float | tuple[float, float]) -> tuple[float, float]:
    """One value for both maps, or a (coarse, fine) pair, as a pair."""
    return (value, value) if isinstance(value, (int, float)) else tuple(value)


def check_fusion_settings(weights: tuple[float, float], slope: float | tuple[float, float]) -> None:
    """Refuse fusion settings :func:`fuse_heatmaps` cannot use (also called by the method's
    constructor, so a bad option fails before any network runs).

    Raises:
        ValueError: a negative weight, both weights zero, or a sigmoid slope <= 0.
    """
    wc, wf = (float(v) for v in weights)
    if wc < 0 or wf < 0 or wc + wf <= 0:
        raise ValueError(f"fusion weights must be >= 0 and not both 0, got {tuple(weights)}")
    if min(_pair(slope)) <= 0:
        raise ValueError(f"sigmoid slope must be > 0, got {slope}")


def _sigmoid01(maps: Tensor, slope: float, centre: float) -> Tensor:
    """Sigmoid ``1 / (1 + exp(-slope (m - centre)))`` rescaled so that 0 -> 0 and 1 -> 1."""
    lo = 1.0 / (1.0 + math.exp(slope * centre))
    hi = 1.0 / (1.0 + math.exp(-slope * (1.0 - centre)))
    return ((torch.sigmoid(slope * (maps - centre)) - lo) / (hi - lo)).clamp(0, 1)


def fuse_heatmaps(coarse: Tensor, fine: Tensor, weights: tuple[float, float] = (0.5, 0.5),
                  slope: float | tuple[float, float] = 10.0, centre: float | tuple[float, float] = 0.5) -> Tensor:
    """Confidence map [poster: Fine-scale keypoint detection, last paragraph].

    Each map in [0, 1] goes through a sigmoid ``σ(slope (m - centre))`` (rescaled so that
    0 -> 0 and 1 -> 1) into a keypoint likelihood; the two are combined linearly with
    ``weights`` and divided by their sum, so the result is a confidence in [0, 1].

    Args:
        coarse, fine: (B, H, W) float maps in [0, 1].
        weights: (coarse, fine) non-negative weights, not both zero.
        slope, centre: sigmoid parameters, one value for both maps or a (coarse, fine) pair.

    Returns:
        (B, H, W) float32 confidence map in [0, 1].

    Raises:
        ValueError: shape mismatch, negative or all-zero weights, slope <= 0.
    """
    if coarse.shape != fine.shape:
        raise ValueError(f"coarse and fine maps differ in shape: {tuple(coarse.shape)} vs {tuple(fine.shape)}")
    check_fusion_settings(weights, slope)
    wc, wf = (float(v) for v in weights)
    slopes, centres = _pair(slope), _pair(centre)
    return (wc * _sigmoid01(coarse.float(), slopes[0], centres[0])
            + wf * _sigmoid01(fine.float(), slopes[1], centres[1])) / (wc + wf)


_D = METHOD_DEFAULTS["occlusion-gbp"]  # the CLI-visible defaults (lmpcli.settings)


class OcclusionGBPMethod:
    """Occlusion-sensitivity + guided-backprop keypoints (Shan poster; see module docstring).

    Calling it on (B, 3, S, S) normalised images returns a
    :class:`~lmpcli.methods.base.KeypointOutput` with ``k`` keypoints ((x, y) input pixels),
    confidences in [0, 1], the main network's logits and ``heatmaps = (coarse, fine)``, each
    (B, S, S) float32 in [0, 1] on the network input's pixel grid.

    CPU cost: about ``B * ceil((S' - occluder_size) / occluder_stride + 1) ** 2`` forwards of
    the main network per batch for the coarse map (``S' = input_size or S``; 16 per image at
    448 px with the default 160/96, 3,025 with the poster's 16/8) plus one forward+backward for
    the fine map. ``input_size`` runs occlusion at a lower resolution (the map is upsampled to
    S x S); it costs PCK (quality log section 29).

    Args:
        model: :class:`~lmpcli.model.LMPNetPair` in eval mode (anything with ``.main(images)
            -> (logits, features)``; ``.config.mean/std`` used when present). The occlusion
            forwards use ``model.main`` as installed (torch or ONNX Runtime); guided backprop
            always the torch network behind it (gradients).
        k: keypoints per image.
        occluder_size, occluder_stride: occluder side and step, pixels of the occlusion input
            (default 160 and 96, quality log section 37; the poster's are 16 and 8).
        chunk_size: occluded copies per forward (memory/speed knob; larger on a GPU).
        input_size: side the occlusion runs at; None = the network input side S.
        fill: occluder filling, ``"noise"`` (random colours, poster), ``"colour"``, ``"mean"``.
        coarse_weight, fine_weight: linear fusion weights.
        sigmoid_slope, sigmoid_centre: sigmoid applied to each [0, 1] map before fusion.
        fine_sigma: Gaussian smoothing of the fine map, pixels (0 = off, as in the poster;
            torchvision's ``gaussian_blur``, kernel side ``2 ceil(3 sigma) + 1``, reflected border).
        gbp_objective: ``"prob"`` (poster), ``"logprob"`` or ``"logit"``; see
            :meth:`lmpcli.attribution.GuidedBackprop.attribute`.
        nms_radius: NMS radius, pixels of the network input.
        keep_fraction: fraction of peaks kept by confidence (poster: 0.4).
        forstner_window: Förstner window side, pixels (odd).
        forstner_model: ``"corner"`` (the poster's formula) or ``"centre"`` (unbiased on
            blob-like peaks); see :func:`lmpcli.peaks.forstner_refine`.
        seed: seed of the random occluder colours (same colours for every batch).
        mean, std: input normalisation; None = ``model.config``'s, else 0 / 1.

    Raises:
        ValueError: invalid option values (before any network runs).
    """

    name = "occlusion-gbp"
    uses_main = True

    def __init__(self, model, k: int | None = 5, occluder_size: int = _D["occluder_size"],
                 occluder_stride: int = _D["occluder_stride"], chunk_size: int = _D["chunk_size"],
                 input_size: int | None = _D["input_size"], fill: str = "noise", coarse_weight: float = _D["coarse_weight"],
                 fine_weight: float = _D["fine_weight"], sigmoid_slope: float = 10.0, sigmoid_centre: float = 0.5,
                 fine_sigma: float = 0.0, gbp_objective: str = "prob", nms_radius: int = _D["nms_radius"],
                 keep_fraction: float = _D["keep_fraction"], forstner_window: int = 5, forstner_model: str = "corner", seed: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        if k is None:  # the checkpoint's k, as for lmpnet
            k = getattr(getattr(model, "config", None), "k", 5)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if input_size is not None and input_size < 1:
            raise ValueError(f"input_size must be >= 1 or None, got {input_size}")
        check_occlusion_settings(occluder_size, occluder_stride, chunk_size, fill)
        check_objective(gbp_objective)
        check_fusion_settings((coarse_weight, fine_weight), sigmoid_slope)
        check_peak_settings(nms_radius, keep_fraction, forstner_window, forstner_model)
        self.model, self.k = model, int(k)
        self.occluder_size, self.occluder_stride, self.chunk_size = occluder_size, occluder_stride, chunk_size
        self.input_size, self.fill = input_size, fill
        self.weights = (float(coarse_weight), float(fine_weight))
        self.sigmoid_slope, self.sigmoid_centre, self.fine_sigma = sigmoid_slope, sigmoid_centre, fine_sigma
        self.gbp_objective, self.nms_radius, self.keep_fraction = gbp_objective, int(nms_radius), keep_fraction
        self.forstner_window, self.forstner_model, self.seed = forstner_window, forstner_model, seed
        config = getattr(model, "config", None)
        self.mean = tuple(mean) if mean is not None else tuple(getattr(config, "mean", (0.0, 0.0, 0.0)))
        self.std = tuple(std) if std is not None else tuple(getattr(config, "std", (1.0, 1.0, 1.0)))
        self.occlusion = Occlusion(lambda x: logits_of(self.model.main(x)), self.mean, self.std)

    def heatmaps_and_logits(self, images: Tensor, cache: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(coarse (B, S, S), fine (B, S, S), logits (B, K)) for (B, 3, S, S) images.

        Both maps are float32 in [0, 1] (each divided by its maximum) on the network input's
        pixel grid. The logits come from :func:`~lmpcli.methods.base.main_forward` (shared
        through ``cache``); the target class is their argmax.
        """
        logits, _ = main_forward(self.model, images, cache)
        target = logits.float().argmax(-1)
        s = images.shape[-2:]
        gen = torch.Generator(device=images.device)
        gen.manual_seed(self.seed)
        with torch.no_grad():
            if self.input_size is None or tuple(s) == (self.input_size, self.input_size):
                occ_in, base = images, logits.float().softmax(-1).gather(1, target[:, None])[:, 0]
            else:
                occ_in = F.interpolate(images.float(), size=(self.input_size, self.input_size), mode="bilinear",
                                       align_corners=False, antialias=True).to(images.dtype)
                base = None
            coarse = self.occlusion.attribute(occ_in, target, size=self.occluder_size, stride=self.occluder_stride,
                                              chunk_size=self.chunk_size, fill=self.fill, generator=gen,
                                              base_probs=base)
            if coarse.shape[-2:] != s:
                coarse = F.interpolate(coarse[:, None], size=tuple(s), mode="bilinear", align_corners=False)[:, 0]
            coarse = normalise_max(coarse.clamp_min(0))
        gbp = GuidedBackprop(torch_network(self.model.main))  # the torch network even under ONNX Runtime
        fine = gbp_heatmap(gbp.attribute(images, target, objective=self.gbp_objective))
        if self.fine_sigma > 0:
            r = max(1, math.ceil(3 * self.fine_sigma))
            fine = normalise_max(gaussian_blur(fine[:, None], [2 * r + 1] * 2, [float(self.fine_sigma)] * 2)[:, 0])
        return coarse, fine, logits

    def confidence(self, coarse: Tensor, fine: Tensor) -> Tensor:
        """(B, S, S) fused confidence map in [0, 1] (:func:`fuse_heatmaps` with this method's settings)."""
        return fuse_heatmaps(coarse, fine, self.weights, self.sigmoid_slope, self.sigmoid_centre)

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        """Keypoints for (B, 3, S, S) normalised images; see :class:`~lmpcli.methods.base.KeypointOutput`.

        ``heatmaps`` is ``(coarse, fine)``, (B, S, S) float32 each in [0, 1], for figures
        (:func:`lmpcli.heatmaps.draw_heatmap_panel`).
        """
        coarse, fine, logits = self.heatmaps_and_logits(images, cache)
        with torch.no_grad():
            xy, score = detect_keypoints(self.confidence(coarse, fine), self.k, self.nms_radius,
                                         self.keep_fraction, self.forstner_window, self.forstner_model)
        return KeypointOutput(xy, score, logits.float(), heatmaps=(coarse, fine))
