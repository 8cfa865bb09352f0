"""``lmpcli.predict.predict_images`` end to end on known answers.

- the centre baseline returns exactly (W / 2, H / 2) in original-image pixels on non-square images;
- an ensemble of two different checkpoints moves the output away from either checkpoint alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmpcli.checkpoint import save_checkpoint
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.settings import KeypointSettings
from lmpcli.predict import predict_images

KW = dict(workers=0, batch_size=2, device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three non-square noise images of odd sizes (W x H): 101 x 37, 37 x 101, 64 x 48."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(101, 37), (37, 101), (64, 48)]):
        path = d / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_centre_baseline_returns_the_image_centre_in_original_pixels(images, tiny_checkpoint):
    out = list(predict_images(images, weights=tiny_checkpoint, method="centre", settings=KeypointSettings(k=1), **KW))
    assert [o.image for o in out] == images
    for o in out:
        assert (o.width, o.height) == Image.open(o.image).size
        assert o.xy.shape == (1, 2)
        assert o.xy[0].tolist() == [o.width / 2, o.height / 2]  # exact: (S / 2) * (W / S) in binary fractions
        assert o.class_name is None  # class-agnostic: no network ran


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """Two untrained 96-px pairs (3x3 feature maps) that differ only in their seed."""
    d = tmp_path_factory.mktemp("seeds")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = d / f"seed{seed}.pt"
        save_checkpoint(path, LMPNetPair(LMPNetConfig(image_size=96, num_classes=3, keypoints=KeypointSettings(thr=1.0)), pretrained=False),
                        ["a", "b", "c"], half=True)
        paths.append(path)
    return paths


def test_an_ensemble_of_two_checkpoints_moves_the_output(images, two_checkpoints):
    a, b = two_checkpoints
    runs = {name: list(predict_images(images, weights=w, settings=KeypointSettings(k=3), **KW)) for name, w in
            (("a", a), ("b", b), ("a+b", [a, b]))}
    for alone in ("a", "b"):
        assert any(e.class_prob != s.class_prob for e, s in zip(runs["a+b"], runs[alone])), alone
        assert any(not np.array_equal(e.xy, s.xy, equal_nan=True) for e, s in zip(runs["a+b"], runs[alone])), alone
    # the two members on their own disagree too, so the fused output is a real fusion
    assert any(not np.array_equal(x.xy, y.xy, equal_nan=True) for x, y in zip(runs["a"], runs["b"]))
