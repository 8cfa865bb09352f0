"""Known answers for the meters (lmpcli.meters): a hand-computed tiny case, and the entropy meter
against a per-map reference written from the definition (Fig. 6)."""

from __future__ import annotations

import math

import pytest
import torch

from lmpcli.distributed import DistContext
from lmpcli.meters import EntropyMeter, KeypointMeter, gather_meters

NAN = float("nan")
GROUPS = {"head": (1,), "body": (2, 3)}  # 1-based part ids, as PART_GROUPS

# Two 100 x 100 images (radius 0.1 * 100 = 10 px), three parts, two keypoints each.
# Image 0: parts (10,10) (50,50) and an invisible (90,90); keypoint 1 is 2 px from part 1 (head),
#          keypoint 2 was not found (NaN): a miss.
# Image 1: parts (20,20) (60,60) (30,80); keypoint 1 is 5 px from part 2, keypoint 2 1.4 px from
#          part 3 (both body).
XY = torch.tensor([[[12.0, 10.0], [NAN, NAN]], [[60.0, 65.0], [31.0, 79.0]]])
PARTS = torch.tensor([[[10.0, 10.0], [50.0, 50.0], [90.0, 90.0]], [[20.0, 20.0], [60.0, 60.0], [30.0, 80.0]]])
VISIBLE = torch.tensor([[True, True, False], [True, True, True]])
SIZES = torch.tensor([[100, 100], [100, 100]])
LOGITS = torch.tensor([[2.0, 1.0], [3.0, 0.0]])  # predicts class 0 for both
LABELS = torch.tensor([0, 1])  # one right, one wrong

EXPECTED_ROW = {
    "KP1": 100.0, "KP2": 50.0, "avg": 75.0,
    "recall": 60.0,  # 3 of the 5 visible parts have a keypoint within 10 px
    "recall_head": 50.0,  # part 1: hit on image 0, not on image 1
    "recall_body": 200 / 3,  # parts 2, 3: 3 visible, 2 hit (image 1)
    "acc": 50.0, "images_per_s": 4.0,  # 2 images in 0.5 s
}
EXPECTED_LANDING = [{"rank": 1, "head": 50.0, "body": 50.0, "miss": 0.0},
                    {"rank": 2, "head": 0.0, "body": 50.0, "miss": 50.0}]


def _meter(rows=slice(None), seconds=0.5) -> KeypointMeter:
    meter = KeypointMeter(0.1, GROUPS)
    meter.update(XY[rows], PARTS[rows], VISIBLE[rows], SIZES[rows], logits=LOGITS[rows], labels=LABELS[rows],
                 seconds=seconds)
    return meter


def test_keypoint_meter_known_answer():
    meter = _meter()
    assert meter.images == 2
    assert meter.compute() == pytest.approx(EXPECTED_ROW)
    assert meter.landing() == pytest.approx(EXPECTED_LANDING)
    torch.testing.assert_close(meter.xy(), XY, equal_nan=True)


def test_keypoint_meter_without_network_has_no_accuracy_or_speed():
    meter = KeypointMeter(0.1, GROUPS)
    meter.update(XY, PARTS, VISIBLE, SIZES)
    row = meter.compute()
    assert math.isnan(row["acc"]) and math.isnan(row["images_per_s"]) and row["avg"] == 75.0
    with pytest.raises(ValueError, match="no images"):
        KeypointMeter().compute()


def test_keypoint_meter_radius_follows_alpha():
    meter = KeypointMeter(0.01, GROUPS)  # radius 1 px: even the keypoint 1.4 px from its part misses
    meter.update(XY, PARTS, VISIBLE, SIZES)
    assert meter.compute()["avg"] == 0.0


def test_keypoint_meter_states_join_in_order_one_image_each():
    """Two ranks of one image each, joined, give the one-process row, landing and keypoints."""
    first, second = _meter(slice(0, 1), 0.25), _meter(slice(1, 2), 0.25)
    joined = KeypointMeter.from_states([first.state_dict(), second.state_dict()])
    assert joined.compute() == pytest.approx(EXPECTED_ROW)
    assert joined.landing() == pytest.approx(EXPECTED_LANDING)
    torch.testing.assert_close(joined.xy(), XY, equal_nan=True)


def test_gather_meters_one_process_checks_the_blocks():
    meters = [_meter(), EntropyMeter(2)]
    meters[1].update(torch.rand(2, 4, 3, 3))
    out = gather_meters(meters, 2, (0, 2), 2, DistContext())
    assert out[0].compute() == pytest.approx(EXPECTED_ROW)
    assert out[1].compute() == pytest.approx(meters[1].compute())
    with pytest.raises(RuntimeError, match="scored 1 images"):
        gather_meters(meters, 1, (0, 2), 2, DistContext())
    with pytest.raises(RuntimeError, match="2 of 3 images"):
        gather_meters(meters, 2, (0, 2), 3, DistContext())


def _reference_entropy(features: torch.Tensor, top_m: int) -> dict:
    """Fig. 6 from its definition, map by map: p = max(x, 0) / sum, H = -sum p log p (uniform if all 0)."""
    b, c, h, w = features.shape
    all_h, active_h, top_h, dead = [], [], [], 0
    for i in range(b):
        peaks = [float(features[i, j].max()) for j in range(c)]
        top = sorted(range(c), key=lambda j: -peaks[j])[:top_m]
        for j in range(c):
            x = [max(float(v), 0.0) for v in features[i, j].flatten()]
            total = sum(x)
            ent = -sum(v / total * math.log(v / total) for v in x if v > 0) if total > 0 else math.log(h * w)
            all_h.append(ent)
            if peaks[j] > 0:
                active_h.append(ent)
            else:
                dead += 1
            if j in top:
                top_h.append(ent)
    return {"all_filters": sum(all_h) / len(all_h), "active_filters": sum(active_h) / len(active_h),
            f"top{top_m}_filters": sum(top_h) / len(top_h), "uniform_map": math.log(h * w),
            "dead_fraction": dead / len(all_h)}


def test_entropy_meter_equals_per_map_reference():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(5, 6, 4, 3, generator=g)  # negatives are clipped, some maps sparse
    features[0, 1] = 0.0  # dead maps
    features[3, 4] = -1.0
    features[2, 2] = 0.0
    features[2, 2, 1, 1] = 7.0  # one-hot: entropy 0
    features[4, 0] = 0.5  # uniform: log(12)
    meter = EntropyMeter(top_m=2)
    meter.update(features[:2])  # two batches
    meter.update(features[2:].half())  # any float dtype
    ref = _reference_entropy(torch.cat([features[:2], features[2:].half().float()]), 2)
    assert meter.images == 5 and meter.filters == 6 and meter.map_size == (4, 3)
    assert meter.compute() == pytest.approx(ref, abs=1e-5)
    assert ref["dead_fraction"] == pytest.approx(2 / 30)
    split = [EntropyMeter(2), EntropyMeter(2)]
    split[0].update(features[:2])
    split[1].update(features[2:].half())
    assert EntropyMeter.from_states([m.state_dict() for m in split]).compute() == pytest.approx(meter.compute())


def test_entropy_meter_without_top_m_and_empty():
    meter = EntropyMeter()
    meter.update(torch.zeros(1, 2, 2, 2))  # every map dead: no active mean
    out = meter.compute()
    assert list(out) == ["all_filters", "active_filters", "uniform_map", "dead_fraction"]
    assert math.isnan(out["active_filters"]) and out["dead_fraction"] == 1.0
    assert out["all_filters"] == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="no feature maps"):
        EntropyMeter(3).compute()


def test_part_assignment_meter_known_answers_and_states():
    from lmpcli.meters import MAP_COLUMNS, PartAssignmentMeter

    vis = torch.tensor([[True, True, False], [True, True, True]])
    perfect = PartAssignmentMeter()
    perfect.update(torch.tensor([[5, 7, 0], [5, 7, 2]]), vis)  # landmark l always part f(l): a relabelling
    assert perfect.compute() == pytest.approx({MAP_COLUMNS[0]: 100.0, MAP_COLUMNS[1]: 100.0})
    one = PartAssignmentMeter()
    one.update(torch.tensor([[4, 4, 9], [4, 4, 4]]), vis)  # every landmark in one part: no information
    assert one.compute() == pytest.approx({"NMI_map": 0.0, "ARI_map": 0.0})
    # the invisible landmark's part (9) is not counted: the same as if it were 4
    halves = [PartAssignmentMeter(), PartAssignmentMeter()]
    halves[0].update(torch.tensor([[5, 7, 0]]), vis[:1])
    halves[1].update(torch.tensor([[5, 7, 2]]), vis[1:])
    joined = PartAssignmentMeter.from_states([m.state_dict() for m in halves])
    assert joined.compute() == pytest.approx(perfect.compute())
    with pytest.raises(ValueError, match="no visible landmark"):
        PartAssignmentMeter().compute()
