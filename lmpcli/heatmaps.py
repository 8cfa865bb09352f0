"""Heat-map figures in the layout of the occlusion/guided-backprop poster's Fig. 2 (OpenCV).

One row per image: input | coarse (occlusion) heat map over the input | fine (guided
backprop) map | detected keypoints.
"""

from __future__ import annotations

from collections.abc import Sequence

from .outputs import draw_keypoints, put_text


def _as_map(m, name: str):
    """A 2-D float32 numpy array from a numpy array or (CPU/GPU) tensor."""
    import numpy as np

    if hasattr(m, "detach"):
        m = m.detach().float().cpu().numpy()
    m = np.asarray(m, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"{name} map must be 2-D (H, W), got shape {m.shape}")
    return np.nan_to_num(m, nan=0.0)


def colourise(heat, size: tuple[int, int], colormap: int | None = None):
    """(h, w) map in [0, 1] -> (H, W, 3) BGR uint8 colour image of ``size = (W, H)``
    (values clipped to [0, 1], resized bilinearly, OpenCV JET colour map by default)."""
    import cv2
    import numpy as np

    heat = _as_map(heat, "heat")
    heat = cv2.resize(np.clip(heat, 0, 1), size, interpolation=cv2.INTER_LINEAR)
    return cv2.applyColorMap((heat * 255).round().astype(np.uint8), cv2.COLORMAP_JET if colormap is None else colormap)


def denormalise(image, mean: Sequence[float], std: Sequence[float]):
    """(3, H, W) normalised RGB tensor/array -> (H, W, 3) BGR uint8 image for OpenCV."""
    import numpy as np

    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {image.shape}")
    rgb = image * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    return np.ascontiguousarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)[..., ::-1])


def draw_heatmap_panel(image_bgr, coarse, fine, xy, label: str | None = None, scores=None,
                       alpha: float = 0.5, gap: int = 4, titles: bool = True, fine_percentile: float = 99.5):
    """Fig. 2 of the poster for one image: four panels side by side.

    Panels: (1) the input, (2) the coarse occlusion heat map blended over it (``alpha``),
    (3) the fine guided-backprop map alone, (4) the keypoints drawn with
    :func:`lmpcli.outputs.draw_keypoints` (numbered, rank colours, ``label`` top-left).

    Args:
        image_bgr: (H, W, 3) uint8 BGR image (any size, e.g. the original photo).
        coarse, fine: (h, w) maps in [0, 1] (numpy arrays or tensors, e.g. one image's (S, S)
            maps of occlusion-gbp's :attr:`lmpcli.methods.base.KeypointOutput.heatmaps`); resized to
            (H, W), so they must cover the same field of view as ``image_bgr``.
        xy: (k, 2) keypoints (x, y) in pixels of ``image_bgr``; NaN rows are skipped.
        label: optional caption (e.g. predicted class).
        scores: optional (k,) confidences, passed to ``draw_keypoints``.
        alpha: weight of the heat map in panel 2.
        gap: white pixels between panels.
        titles: write a small title on panels 1-3.
        fine_percentile: the fine map is displayed divided by this percentile of its values
            (clipped at 1), since guided-backprop maps are sparse and would look black when
            scaled by their maximum; 100 = scale by the maximum.

    Returns:
        (H, 4 W + 3 gap, 3) uint8 BGR image.

    Raises:
        ValueError: ``image_bgr`` not (H, W, 3) uint8, maps not 2-D, alpha outside [0, 1],
            ``fine_percentile`` outside (0, 100].
    """
    import cv2
    import numpy as np

    image_bgr = np.asarray(image_bgr)
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0 < fine_percentile <= 100:
        raise ValueError(f"fine_percentile must be in (0, 100], got {fine_percentile}")
    h, w = image_bgr.shape[:2]
    coarse_rgb = colourise(coarse, (w, h))
    overlay = cv2.addWeighted(image_bgr, 1 - alpha, coarse_rgb, alpha, 0)
    fine = _as_map(fine, "fine")
    top = float(np.percentile(fine, fine_percentile)) if fine.size else 0.0
    fine_rgb = colourise(fine / top if top > 0 else fine, (w, h))
    if hasattr(xy, "detach"):
        xy = xy.detach().float().cpu().numpy()
    if scores is not None and hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    points = draw_keypoints(image_bgr, xy, scores, label)
    panels = [image_bgr.copy(), overlay, fine_rgb, points]
    if titles:
        scale = max(0.35, min(h, w) / 700)
        for panel, text in zip(panels[:3], ("input", "occlusion", "guided backprop")):
            org = (6, h - 8)
            put_text(panel, text, org, scale, (255, 255, 255), (0, 0, 0))
    sep = np.full((h, gap, 3), 255, np.uint8)
    row = []
    for i, panel in enumerate(panels):
        if i:
            row.append(sep)
        row.append(panel)
    return np.concatenate(row, axis=1)
