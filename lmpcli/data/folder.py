"""Datasets for user images: class-per-folder (training) and a flat list of paths (prediction)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from .io import IMAGE_EXTENSIONS, ImageTooLargeError, InputError, decode_image, load_rgb


class ClassFolderDataset(Dataset):
    """``root/<class name>/<image>`` images, labels ``0..K-1`` in sorted class-name order.

    Items are dicts with ``image`` (transformed), ``label``, ``size`` (W, H), ``path``, ``index``.

    Raises:
        InputError: root missing, or fewer than two class folders holding images.
    """

    def __init__(self, root: str | Path, transform=None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"no such folder: {root}")
        self.samples: list[tuple[str, int]] = []
        self.class_names: list[str] = []
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
            if files:
                self.samples += [(str(f), len(self.class_names)) for f in files]
                self.class_names.append(d.name)
        if len(self.class_names) < 2:
            raise InputError(f"{root} needs at least two class folders with images")
        self.transform = transform
        self.labels = torch.tensor([s[1] for s in self.samples])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        image = load_rgb(path)
        size = torch.tensor(image.size, dtype=torch.float32)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": label, "size": size, "path": path, "index": index}


class ImagePathDataset(Dataset):
    """Images from a list of paths; an unreadable file yields ``{"error": msg}`` instead of raising,
    so a batch loader can report and skip it.

    Items are dicts with ``image`` (transformed), ``size`` (W, H) float32 of the full-resolution
    image in the displayed frame (EXIF orientation applied), ``orientation`` (the EXIF tag
    applied, 1 = none), ``path``, ``index``. ``min_side`` (the network input side) lets large
    images be reduced while decoding (:func:`lmpcli.data.io.decode_image`); None decodes fully.
    """

    def __init__(self, paths: list[str], transform=None, min_side: int | None = None) -> None:
        self.paths, self.transform, self.min_side = list(paths), transform, min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            decoded = decode_image(path, self.min_side)
        except ImageTooLargeError as e:
            return {"error": f"too large: {e}", "path": path, "index": index}
        except (OSError, ValueError) as e:
            return {"error": f"{type(e).__name__}: {e}", "path": path, "index": index}
        image = decoded.image
        size = torch.tensor(decoded.size, dtype=torch.float32)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "size": size, "orientation": decoded.orientation, "path": path, "index": index}


def collate_skip_errors(items: list[dict]) -> dict:
    """Stack good items; collect ``errors`` as a list of (path, message)."""
    good = [it for it in items if "error" not in it]
    out: dict = {"errors": [(it["path"], it["error"]) for it in items if "error" in it]}
    if good:
        for key in good[0]:
            vals = [it[key] for it in good]
            out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else (
                torch.tensor(vals) if isinstance(vals[0], (int, float)) else vals)
    return out
