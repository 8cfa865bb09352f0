"""Datasets, image IO and keypoint-aware transforms."""

from .cub import PART_GROUPS, CUBDataset
from .folder import ClassFolderDataset, ImagePathDataset, collate_skip_errors
from .io import IMAGE_EXTENSIONS, InputError, expand_inputs, load_rgb, spread_subset
from .transforms import eval_transform, train_transform

__all__ = [
    "CUBDataset", "PART_GROUPS", "ClassFolderDataset", "ImagePathDataset", "collate_skip_errors",
    "IMAGE_EXTENSIONS", "InputError", "expand_inputs", "load_rgb", "spread_subset", "eval_transform", "train_transform",
]
