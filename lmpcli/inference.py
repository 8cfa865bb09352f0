"""Batched inference shared by predict and evaluate: decode in workers, run methods, rescale."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from .device import autocast
from .methods.base import KeypointMethod


def make_loader(dataset, batch_size: int, workers: int, collate_fn, device: torch.device) -> DataLoader:
    """DataLoader that decodes images in ``workers`` processes, overlapping with compute."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=device.type == "cuda",
                      prefetch_factor=2 if workers > 0 else None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def run_methods(methods: Sequence[KeypointMethod], images: torch.Tensor, sizes: torch.Tensor,
                device: torch.device) -> dict[str, dict]:
    """Run every method on one batch and map keypoints to original-image pixels.

    Args:
        images: (B, 3, S, S) normalised network inputs (any device).
        sizes: (B, 2) original (W, H) in pixels.

    Returns:
        ``{name: {"xy": (B, k, 2) float32 CPU, original pixels (NaN = not found),
        "score": (B, k), "logits": (B, K) or None, "seconds": float}}``. ``seconds`` includes
        the main network's forward for every method that uses it, even when shared.
    """
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    s = images.shape[-1], images.shape[-2]
    scale = sizes.to(torch.float32) / torch.tensor(s, dtype=torch.float32)  # (B, 2)
    cache: dict = {}
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
    return results


def iterate(loader: DataLoader, methods: Sequence[KeypointMethod], device: torch.device) -> Iterator[tuple[dict, dict]]:
    """Yield (batch, results of :func:`run_methods`) for every non-empty batch of ``loader``."""
    for batch in loader:
        if "image" not in batch:
            yield batch, {}
            continue
        yield batch, run_methods(methods, batch["image"], batch["size"], device)
