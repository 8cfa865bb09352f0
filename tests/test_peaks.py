"""Peak detection (lmpcli.peaks): max-pool NMS against a reference written from its definition,
hand-made maps, Förstner sub-pixel refinement on corners and blobs, keypoint detection."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from lmpcli.peaks import check_peak_settings, detect_keypoints, forstner_refine, nms_peaks


# ------------------------------------------------------------------ NMS

def test_nms_peaks_hand_made_map():
    m = torch.zeros(1, 10, 12)
    m[0, 3, 2] = 1.0   # peak
    m[0, 3, 4] = 0.9   # within radius 2 of the first: suppressed
    m[0, 7, 8] = 0.8   # peak
    m[0, 0, 11] = 0.5  # peak (corner of the map)
    values, xy, valid = nms_peaks(m, radius=2, max_peaks=3)
    assert valid.tolist() == [[True, True, True]]
    assert values[0].tolist() == pytest.approx([1.0, 0.8, 0.5])
    assert xy[0].tolist() == [[2.0, 3.0], [8.0, 7.0], [11.0, 0.0]]
    # radius 1: the 0.9 pixel is its own peak
    values, xy, _ = nms_peaks(m, radius=1, max_peaks=2)
    assert xy[0].tolist() == [[2.0, 3.0], [4.0, 3.0]]


def test_nms_peaks_ties_keep_fraction_and_padding():
    m = torch.full((2, 6, 6), -math.inf)
    m[0, 2, 2] = m[0, 2, 3] = 1.0  # a two-pixel plateau gives one peak
    m[0, 5, 0], m[0, 0, 5] = 0.5, 0.25
    m[1, 1, 1] = 2.0
    values, xy, valid = nms_peaks(m, radius=1, max_peaks=4, keep_fraction=0.4)
    # image 0: 3 peaks -> ceil(1.2) = 2 kept; image 1: 1 peak
    assert valid.tolist() == [[True, True, False, False], [True, False, False, False]]
    assert xy[0, 0].tolist() == [2.0, 2.0] and xy[0, 1].tolist() == [0.0, 5.0]
    assert torch.isnan(xy[~valid]).all() and (values[~valid] == -math.inf).all()
    # NaN pixels never peak; max_peaks None -> most peaks of any image
    m2 = torch.tensor([[[math.nan, 0.0, 1.0]]])
    values, xy, valid = nms_peaks(m2, radius=0)
    assert valid.tolist() == [[True, True]] and xy[0, 0].tolist() == [2.0, 0.0]
    with pytest.raises(ValueError):
        nms_peaks(m, radius=-1)
    with pytest.raises(ValueError):
        nms_peaks(m, radius=1, keep_fraction=0.0)


# ------------------------------------------------------------------ Förstner

def _checkerboard_corner(cx: float, cy: float, n: int = 32, ss: int = 8, sigma: float = 1.0) -> torch.Tensor:
    """(1, n, n) checkerboard corner at (cx, cy) (pixel i spans [i - 0.5, i + 0.5]), area-sampled, blurred."""
    t = (torch.arange(n * ss) + 0.5) / ss - 0.5
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    img = (torch.sign(xx - cx) * torch.sign(yy - cy)).view(n, ss, n, ss).mean((1, 3))
    r = math.ceil(3 * sigma)
    return gaussian_blur(img[None, None], [2 * r + 1] * 2, [sigma] * 2)[0]


@pytest.mark.parametrize("cx,cy", [(15.3, 16.7), (15.5, 15.5), (16.1, 15.9), (15.45, 16.2)])
def test_forstner_recovers_subpixel_corner(cx, cy):
    m = _checkerboard_corner(cx, cy)
    start = torch.tensor([[[round(cx), round(cy)], [math.nan, math.nan]]], dtype=torch.float32)
    out = forstner_refine(m, start, window=5)
    assert (out[0, 0] - torch.tensor([cx, cy])).abs().max() < 0.1
    assert torch.isnan(out[0, 1]).all()


def test_forstner_centre_model_on_blob_and_flat_map():
    t = torch.arange(32.0)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    cx, cy = 15.3, 16.7
    blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18.0)[None]
    out = forstner_refine(blob, torch.tensor([[[15.0, 17.0]]]), window=5, model="centre")
    assert (out[0, 0] - torch.tensor([cx, cy])).abs().max() < 0.05
    flat = torch.ones(1, 8, 8)  # singular A: unchanged
    assert forstner_refine(flat, torch.tensor([[[3.0, 4.0]]])).tolist() == [[[3.0, 4.0]]]
    with pytest.raises(ValueError):
        forstner_refine(flat, torch.tensor([[[3.0, 4.0]]]), window=4)


def _reference_peaks(m: torch.Tensor, radius: int) -> list[tuple[float, int, int]]:
    """NMS from its definition, one pixel at a time: pixel p of a (H, W) map is a peak when it
    is finite or +inf (not NaN / -inf) and every other pixel q of the (2 radius + 1) square
    around it (clipped to the map) is lower, or equal and later in row-major order (the first
    of a plateau wins). Returns (value, x, y) sorted by value, highest first."""
    h, w = m.shape
    peaks = []
    for y, x in itertools.product(range(h), range(w)):
        v = float(m[y, x])
        if math.isnan(v) or v == -math.inf:
            continue
        is_peak = True
        for qy, qx in itertools.product(range(max(0, y - radius), min(h, y + radius + 1)),
                                        range(max(0, x - radius), min(w, x + radius + 1))):
            q = float(m[qy, qx])
            if (qy, qx) != (y, x) and not math.isnan(q) and (q > v or (q == v and qy * w + qx < y * w + x)):
                is_peak = False
                break
        if is_peak:
            peaks.append((v, x, y))
    return sorted(peaks, key=lambda p: -p[0])


@pytest.mark.parametrize("radius,keep_fraction", [(0, 1.0), (1, 1.0), (2, 0.4), (3, 0.7), (5, 1.0), (8, 0.4)])
def test_nms_peaks_matches_the_reference_from_its_definition(radius, keep_fraction):
    gen = torch.Generator().manual_seed(radius)
    maps = torch.randint(0, 6, (4, 7, 9), generator=gen).float()  # few levels: plateaus and ties
    maps[0, 2, 3] = math.nan
    maps[1, :, :4] = -math.inf
    maps[2] = torch.rand(7, 9, generator=gen)  # no ties at all
    maps[3] = 1.0  # one plateau over the whole map
    values, xy, valid = nms_peaks(maps, radius, keep_fraction=keep_fraction)
    for i in range(len(maps)):
        ref = _reference_peaks(maps[i], radius)
        kept = math.ceil(len(ref) * keep_fraction)
        assert int(valid[i].sum()) == kept
        assert valid[i, :kept].all() and not valid[i, kept:].any()
        got = [(float(v), int(px), int(py)) for v, (px, py) in zip(values[i, :kept], xy[i, :kept].tolist())]
        assert [v for v, _, _ in got] == [v for v, _, _ in ref[:kept]]  # same values, best first
        assert set(got) <= set(ref)  # every returned point is a peak of the definition
        if keep_fraction == 1.0 or len({v for v, _, _ in ref}) == len(ref):
            assert set(got) == set(ref[:kept])  # and all of them (ties at the cut make the choice free)
    if radius > 0:  # a plateau over the whole map: one peak, its first pixel
        assert int(valid[3].sum()) == 1 and xy[3, 0].tolist() == [0.0, 0.0]


def test_nms_peaks_minus_infinity_is_never_a_peak():
    m = torch.full((1, 5, 5), -math.inf)  # (was: -inf read as the lowest float, its corner a peak)
    m[0, 4, 4] = 1.0
    values, xy, valid = nms_peaks(m, radius=1)
    assert valid.tolist() == [[True]] and xy[0, 0].tolist() == [4.0, 4.0] and values.tolist() == [[1.0]]


def test_peak_settings_are_refused_once_for_everyone():
    check_peak_settings()  # the defaults are valid
    for bad in ({"nms_radius": -1}, {"keep_fraction": 0.0}, {"keep_fraction": 1.5}, {"window": 4},
                {"window": 1}, {"forstner_model": "edge"}):
        with pytest.raises(ValueError):
            check_peak_settings(**bad)
    with pytest.raises(ValueError, match="Förstner window"):
        detect_keypoints(torch.zeros(1, 8, 8), k=2, window=4)
