"""benchmarks/named_landmarks.py: its Kp per frame is the library's Kp (quality log section 35)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import named_landmarks as bench  # noqa: E402

from lmpcli.landmarks import keypoint_regression_error, normalise_to_box  # noqa: E402
from lmpcli.named_landmarks import landmark_regression_error  # noqa: E402


def _split(n: int, seed: int) -> dict:
    """Synthetic cached split: 3 keypoints that follow 4 landmarks with noise, one keypoint often absent."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([[500.0, 400.0]]).repeat(n, 1)
    box = torch.cat([torch.rand(n, 2, generator=g) * 100, 150 + torch.rand(n, 2, generator=g) * 150], 1)
    landmarks = box[:, None, :2] + torch.rand(n, 4, 2, generator=g) * box[:, None, 2:]
    xy = landmarks[:, :3] + 5 * torch.randn(n, 3, 2, generator=g)
    xy[torch.rand(n, generator=g) < 0.2, 2] = float("nan")
    visible = torch.rand(n, 4, generator=g) < 0.8
    return {"indices": torch.arange(n), "class_id": torch.ones(n, dtype=torch.long), "xy": {"parts": xy},
            "keypoints": landmarks, "visible": visible, "box": box, "size": size}


def test_box_frame_is_the_protocol_kp_and_image_frame_is_fit_landmarks_kp():
    fit, test = _split(60, 0), _split(30, 1)

    def protocol(d):
        return (normalise_to_box(d["xy"]["parts"], d["box"]), normalise_to_box(d["keypoints"], d["box"]),
                d["visible"].numpy())

    assert bench.landmark_kp(fit, test, "parts", "box") == pytest.approx(
        keypoint_regression_error(protocol(fit), protocol(test)), rel=1e-9)
    assert bench.landmark_kp(fit, test, "parts", "image") == pytest.approx(
        landmark_regression_error(fit, test, "parts", "image"), rel=1e-9)


def test_landmarks_unseen_in_the_fit_are_left_out_and_ridge_shrinks_towards_the_mean():
    fit, test = _split(8, 2), _split(30, 3)
    fit["visible"][:, 3] = False  # labelled on none of the fit images: left out, as lmp fit-landmarks does
    kept = {key: (val[:, :3] if key in ("keypoints", "visible") else val) for key, val in test.items()}
    assert bench.landmark_kp(fit, test, "parts", "box") == pytest.approx(
        bench.landmark_kp(dict(fit, keypoints=fit["keypoints"][:, :3], visible=fit["visible"][:, :3]), kept,
                          "parts", "box"))
    # an overwhelming penalty leaves coefficients near 0: every prediction is the mean landmark of the fit
    old = bench.RIDGE_ALPHAS
    try:
        bench.RIDGE_ALPHAS = np.array([1e12])
        ridge = bench.landmark_kp(fit, test, "parts", "box", ridge=True)
    finally:
        bench.RIDGE_ALPHAS = old
    mean_only = dict(fit, xy={"parts": fit["xy"]["parts"][:, :0]})
    assert ridge == pytest.approx(bench.landmark_kp(mean_only, dict(test, xy={"parts": test["xy"]["parts"][:, :0]}),
                                                    "parts", "box"), rel=1e-6)


def test_take_keeps_every_key_in_step():
    d = _split(10, 4)
    sub = bench.take(d, [7, 2])
    assert sub["indices"].tolist() == [7, 2]
    assert torch.equal(sub["xy"]["parts"].nan_to_num(-1), d["xy"]["parts"][[7, 2]].nan_to_num(-1))
    assert torch.equal(sub["box"], d["box"][[7, 2]])
    assert bench.class_range("3-5") == {3, 4, 5}
