"""Feature-map sparsity over a data split: mean feature-map entropy (Guo & Farrell, Sec. 4.1, Fig. 6).

The means themselves are :class:`lmpcli.meters.EntropyMeter`'s (shared with ``lmp evaluate
--entropy``); this module runs one network of a checkpoint over a split or image files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .filters import iter_network_features, resolve_image_paths
from .meters import EntropyMeter
from .model import LMPNetPair
from .progress import NullProgress, Progress


@torch.inference_mode()
def mean_feature_map_entropy(model: LMPNetPair, loader, network: str = "main",
                             device: torch.device | str | None = None, top_m: int | None = None,
                             progress: Progress | None = None) -> dict:
    """Average feature-map entropy of one network over every image of ``loader`` (Fig. 6).

    The same :class:`lmpcli.meters.EntropyMeter` as ``lmp evaluate --entropy``.

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
        :meth:`lmpcli.meters.EntropyMeter.compute` (``all_filters``, ``active_filters``,
        ``top<m>_filters`` with ``top_m``, ``uniform_map``, ``dead_fraction``; nats) and
        ``{"top_m": m (clipped to C) or None, "images": N, "filters": C, "map_size": (h, w),
        "network": network, "errors": [(path, reason)] of unreadable images (dict batches from
        :func:`lmpcli.data.collate_skip_errors`)}``.

    Raises:
        ValueError: unknown network / no replica; no image in ``loader``.
    """
    progress = progress or NullProgress()
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    errors: list[tuple[str, str]] = []
    meter = EntropyMeter(top_m)
    for _, features in iter_network_features(model, loader, network, dev, errors, progress,
                                             f"feature-map entropy ({network})"):
        meter.update(features)
    if meter.images == 0:
        raise ValueError("no image to compute feature-map entropy on")
    return {**meter.compute(), "top_m": min(meter.top_m, meter.filters) if meter.top_m else None,
            "images": meter.images, "filters": meter.filters, "map_size": meter.map_size, "network": network,
            "errors": errors}


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
    m = cfg.keypoints.num_filters if top_m is None else top_m  # the checkpoint's filter selection size
    return mean_feature_map_entropy(model, loader, network, dev, top_m=m, progress=progress)


__all__ = ["mean_feature_map_entropy", "split_entropy"]
