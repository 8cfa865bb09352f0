"""Keypoint-aware transforms (torchvision transforms v2).

Images and :class:`torchvision.tv_tensors.KeyPoints` go through the same transform, so
ground-truth part locations stay aligned with the augmented image.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from ..settings import TRAIN_DEFAULTS


def eval_transform(image_size: int, mean, std) -> v2.Transform:
    """PIL image (+ KeyPoints) -> (3, S, S) float32 normalised tensor; a plain square resize."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


def train_transform(image_size: int, mean, std, crop_scale: float = TRAIN_DEFAULTS["crop_scale"],
                    jitter: float = TRAIN_DEFAULTS["jitter"]) -> v2.Transform:
    """Training augmentation: random resized crop, horizontal flip, colour jitter, resize to S x S.

    Args:
        crop_scale: smallest area fraction kept by the random resized crop (1 disables cropping).
        jitter: brightness/contrast/saturation jitter strength (0 disables it).
    """
    ops: list[v2.Transform] = [v2.ToImage()]
    if crop_scale < 1:
        ops.append(v2.RandomResizedCrop((image_size, image_size), scale=(crop_scale, 1.0), antialias=True))
    else:
        ops.append(v2.Resize((image_size, image_size), antialias=True))
    ops.append(v2.RandomHorizontalFlip())
    if jitter > 0:
        ops.append(v2.ColorJitter(jitter, jitter, jitter))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)
