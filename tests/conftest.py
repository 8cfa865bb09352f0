"""Shared fixtures: a tiny untrained checkpoint, a tiny CUB-layout folder, paths to real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmpcli.checkpoint import DEFAULT_WEIGHTS, save_checkpoint
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.settings import KeypointSettings

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CUB50 = REPO.parent / "shared" / "data" / "cub50"

needs_cub50 = pytest.mark.skipif(not (CUB50 / "images.txt").is_file(),
                                 reason=f"real CUB data not found at {CUB50} (only on the project's machines)")
needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"shipped weights missing: {DEFAULT_WEIGHTS}")


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _onnx_cache(request, tmp_path_factory):
    """ONNX graphs of the onnxruntime backend go to pytest's cache (kept between runs), not ~/.cache;
    to a temporary folder when the cache plugin is off (``-p no:cacheprovider``)."""
    mp = pytest.MonkeyPatch()
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("lmp-onnx") if cache is not None else tmp_path_factory.mktemp("lmp-onnx")
    mp.setenv("LMP_CACHE_DIR", str(folder))
    yield
    mp.undo()


@pytest.fixture
def one_thread():
    """One torch thread for the test: on a shared 2-core machine two threads per step ran ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained 64-px LMPNet pair (2x2 feature maps), 3 classes, saved like a real one."""
    torch.manual_seed(0)
    model = LMPNetPair(LMPNetConfig(image_size=64, num_classes=3, keypoints=KeypointSettings(thr=1.0)), pretrained=False)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, ["a", "b", "c"], {"note": "test"}, half=True)
    return path


def _bird(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = (200, 30, 30)
    return img


@pytest.fixture(scope="session")
def tiny_cub(tmp_path_factory) -> Path:
    """Official CUB-200-2011 layout with 6 images of classes 3 and 7 (one grayscale, one CMYK)."""
    root = tmp_path_factory.mktemp("cub")
    rng = np.random.default_rng(0)
    rows, labels, split, boxes, parts = [], [], [], [], []
    specs = [(3, 1), (3, 1), (3, 0), (7, 1), (7, 0), (7, 0)]
    for i, (cls, is_train) in enumerate(specs, start=1):
        folder = f"{cls:03d}.Bird_{cls}"
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        name = f"{folder}/img_{i}.jpg"
        w, h = 80 + 10 * i, 60 + 5 * i
        im = Image.fromarray(_bird(rng, w, h))
        if i == 2:
            im = im.convert("L")
        if i == 5:
            im = im.convert("CMYK")
        im.save(root / "images" / name, quality=90)
        rows.append(f"{i} {name}")
        labels.append(f"{i} {cls}")
        split.append(f"{i} {is_train}")
        boxes.append(f"{i} 5.0 5.0 {w - 10}.0 {h - 10}.0")
        for p in range(1, 16):
            vis = int(p % 3 != 0)
            parts.append(f"{i} {p} {float(p * 4 if vis else 0)} {float(p * 3 if vis else 0)} {vis}")
    (root / "images.txt").write_text("\n".join(rows) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{c} {c:03d}.Bird_{c}" for c in range(1, 11)) + "\n")
    (root / "parts").mkdir()
    (root / "parts" / "part_locs.txt").write_text("\n".join(parts) + "\n")
    names = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
             "nape", "right eye", "right leg", "right wing", "tail", "throat"]
    (root / "parts" / "parts.txt").write_text("\n".join(f"{i} {n}" for i, n in enumerate(names, 1)) + "\n")
    return root
