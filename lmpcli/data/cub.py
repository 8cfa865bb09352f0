"""CUB-200-2011 in its official layout (full dataset or a subset such as cub50)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..choices import SPLITS
from .io import InputError, load_rgb

#: CUB part ids (1-based, ``parts/parts.txt``) grouped for part recall reports.
PART_GROUPS = {
    "head": (2, 5, 6, 7, 10, 11, 15),  # beak, crown, forehead, eyes, nape, throat
    "body": (1, 3, 4),  # back, belly, breast
    "wings": (9, 13),
    "tail": (14,),
    "legs": (8, 12),
}


def _read(root: Path, name: str, columns: list[str]) -> pd.DataFrame:
    path = root / name
    if not path.is_file():
        raise InputError(f"{root} is not a CUB-200-2011 folder: missing {name}")
    return pd.read_csv(path, sep=r"\s+", header=None, names=columns, engine="python")


class CUBDataset(Dataset):
    """CUB-200-2011 images with class labels, boxes and the 15 part locations.

    Works on the full dataset and on subsets (e.g. ``cub50``): labels are remapped to
    ``0..K-1`` over the classes present, in class-id order.

    Args:
        root: folder holding ``images.txt``, ``images/``, ``parts/part_locs.txt`` ...
        split: ``"train"``, ``"test"`` or ``"all"`` (official ``train_test_split.txt``).
        transform: a v2 transform called as ``transform(image, keypoints)``.
        classes: restrict to these official class ids (1-based), e.g. for held-out checks.
        crop_to_box: serve each image cropped to its ground-truth box (``bounding_boxes.txt``,
            widened to whole pixels and clipped to the image): ``orig_keypoints``, ``size``
            and ``box`` are then in pixels of the crop, so PCK radii come from the crop's sides.

    Each item is a dict: ``image`` (transformed), ``label`` int, ``keypoints``
    (15, 2) float32 tv_tensors.KeyPoints (x, y) transformed with the image,
    ``visible`` (15,) bool, ``orig_keypoints`` (15, 2) in original pixels,
    ``size`` (W, H) of the original image, ``box`` (4,) ground-truth box ``(x, y, w, h)`` in the
    same pixels, ``path`` str, ``index`` int.

    Raises:
        InputError: missing annotation files or an unknown split.
    """

    def __init__(self, root: str | Path, split: str = "test", transform=None,
                 classes: list[int] | None = None, crop_to_box: bool = False) -> None:
        self.root = Path(root)
        self.crop_to_box = crop_to_box
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; use train, test or all")
        images = _read(self.root, "images.txt", ["image_id", "file"])
        labels = _read(self.root, "image_class_labels.txt", ["image_id", "class_id"])
        splits = _read(self.root, "train_test_split.txt", ["image_id", "is_train"])
        boxes = _read(self.root, "bounding_boxes.txt", ["image_id", "bx", "by", "bw", "bh"])
        df = images.merge(labels, on="image_id").merge(splits, on="image_id").merge(boxes, on="image_id")
        all_classes = sorted(df["class_id"].unique())
        if classes is not None:
            df = df[df["class_id"].isin(classes)]
            all_classes = sorted(c for c in all_classes if c in set(classes))
        names = _read(self.root, "classes.txt", ["class_id", "name"]).set_index("class_id")["name"]
        self.class_ids = [int(c) for c in all_classes]
        self.class_names = [str(names.get(c, c)).split(".", 1)[-1] for c in self.class_ids]
        remap = {c: i for i, c in enumerate(self.class_ids)}
        if split != "all":
            df = df[df["is_train"] == (1 if split == "train" else 0)]
        self.table = df.sort_values("image_id").reset_index(drop=True)
        self.labels = torch.tensor([remap[c] for c in self.table["class_id"]], dtype=torch.long)
        parts = _read(self.root, "parts/part_locs.txt", ["image_id", "part_id", "x", "y", "visible"])
        parts = parts[parts["image_id"].isin(self.table["image_id"])]
        parts = parts.sort_values(["image_id", "part_id"])
        n_parts = int(parts["part_id"].max()) if len(parts) else 15
        pos = {iid: i for i, iid in enumerate(self.table["image_id"])}
        kp = torch.zeros(len(self.table), n_parts, 2)
        vis = torch.zeros(len(self.table), n_parts, dtype=torch.bool)
        rows = torch.tensor([pos[i] for i in parts["image_id"]], dtype=torch.long)
        cols = torch.tensor(parts["part_id"].to_numpy() - 1, dtype=torch.long)
        kp[rows, cols] = torch.tensor(parts[["x", "y"]].to_numpy(), dtype=torch.float32)
        vis[rows, cols] = torch.tensor(parts["visible"].to_numpy() > 0)
        self.keypoints, self.visible = kp, vis
        pnames = self.root / "parts" / "parts.txt"
        self.part_names = (
            [line.split(" ", 1)[1].strip() for line in pnames.read_text().splitlines() if line.strip()]
            if pnames.is_file() else [f"part{i + 1}" for i in range(n_parts)]
        )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.table)

    def path(self, index: int) -> Path:
        return self.root / "images" / self.table["file"].iloc[index]

    def __getitem__(self, index: int) -> dict:
        image = load_rgb(self.path(index))
        box = torch.tensor(self.table.loc[index, ["bx", "by", "bw", "bh"]].to_numpy(dtype="float32"))
        orig = self.keypoints[index]
        if self.crop_to_box:
            w, h = image.size
            left, top = int(box[0].clamp(0, w - 1)), int(box[1].clamp(0, h - 1))
            right = max(left + 1, min(w, math.ceil(box[0] + box[2])))
            bottom = max(top + 1, min(h, math.ceil(box[1] + box[3])))
            image = image.crop((left, top, right, bottom))
            orig = orig - torch.tensor([left, top], dtype=torch.float32)
            box = torch.tensor([0.0, 0.0, right - left, bottom - top])
        size = image.size  # (W, H)
        kp = tv_tensors.KeyPoints(orig, canvas_size=(size[1], size[0]))
        if self.transform is not None:
            image, kp = self.transform(image, kp)
        return {
            "image": image,
            "label": int(self.labels[index]),
            "keypoints": kp,
            "visible": self.visible[index],
            "orig_keypoints": orig,
            "size": torch.tensor(size, dtype=torch.float32),
            "box": box,
            "path": str(self.path(index)),
            "index": index,
        }
