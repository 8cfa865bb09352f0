"""Feature-map sparsity over a data split: mean feature-map entropy (Guo & Farrell, Sec. 4.1, Fig. 6).

"we take the normalized final conv-layer feature maps and compute their average entropy:
sparser feature maps have smaller entropy". Every map is normalised to a distribution over
its h*w cells (:func:`lmpcli.metrics.feature_map_entropy`) and the entropy (nats) is
averaged over images and filters; optionally also over only the ``top_m`` filters per image
with the highest peak, i.e. the filters that filter selection (Sec. 3.2) keeps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from .filters import iter_network_features, resolve_image_paths
from .metrics import feature_map_entropy
from .model import LMPNetPair
from .progress import NullProgress, Progress


@torch.inference_mode()
def mean_feature_map_entropy(model: LMPNetPair, loader, network: str = "main",
                             device: torch.device | str | None = None, top_m: int | None = None,
                             progress: Progress | None = None) -> dict:
    """Average feature-map entropy of one network over every image of ``loader`` (Fig. 6).

    Args:
        model: the pair, eval mode.
        loader: batches with (B, 3, S, S) normalised images: dicts with ``image`` (batches
            holding only unreadable files are skipped), ``(images, labels)`` tuples or tensors.
        network: ``main`` or ``replica`` (fed the masked image, as in prediction).
        device: where to run (default: the model's device).
        top_m: also average over only the ``top_m`` filters with the highest peak per image
            (None or 0: skip; clipped to C).
        progress: reports images done.

    Returns:
        ``{"entropy": mean over images and all C filters (nats), "entropy_top": mean over
        the top-m filters per image or None, "entropy_active": mean over the maps that fire
        (peak > 0) or None, "top_m": m or None, "max_entropy": log(h*w)
        (a uniform map), "zero_fraction": fraction of maps that are all <= 0 (counted as
        uniform, see :func:`feature_map_entropy`), "images": N, "filters": C,
        "map_size": (h, w), "network": network, "errors": [(path, reason)] of unreadable
        images (dict batches from :func:`lmpcli.data.collate_skip_errors`)}``.

    Raises:
        ValueError: unknown network / no replica; no image in ``loader``.
    """
    progress = progress or NullProgress()
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    total_all = total_top = total_active = 0.0
    n_maps = n_top = n_zero = n_images = 0
    errors: list[tuple[str, str]] = []
    c = m = None
    map_size = (0, 0)
    for _, features in iter_network_features(model, loader, network, dev, errors, progress,
                                             f"feature-map entropy ({network})"):
        b, c, h, w = features.shape
        map_size = (h, w)
        entropy = feature_map_entropy(features)  # (B, C)
        peak = features.flatten(-2).amax(-1)  # (B, C)
        total_all += float(entropy.double().sum())
        n_maps += entropy.numel()
        n_zero += int((peak <= 0).sum())
        total_active += float(entropy[peak > 0].double().sum())
        if top_m:
            m = min(int(top_m), c)
            top = peak.topk(m, dim=-1).indices
            total_top += float(entropy.gather(-1, top).double().sum())
            n_top += b * m
        n_images += b
    if n_images == 0:
        raise ValueError("no image to compute feature-map entropy on")
    return {
        "entropy": total_all / n_maps,
        "entropy_top": total_top / n_top if n_top else None,
        "entropy_active": total_active / (n_maps - n_zero) if n_maps > n_zero else None,
        "top_m": m,
        "max_entropy": math.log(map_size[0] * map_size[1]),
        "zero_fraction": n_zero / n_maps,
        "images": n_images,
        "filters": c,
        "map_size": map_size,
        "network": network,
        "errors": errors,
    }


def split_entropy(
    inputs: str | os.PathLike | Sequence[str],
    *,
    weights: str | os.PathLike | None = None,
    split: str = "test",
    network: str = "main",
    top_m: int | None = None,
    limit: int | None = None,
    classes: Sequence[int] | None = None,
    batch_size: int = 8,
    device: str = "auto",
    workers: int = 2,
    progress: Progress | None = None,
) -> dict:
    """:func:`mean_feature_map_entropy` of a checkpoint on a CUB split or on image files.

    Args:
        inputs: CUB-200-2011-layout folder (``split`` used) or image files / folders / globs.
        weights: checkpoint (None = shipped weights).
        top_m: filters per image for ``entropy_top``; None = the checkpoint's ``num_filters``,
            0 = skip.
        limit: only the first ``limit`` images (same images as ``evaluate --limit``).
        classes: CUB only: these official class ids (1-based), as ``evaluate --classes``.

    Returns:
        the dict of :func:`mean_feature_map_entropy`.

    Raises:
        InputError, CheckpointError, ValueError: see :func:`lmpcli.filters.visualize_filters`.
    """
    from .checkpoint import load_model
    from .data import ImagePathDataset, collate_skip_errors, eval_transform
    from .device import prepare_model, resolve_device
    from .inference import make_loader

    paths = resolve_image_paths(inputs, split, limit, classes)
    dev = resolve_device(device)
    model, _ = load_model(weights, "cpu")
    model = prepare_model(model, dev)
    cfg = model.config
    dataset = ImagePathDataset(paths, eval_transform(cfg.image_size, cfg.mean, cfg.std), cfg.image_size)
    loader = make_loader(dataset, batch_size, workers, collate_skip_errors, dev)
    m = cfg.num_filters if top_m is None else top_m
    return mean_feature_map_entropy(model, loader, network, dev, top_m=m, progress=progress)


__all__ = ["mean_feature_map_entropy", "split_entropy"]
