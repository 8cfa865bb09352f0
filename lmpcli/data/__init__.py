"""Datasets, image IO and keypoint-aware transforms.

``lmpcli.data.io`` (image discovery and decoding) is torch-free and imported eagerly; the
datasets and transforms import torch and load on first use, so ``import lmpcli.data.io``
stays fast for argument checks (:mod:`lmpcli.validate`).
"""

from importlib import import_module

from .io import IMAGE_EXTENSIONS, InputError, expand_inputs, load_rgb, spread_subset

_LAZY = {"CUBDataset": ".cub", "PART_GROUPS": ".cub", "ClassFolderDataset": ".folder",
         "ImagePathDataset": ".folder", "collate_skip_errors": ".folder",
         "eval_transform": ".transforms", "train_transform": ".transforms"}

__all__ = [
    "CUBDataset", "PART_GROUPS", "ClassFolderDataset", "ImagePathDataset", "collate_skip_errors",
    "IMAGE_EXTENSIONS", "InputError", "expand_inputs", "load_rgb", "spread_subset", "eval_transform", "train_transform",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
