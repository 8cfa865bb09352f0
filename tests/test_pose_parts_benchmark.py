"""benchmarks/pose_parts_study.py (quality log section 41): the object frame's known answers, its
alpha = 0 maps are the shipped fit's, and the segment centroid of a part."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import mid_level_parts  # noqa: E402
import pose_parts_study as bench  # noqa: E402



def _blob(h: int = 8, w: int = 8) -> torch.Tensor:
    """A 4 x 2 foreground block at columns 2-5, rows 3-4, strongest at its right end (the head)."""
    e = torch.zeros(h, w)
    e[3:5, 2:6] = 1.0
    e[3:5, 5] = 3.0
    return e.flatten()[None]


def test_object_frame_centres_scales_and_turns_the_head_to_plus_x():
    e = _blob()
    pos, facing = bench.object_frame(e, (8, 8), tau=0.2, top=2)
    assert facing.tolist() == [1.0]
    # energy-weighted centroid: columns 2, 3, 4 weigh 1 and column 5 weighs 3 -> x = (2.5 + 3.5 + 4.5 + 3 * 5.5) / 6
    cx = (2.5 + 3.5 + 4.5 + 3 * 5.5) / 6
    sx = ((((torch.tensor([2.5, 3.5, 4.5]) - cx) ** 2).sum() + 3 * (5.5 - cx) ** 2) / 6).sqrt().clamp_min(1.0)
    cell = 3 * 8 + 5  # row 3, column 5: the head end
    torch.testing.assert_close(pos[0, cell, 0], (5.5 - cx) / sx)
    assert pos[0, cell, 0] > 0
    # rows 3 and 4 weigh alike: y centred between them; sy = 0.5 is clamped to one cell
    torch.testing.assert_close(pos[0, cell, 1], torch.tensor(-0.5))
    # the mirrored bird faces -x, and the head still lands at +x in its frame
    mirrored = e.reshape(8, 8).flip(1).flatten()[None]
    pos_m, facing_m = bench.object_frame(mirrored, (8, 8), tau=0.2, top=2)
    assert facing_m.tolist() == [-1.0]
    torch.testing.assert_close(pos_m[0, 3 * 8 + 2], pos[0, cell])


def _maps(n: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"features": torch.rand(n, 1280, 4, 4, generator=g).half(),
            "block10@28": torch.rand(n, 112, 8, 8, generator=g).half()}


def test_alpha_zero_maps_are_the_shipped_fits():
    d = _maps()
    centres = torch.nn.functional.normalize(torch.randn(5, 1280 + 112), dim=1)
    ours = bench.responses(d, centres, torch.zeros(5, 2), alpha=0.0, tau=0.2)
    ref = mid_level_parts.responses(d, bench.VARIANT, centres)
    torch.testing.assert_close(ours, ref)
    # a position penalty can only lower a part's map
    assert (bench.responses(d, centres, torch.ones(5, 2), alpha=0.5, tau=0.2) <= ours + 1e-6).all()


def test_component_centroid_keeps_the_piece_of_the_segment_that_holds_the_peak():
    r = torch.zeros(1, 2, 5, 7)
    r[0, 0, 1, 1], r[0, 0, 2, 2] = 4.0, 2.0  # part 0: a piece of two diagonal cells around its peak ...
    r[0, 0, 3, 5] = 3.0  # ... and a second piece, apart from the first
    r[0, 1, 4, 0] = 1.0  # part 1: one cell
    threshold, fallback = torch.tensor([0.5, 0.5]), torch.full((1, 2, 2), -1.0)
    from lmpcli.parts import segment_centroids

    got = segment_centroids(r * bench.component_masks(r, threshold), threshold, fallback)
    # part 0: (4 * (1, 1) + 2 * (2, 2)) / 6; the segment's centroid would also weigh (5, 3)
    torch.testing.assert_close(got, torch.tensor([[[8 / 6, 8 / 6], [0.0, 4.0]]]))
    seg = segment_centroids(r, threshold, fallback)
    torch.testing.assert_close(seg[0, 0], torch.tensor([(4 + 4 + 15) / 9, (4 + 4 + 9) / 9]))
