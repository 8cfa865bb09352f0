import math

import pytest
import torch

from lmpcli.metrics import feature_map_entropy, greedy_pck, nearest_part, part_recall

GT = torch.tensor([[[10.0, 10.0], [50.0, 50.0], [90.0, 10.0]]])  # 3 parts
VIS = torch.tensor([[True, True, False]])
SIZE = torch.tensor([[100.0, 200.0]])  # W, H -> radius 0.1 * 100 = 10 px


def test_greedy_pck_counts_any_visible_part_within_alpha():
    pred = torch.tensor([[[12.0, 14.0], [50.0, 61.0], [90.0, 10.0], [51.0, 49.0], [float("nan")] * 2]])
    ok = greedy_pck(pred, GT, VIS, SIZE, alpha=0.1)
    # 5 px away: hit; 11 px: miss; on an invisible part: miss; duplicate near part 2: hit; missing: miss
    assert ok[0].tolist() == [True, False, False, True, False]


def test_greedy_pck_radius_uses_shorter_side():
    pred = torch.tensor([[[10.0, 29.0]]])
    assert not greedy_pck(pred, GT, VIS, SIZE, 0.1)[0, 0]
    assert greedy_pck(pred, GT, VIS, torch.tensor([[200.0, 200.0]]), 0.1)[0, 0]


def test_part_recall_is_per_visible_part():
    pred = torch.tensor([[[12.0, 14.0], [11.0, 9.0]]])  # both on part 1
    hit = part_recall(pred, GT, VIS, SIZE)
    assert hit[0].tolist() == [True, False, False]
    assert hit.sum() / VIS.sum() == pytest.approx(0.5)


def test_nearest_part_names_the_hit_part():
    pred = torch.tensor([[[12.0, 14.0], [50.0, 61.0], [90.0, 10.0], [51.0, 49.0], [float("nan")] * 2]])
    # same cases as above: part 0; 11 px from part 1 (miss); invisible part 2 (miss); part 1; not found
    assert nearest_part(pred, GT, VIS, SIZE).tolist() == [[0, -1, -1, 1, -1]]
    # two visible parts within the radius: the nearer one is named, not the first
    gt = torch.tensor([[[0.0, 0.0], [12.0, 0.0]]])
    both = torch.tensor([[True, True]])
    assert nearest_part(torch.tensor([[[8.0, 0.0], [3.0, 0.0]]]), gt, both, SIZE).tolist() == [[1, 0]]


def test_nearest_part_agrees_with_greedy_pck():
    g = torch.Generator().manual_seed(0)
    pred, gt = torch.rand(20, 5, 2, generator=g) * 100, torch.rand(20, 15, 2, generator=g) * 100
    vis = torch.rand(20, 15, generator=g) > 0.3
    sizes = torch.full((20, 2), 120.0)
    assert torch.equal(nearest_part(pred, gt, vis, sizes) >= 0, greedy_pck(pred, gt, vis, sizes))


def test_entropy_uniform_and_one_hot():
    uniform = torch.ones(1, 1, 4, 6)
    one_hot = torch.zeros(1, 1, 4, 6)
    one_hot[0, 0, 2, 3] = 7.0
    assert feature_map_entropy(uniform).item() == pytest.approx(math.log(24), abs=1e-5)
    assert feature_map_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-5)
    two = torch.zeros(1, 1, 2, 2)
    two[0, 0, 0, :] = 1
    assert feature_map_entropy(two).item() == pytest.approx(math.log(2), abs=1e-5)
