"""Batched inference shared by predict and evaluate: decode in workers, run methods, rescale."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .backends import apply_backend, resolve_backend
from .checkpoint import CheckpointError, load_model
from .device import autocast, prepare_model
from .methods.base import KeypointMethod
from .settings import KeypointSettings, check_settings


def checkpoint_paths(weights: str | Path | Sequence[str | Path] | None) -> list:
    """``weights`` as a list of checkpoint paths; ``[None]`` (the shipped weights) for None or an empty list."""
    if weights is None or isinstance(weights, (str, Path)):
        return [weights]
    return list(weights) or [None]


def load_for_inference(weights: str | Path | Sequence[str | Path] | None, device: torch.device,
                       settings: KeypointSettings | None = None, backend: str = "torch") -> tuple[list, dict]:
    """Load one checkpoint, or several for an ensemble, ready for inference on ``device``.

    Args:
        weights: a checkpoint path, several (the first leads: its config, class names and
            feature maps drive the baselines; the rest are ensemble members, docs/quality-log.md
            section 27), or None / an empty sequence for the shipped weights.
        settings: the run's keypoint settings (:class:`~lmpcli.settings.KeypointSettings`); only
            its ``output_stride`` and ``image_size`` are used here (None: as trained): every pair
            is set to run at them (:meth:`lmpcli.model.LMPNetPair.set_output_stride` /
            ``set_image_size``); the methods resolve the rest (:meth:`lmpcli.model.LMPNetPair.resolve`).
        backend: ``torch``, ``onnxruntime`` or ``auto`` (:func:`lmpcli.backends.apply_backend`:
            ONNX Runtime on the CPU, torch on CUDA), installed after the test-time settings.

    Returns:
        (pairs in eval mode on ``device``, the first checkpoint's dict without its state dict).

    Raises:
        CheckpointError: a missing or foreign checkpoint, or members trained on other classes.
        ValueError, BackboneError: an unsupported ``output_stride``, ``image_size`` or ``backend``.
    """
    resolve_backend(backend, device)  # fail on a bad name before loading anything
    settings = settings if settings is not None else KeypointSettings()
    check_settings(settings)
    paths = checkpoint_paths(weights)
    pairs, first = [], None
    for path in paths:
        model, ckpt = load_model(path, "cpu")
        if first is not None and ckpt["class_names"] != first["class_names"]:
            raise CheckpointError(f"{path} was trained on other classes than {paths[0]}; an ensemble needs the same classes")
        model = prepare_model(model, device)
        model.set_output_stride(settings.output_stride)
        model.set_image_size(settings.image_size)
        apply_backend(model, backend, device)
        pairs.append(model)
        first = first or ckpt
    return pairs, first


def default_workers() -> int:
    """Image-decoding processes by default: the CPU cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def make_loader(dataset, batch_size: int, workers: int | None, collate_fn, device: torch.device) -> DataLoader:
    """DataLoader that decodes images in ``workers`` processes (None: :func:`default_workers`),
    overlapping with compute; at most two batches per worker are decoded ahead, so memory does
    not grow with the number of images."""
    workers = default_workers() if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=device.type == "cuda",
                      prefetch_factor=2 if workers > 0 else None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()  # methods that need gradients (guided backprop) step out of it themselves
def run_methods(methods: Sequence[KeypointMethod], images: torch.Tensor, sizes: torch.Tensor,
                device: torch.device, cache: dict | None = None) -> dict[str, dict]:
    """Run every method on one batch and map keypoints to original-image pixels.

    Args:
        images: (B, 3, S, S) normalised network inputs (any device).
        sizes: (B, 2) original (W, H) in pixels.

    Returns:
        ``{name: {"xy": (B, k, 2) float32 CPU, original pixels (NaN = not found),
        "score": (B, k), "logits": (B, K) or None, "seconds": float, and "heatmaps": the
        method's :attr:`~lmpcli.methods.base.KeypointOutput.heatmaps` on the CPU (occlusion-gbp:
        (coarse, fine), (B, S, S) each) for methods that make them}}``. ``seconds`` includes
        the main network's forward for every method that uses it, even when shared.
    """
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    s = images.shape[-1], images.shape[-2]
    scale = sizes.to(torch.float32) / torch.tensor(s, dtype=torch.float32)  # (B, 2)
    cache = {} if cache is None else cache
    results: dict[str, dict] = {}
    for method in methods:
        shared = "main" in cache
        _sync(device)
        start = time.perf_counter()
        with autocast(device):
            out = method(images, cache)
        _sync(device)
        seconds = time.perf_counter() - start
        if shared and method.uses_main:
            seconds += cache.get("main_seconds", 0.0)
        results[method.name] = {
            "xy": out.xy.float().cpu() * scale[:, None, :],
            "score": out.score.float().cpu(),
            "logits": None if out.logits is None else out.logits.float().cpu(),
            "seconds": seconds,
        }
        if out.heatmaps is not None:
            results[method.name]["heatmaps"] = tuple(m.float().cpu() for m in out.heatmaps)
    return results


def iterate(loader: DataLoader, methods: Sequence[KeypointMethod], device: torch.device,
            with_cache: bool = False) -> Iterator[tuple]:
    """Yield (batch, results of :func:`run_methods`[, the batch's shared cache]) per batch of ``loader``."""
    for batch in loader:
        cache: dict = {}
        results = run_methods(methods, batch["image"], batch["size"], device, cache) if "image" in batch else {}
        yield (batch, results, cache) if with_cache else (batch, results)
