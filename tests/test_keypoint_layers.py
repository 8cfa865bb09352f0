import pytest
import torch

from lmpcli.layers import (Proposals, attention_mask, concat_proposals, gate_proposals, learnable_clustering, mask_out,
                           select_filters)


def proposals(points, valid=None):
    xy = torch.tensor(points, dtype=torch.float32)[None]
    v = torch.ones(xy.shape[:2], dtype=torch.bool) if valid is None else torch.tensor(valid)[None]
    return Proposals(xy, torch.ones(xy.shape[:2]), torch.arange(xy.shape[1])[None], v)


# three clusters on a 14x14 map: 5 votes near (2, 2), 3 near (10, 10), 1 at (6, 12)
CLUSTERS = [(2, 2), (2, 2), (2, 2), (3, 2), (2, 3), (10, 10), (10, 10), (11, 10), (6, 12)]


def test_algorithm1_finds_clusters_in_order_of_votes():
    out = learnable_clustering(proposals(CLUSTERS), (14, 14), k=3, thr=3)
    assert out.xy[0].tolist() == [[2, 2], [10, 10], [6, 12]]
    assert out.found[0].tolist() == [True, True, True]
    assert out.score[0].tolist() == pytest.approx([5 / 9, 3 / 9, 1 / 9])  # share of proposals per keypoint


def test_algorithm1_stops_when_every_proposal_is_erased():
    out = learnable_clustering(proposals(CLUSTERS), (14, 14), k=5, thr=3)
    assert out.found[0].tolist() == [True, True, True, False, False]
    assert out.score[0, 3:].tolist() == [0, 0]


def test_large_thr_erases_neighbouring_clusters():
    out = learnable_clustering(proposals(CLUSTERS), (14, 14), k=3, thr=13)
    assert out.found[0].tolist() == [True, False, False]


def test_reweighting_never_moves_the_winning_cell():
    # the property argued in lmpcli/layers/clustering.py, on 200 random images of 1-39
    # cell-centred proposals each (padding marked invalid), in one batch
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 14, (200, 39, 2), generator=g).float()
    valid = torch.arange(39) < torch.randint(1, 40, (200, 1), generator=g)
    props = Proposals(xy, torch.ones(200, 39), torch.arange(39).expand(200, 39), valid)
    uniform = learnable_clustering(props, (14, 14), k=5, thr=2, iterations=0)
    iterated = learnable_clustering(props, (14, 14), k=5, thr=2, iterations=5)
    assert uniform.found.sum() > 400  # most images yield several keypoints
    assert torch.equal(uniform.xy, iterated.xy) and torch.equal(uniform.found, iterated.found)
    # sub-cell peaks (the default): offsets within +-0.45 cells, the shipped radius 1.2
    sub = props._replace(xy=xy + (torch.rand(200, 39, 2, generator=g) - 0.5) * 0.9)
    uniform = learnable_clustering(sub, (14, 14), k=5, thr=1.2, iterations=0)
    iterated = learnable_clustering(sub, (14, 14), k=5, thr=1.2, iterations=5)
    assert uniform.found.sum() > 800
    assert torch.equal(uniform.xy, iterated.xy) and torch.equal(uniform.found, iterated.found)


def test_reweighting_pulls_the_centroid_keypoint_to_the_cluster_mode():
    # the mode cell (5, 4) holds 2 of the 5 erased proposals; the uniform centroid is
    # (5, 4.2), and re-weighting by proximity pulls it towards the mode row y = 4
    pts = [(4, 4), (5, 4), (5, 4), (6, 4), (5, 5)]
    uniform = learnable_clustering(proposals(pts), (10, 10), k=1, thr=2, iterations=0, refine=True)
    iterated = learnable_clustering(proposals(pts), (10, 10), k=1, thr=2, iterations=3, refine=True)
    assert uniform.xy[0, 0].tolist() == pytest.approx([5.0, 4.2])
    assert iterated.xy[0, 0, 0].item() == pytest.approx(5.0)
    assert 4.0 < iterated.xy[0, 0, 1].item() < 4.2 - 1e-3


def test_invalid_proposals_are_ignored():
    out = learnable_clustering(proposals([(1, 1), (8, 8), (8, 8)], [True, False, False]), (10, 10), k=2, thr=2)
    assert out.xy[0, 0].tolist() == [1, 1]
    assert out.found[0].tolist() == [True, False]


def test_batched_equals_one_by_one():
    a = proposals(CLUSTERS)
    b = proposals([(7, 7)] * 4 + [(0, 13)] * 5)
    both = Proposals(*(torch.cat(p) for p in zip(a, b)))
    out = learnable_clustering(both, (14, 14), k=3, thr=3)
    for i, single in enumerate((a, b)):
        one = learnable_clustering(single, (14, 14), k=3, thr=3)
        assert torch.equal(out.xy[i], one.xy[0]) and torch.equal(out.found[i], one.found[0])
    assert out.xy[1, 0].tolist() == [0, 13]


def test_clustering_rejects_bad_settings():
    with pytest.raises(ValueError):
        learnable_clustering(proposals(CLUSTERS), (14, 14), k=0)
    with pytest.raises(ValueError):
        learnable_clustering(proposals(CLUSTERS), (14, 14), thr=0)


def test_select_filters_keeps_strongest_filters_and_their_peaks():
    f = torch.zeros(1, 4, 3, 5)
    f[0, 0, 1, 2] = 0.5
    f[0, 1, 2, 4] = 3.0
    f[0, 2, 0, 0] = 2.0  # channel 3 never fires
    p = select_filters(f, 3)
    assert p.channel[0].tolist() == [1, 2, 0]
    assert p.xy[0].tolist() == [[4, 2], [0, 0], [2, 1]]
    assert p.strength[0].tolist() == [3.0, 2.0, 0.5]
    assert select_filters(f, 4).valid[0].tolist() == [True, True, True, False]
    assert concat_proposals(p, p).xy.shape == (1, 6, 2)


def test_attention_mask_zeroes_a_square_around_the_first_keypoint():
    m = attention_mask(torch.tensor([[8.0, 4.0]]), (16, 16), mask_size=0.25)  # 4 px square
    assert m.shape == (1, 1, 16, 16)
    zero = (m[0, 0] == 0).nonzero().tolist()
    assert {tuple(z) for z in zero} == {(y, x) for y in range(2, 6) for x in range(6, 10)}
    img = torch.ones(1, 3, 16, 16)
    assert mask_out(img, torch.tensor([[8.0, 4.0]]), 0.25).sum() == 3 * (256 - 16)


def test_subcell_peaks_and_centroid_keypoints():
    f = torch.zeros(1, 1, 5, 5)
    f[0, 0, 2, 2], f[0, 0, 2, 3] = 3.0, 1.0  # mass to the right of the peak
    p = select_filters(f, 1, subcell=True)
    assert p.xy[0, 0].tolist() == pytest.approx([2.25, 2.0])
    pts = proposals([(2, 2), (2, 2), (3, 2), (3, 2), (3, 2)])
    cell = learnable_clustering(pts, (6, 6), k=1, thr=2)
    centroid = learnable_clustering(pts, (6, 6), k=1, thr=2, refine=True)
    assert cell.xy[0, 0].tolist() == [3, 2]
    assert 2.5 < centroid.xy[0, 0, 0] < 3 and centroid.xy[0, 0, 1] == 2


def test_gate_drops_proposals_off_the_object():
    # 2 channels on a 4x4 map; the object (high channel-mean) fills the left half
    f = torch.zeros(1, 2, 4, 4)
    f[0, :, :, :2] = 1.0
    f[0, 1, 3, 3] = 0.5  # background cell: channel mean 0.25 = 0.25 of the peak
    p = Proposals(xy=torch.tensor([[[0.0, 0.0], [3.0, 3.0], [1.0, 2.0]]]), strength=torch.ones(1, 3),
                  channel=torch.zeros(1, 3, dtype=torch.long), valid=torch.tensor([[True, True, False]]))
    assert gate_proposals(p, f, 0.5).valid.tolist() == [[True, False, False]]  # an invalid one stays invalid
    assert gate_proposals(p, f, 0.2).valid.tolist() == [[True, True, False]]
    assert gate_proposals(p, f, 0.0) is p
    with pytest.raises(ValueError):
        gate_proposals(p, f, 1.5)


def test_subcell_centroid_matches_a_per_proposal_reference():
    """The gathered 3x3 centroid equals the definition computed proposal by proposal, borders included."""
    g = torch.Generator().manual_seed(3)
    f = torch.randn(3, 20, 5, 6, generator=g)
    p = select_filters(f, 12, subcell=True)
    cells = select_filters(f, 12).xy
    for b in range(3):
        for m in range(12):
            x, y = (int(v) for v in cells[b, m])
            c = int(p.channel[b, m])
            num, den = torch.zeros(2), 0.0
            for yy in range(max(y - 1, 0), min(y + 2, 5)):
                for xx in range(max(x - 1, 0), min(x + 2, 6)):
                    v = max(float(f[b, c, yy, xx]), 0.0)
                    num += v * torch.tensor([xx, yy], dtype=torch.float32)
                    den += v
            want = num / den if den > 0 else torch.tensor([x, y], dtype=torch.float32)
            torch.testing.assert_close(p.xy[b, m], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_window_centroid_matches_the_definition(radius):
    """The (2r + 1)-square centroid (part locations on the fine grid) equals the definition, computed
    point by point, borders included; radius 1 is the 3x3 centroid."""
    from lmpcli.layers.selection import _centroid3x3

    g = torch.Generator().manual_seed(radius)
    f = torch.randn(2, 4, 7, 9, generator=g)
    channel = torch.randint(0, 4, (2, 5), generator=g)
    xy = torch.stack([torch.randint(0, 9, (2, 5), generator=g), torch.randint(0, 7, (2, 5), generator=g)], -1).float()
    got = _centroid3x3(f, channel, xy, radius)
    for b in range(2):
        for m in range(5):
            x, y, c = int(xy[b, m, 0]), int(xy[b, m, 1]), int(channel[b, m])
            num, den = torch.zeros(2), 0.0
            for yy in range(max(y - radius, 0), min(y + radius + 1, 7)):
                for xx in range(max(x - radius, 0), min(x + radius + 1, 9)):
                    v = max(float(f[b, c, yy, xx]), 0.0)
                    num += v * torch.tensor([xx, yy], dtype=torch.float32)
                    den += v
            want = num / den if den > 0 else xy[b, m]
            torch.testing.assert_close(got[b, m], want, atol=1e-5, rtol=1e-5)
