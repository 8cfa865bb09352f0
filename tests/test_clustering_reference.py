"""Algorithm 1 (learnable clustering, Guo & Farrell Sec. 3.4) against a per-image reference loop.

The reference below is written from the paper's pseudo-code, one image at a time, on the binarised
feature maps themselves (X: one (h, w) map per proposal, 1 at its peak, 0 elsewhere) in float64
Python, with the two documented readings of ``lmpcli/layers/clustering.py``: the similarity is
``1 / (1 + d)`` (finite on the predicted cell), and an erased map ``X[d < thr] <- 0`` takes no
further part (it leaves the softmax). It is checked against the batched
:func:`lmpcli.layers.learnable_clustering` on random proposal sets: many images of different
sizes in one batch (padding and invalid proposals mixed in), a non-square map (so x and y cannot
be swapped unnoticed), cell and sub-cell peaks, several k, thr and iteration counts, refine on
and off. The hand-made known answers (cluster order, stopping, invalid proposals, two images
one by one) are in tests/test_keypoint_layers.py; this file does not repeat them.
"""

from __future__ import annotations

import math

import pytest
import torch

from lmpcli.layers import Proposals, learnable_clustering

H, W = 7, 11  # a non-square feature map: rows, columns
TIE = 1e-5  # a vote margin or |d - thr| in (0, TIE) is a near-tie that float32 and float64 may break differently


class Ambiguous(Exception):
    """The reference met a near-tie; the image is left out of the comparison."""


def reference_algorithm1(points: list[tuple[float, float]], k: int, thr: float, iterations: int,
                         refine: bool) -> list[tuple[float, float, float] | None]:
    """Algorithm 1 on one image: ``points`` are the valid proposals' peaks (x, y) in cells.

    Returns one entry per keypoint rank: (x, y, support share) or None once no proposal is left.
    """
    # X: one binarised (H, W) map per proposal, 1 at its peak cell (Sec. 3.4)
    maps = []
    for x, y in points:
        m = [[0.0] * W for _ in range(H)]
        m[round(y)][round(x)] = 1.0
        maps.append(m)
    alive = list(range(len(points)))
    out: list[tuple[float, float, float] | None] = []

    def predict(col: dict[int, float]):
        # w <- softmax(W[:, i]) over the proposals still present; Y <- w^T X; peak of Y
        top = max(col[j] for j in alive)
        e = {j: math.exp(col[j] - top) for j in alive}
        z = sum(e.values())
        w = {j: e[j] / z for j in alive}
        y_map = [[sum(w[j] * maps[j][r][c] for j in alive) for c in range(W)] for r in range(H)]
        # the densest cell; an exact tie goes to the first cell in row-major order (as torch.argmax)
        cells = sorted(((y_map[r][c], -(r * W + c)) for r in range(H) for c in range(W)), reverse=True)
        margin = cells[0][0] - cells[1][0]
        uniform = len(set(col.values())) == 1  # equal weights: equal counts give bit-equal votes on both paths
        if margin < TIE and not (margin == 0 and uniform):
            raise Ambiguous
        flat = -cells[0][1]
        peak = (flat % W, flat // W)
        # d: distance between the max positions of each proposal map X[j] (its peak) and of Y
        d = {j: math.hypot(points[j][0] - peak[0], points[j][1] - peak[1]) for j in alive}
        return w, peak, d

    for _ in range(k):
        if not alive:
            out.append(None)
            continue
        col = {j: 1.0 for j in alive}  # W[:, i] <- 1
        for _ in range(iterations):
            w, _, d = predict(col)
            col = {j: w[j] + 1.0 / (1.0 + d[j]) for j in alive}  # W[:, i] <- w + 1/d
        w, peak, d = predict(col)
        if any(0 < abs(d[j] - thr) < TIE for j in alive):  # (integer offsets give exact distances)
            raise Ambiguous
        erased = [j for j in alive if d[j] < thr]  # X[d < thr] <- 0
        xy = peak
        if refine and erased:  # the extension: vote-weighted centroid of the erased proposals
            total = sum(w[j] for j in erased)
            xy = (sum(w[j] * points[j][0] for j in erased) / total, sum(w[j] * points[j][1] for j in erased) / total)
        out.append((float(xy[0]), float(xy[1]), len(erased) / len(points)))
        alive = [j for j in alive if j not in erased]
    return out


def random_proposals(seed: int, batch: int = 24, m: int = 40, subcell: bool = False) -> Proposals:
    """``batch`` images of up to ``m`` proposals each, clustered around a few random centres so
    that clusters, runners-up and erasing all matter; a random share of the slots is invalid."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.stack([torch.randint(0, W, (batch, 4), generator=g),
                           torch.randint(0, H, (batch, 4), generator=g)], -1).float()  # (B, 4, 2)
    pick = torch.randint(0, 4, (batch, m), generator=g)
    xy = centres.gather(1, pick[..., None].expand(-1, -1, 2)) + torch.randint(-2, 3, (batch, m, 2), generator=g)
    xy = torch.stack([xy[..., 0].clamp(0, W - 1), xy[..., 1].clamp(0, H - 1)], -1)
    if subcell:  # sub-cell peaks stay within their cell (the 3x3 centroid of select_filters)
        xy = xy + (torch.rand(batch, m, 2, generator=g) - 0.5) * 0.9
        xy = torch.stack([xy[..., 0].clamp(0, W - 1), xy[..., 1].clamp(0, H - 1)], -1)
    valid = torch.rand(batch, m, generator=g) < torch.rand(batch, 1, generator=g) * 0.9 + 0.1
    valid[0] = False  # an image without any valid proposal
    valid[1] = False
    valid[1, 5] = True  # an image with a single one
    strength = torch.rand(batch, m, generator=g)
    return Proposals(xy, strength, torch.arange(m).expand(batch, m), valid)


@pytest.mark.parametrize("subcell", [False, True], ids=["cells", "subcell"])
@pytest.mark.parametrize("k, thr, iterations, refine", [
    (1, 1.2, 3, False),
    (5, 1.2, 3, True),   # the shipped settings
    (5, 3.0, 3, False),  # the paper's radius
    (4, 2.0, 0, True),   # uniform votes
    (6, 1.5, 1, False),
    (3, 2.5, 5, True),
])
def test_batched_algorithm1_equals_the_per_image_reference(subcell, k, thr, iterations, refine):
    props = random_proposals(seed=k * 100 + iterations * 10 + int(subcell), subcell=subcell)
    out = learnable_clustering(props, (H, W), k=k, thr=thr, iterations=iterations, refine=refine)
    assert out.xy.shape == (props.xy.shape[0], k, 2)
    compared = found = 0
    for b in range(props.xy.shape[0]):
        points = [tuple(p) for p in props.xy[b][props.valid[b]].double().tolist()]
        try:
            ref = reference_algorithm1(points, k, thr, iterations, refine)
        except Ambiguous:
            continue
        compared += 1
        assert out.found[b].tolist() == [r is not None for r in ref], f"image {b}"
        for i, r in enumerate(ref):
            if r is None:
                assert out.score[b, i] == 0 and out.xy[b, i].tolist() == [0, 0]
                continue
            found += 1
            assert out.xy[b, i].tolist() == pytest.approx(r[:2], abs=1e-5), f"image {b}, keypoint {i + 1}"
            assert out.score[b, i].item() == pytest.approx(r[2], abs=1e-6), f"image {b}, keypoint {i + 1}"
    assert compared >= 18  # near-ties are rare: almost every image is compared
    assert found >= (compared - 1) * min(k, 2)  # every image but the empty one yields keypoints, most several


def test_reference_knows_the_paper_example():
    """The reference itself on a hand-checked case: 3 votes at (2, 1), 2 at (8, 5), 1 at (8, 3), thr 3."""
    pts = [(2, 1), (2, 1), (3, 1), (8, 5), (8, 5), (8, 3)]
    ref = reference_algorithm1(pts, k=3, thr=3.0, iterations=3, refine=False)
    assert ref == [(2.0, 1.0, 0.5), (8.0, 5.0, 0.5), None]
