"""Kp, NMI and ARI rows for ``lmp evaluate``: keypoints of the fit (train) images, one row per method.

The metrics themselves are in :mod:`lmpcli.landmarks`; this module runs the keypoint methods on
the images the regressors are fit on and turns both splits into table rows.
"""

from __future__ import annotations

import torch
from torch.utils.data import Subset, default_collate

from .data import CUBDataset, spread_subset
from .inference import iterate, make_loader
from .landmarks import MEAN_LANDMARK, normalise_to_box, part_discovery_metrics
from .progress import NullProgress, Progress

#: Train images ``lmp evaluate`` runs the methods on to fit the Kp regressors (``--fit-images``):
#: None = all of the split's train images. Chosen by quality-log section 32's rule, run in section
#: 35: 300 spread images read the parts' Kp 0.40 high, outside the rule's 0.3.
DEFAULT_FIT_IMAGES = None

#: Columns the rows add to the evaluation table (percent; Kp lower is better).
PART_COLUMNS = ("Kp", "NMI", "ARI")


def collate_labelled(items: list[dict]) -> dict:
    """Batch items of :class:`lmpcli.data.CUBDataset` / :class:`lmpcli.named_landmarks.CocoKeypointDataset`:
    ``image``, ``size``, ``orig_keypoints``, ``visible``, ``box`` stacked."""
    keys = ("image", "size", "orig_keypoints", "visible", "box")
    return default_collate([{key: torch.as_tensor(it[key]) for key in keys} for it in items])


def fit_subset(dataset: CUBDataset, n: int | None) -> CUBDataset | Subset:
    """``n`` images spread evenly over ``dataset`` (every class), or all of it for None / n >= len."""
    if n is None or n >= len(dataset):
        return dataset
    return Subset(dataset, spread_subset(len(dataset), n))


def collect_predictions(dataset, methods, device: torch.device, *, batch_size: int = 8, workers: int | None = None,
                        progress: Progress | None = None, label: str = "fit") -> dict:
    """Run keypoint methods over a CUB-style dataset and keep every image's keypoints and labels.

    Args:
        dataset: items with ``image``, ``size`` (W, H), ``orig_keypoints`` (P, 2), ``visible``
            (P,) and ``box`` (4,) (:class:`lmpcli.data.CUBDataset`).
        methods: keypoint methods (:class:`lmpcli.methods.KeypointMethod`).

    Returns:
        ``{"xy": {method name: (N, k, 2) float32 (x, y) original-image pixels, NaN = absent},
        "keypoints": (N, P, 2), "visible": (N, P) bool, "box": (N, 4) (x, y, w, h),
        "size": (N, 2)}``.
    """
    progress = progress or NullProgress()
    out: dict = {"xy": {m.name: [] for m in methods}, "keypoints": [], "visible": [], "box": [], "size": []}
    progress.start(f"{label} {', '.join(m.name for m in methods)}", len(dataset))
    try:
        for batch, results in iterate(make_loader(dataset, batch_size, workers, collate_labelled, device), methods, device):
            for name, res in results.items():
                out["xy"][name].append(res["xy"])
            for key, src in (("keypoints", "orig_keypoints"), ("visible", "visible"), ("box", "box"), ("size", "size")):
                out[key].append(batch[src])
            progress.advance(len(batch["size"]))
    finally:
        progress.finish()
    return {"xy": {n: torch.cat(v) for n, v in out["xy"].items()},
            **{key: torch.cat(out[key]) for key in ("keypoints", "visible", "box", "size")}}


def part_metric_rows(fit: dict, test: dict, names: list[str]) -> dict[str, dict]:
    """Kp, NMI and ARI of every method, and the Kp of the mean-landmark baseline.

    Each method's output order is its keypoint identity (for LMPNet, the prominence rank; for a
    part model, the part). Kp follows Huang & Li's protocol with box-normalised coordinates; NMI
    and ARI assign each visible test landmark to its nearest keypoint in pixels
    (:mod:`lmpcli.landmarks`).

    Args:
        fit, test: dicts of :func:`collect_predictions` (``test`` may carry only the keys it
            documents, e.g. gathered by ``lmp evaluate``'s own loop).
        names: methods to score (keys of ``xy``).

    Returns:
        ``{row name: {"Kp": .., "NMI": .., "ARI": ..}}`` for ``names`` and :data:`MEAN_LANDMARK`
        (NMI / ARI NaN there: it has no keypoints).

    Landmarks visible on no fit image are left out of both splits.

    Raises:
        ValueError: no visible test landmark.
    """
    seen = fit["visible"].any(0)  # landmarks visible on no fit image cannot be regressed: left out

    def split(d: dict, xy) -> tuple:
        return (normalise_to_box(xy, d["box"]), normalise_to_box(d["keypoints"][:, seen], d["box"]),
                d["visible"][:, seen].numpy())

    rows = {}
    for name in names:
        rows[name] = part_discovery_metrics(split(fit, fit["xy"][name]), split(test, test["xy"][name]),
                                            (test["xy"][name], test["keypoints"][:, seen], test["visible"][:, seen]))
    no_keypoints = (split(d, d["keypoints"][:, :0]) for d in (fit, test))
    rows[MEAN_LANDMARK] = part_discovery_metrics(*no_keypoints)
    return rows
