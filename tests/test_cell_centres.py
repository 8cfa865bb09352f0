"""Where a feature-map cell sits in the image: receptive-field centres (quality log, section 14)."""
import pytest
import torch

from lmpcli.backbones import create_backbone
from lmpcli.methods import ChannelMeanBaseline, LMPNetMethod
from lmpcli.model import LMPNetConfig, LMPNetPair, cells_to_pixels, mirror_shift, shift_cells


def receptive_field_midpoint(fn, size: int, cell: int) -> tuple[float, float]:
    """(x, y) midpoint, in continuous pixels, of the input pixels that reach ``fn``'s cell (cell, cell)."""
    x = torch.randn(1, 3, size, size, requires_grad=True)
    fn(x)[0, :, cell, cell].sum().backward()
    reach = x.grad.abs().sum(1)[0] > 0
    cols = reach.any(0).nonzero().flatten()
    rows = reach.any(1).nonzero().flatten()
    return ((cols.min() + cols.max() + 1).item() / 2, (rows.min() + rows.max() + 1).item() / 2)


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return create_backbone("efficientnet-lite0", pretrained=False).eval()


@pytest.mark.parametrize("name, size, cell, centre", [
    ("efficientnet-lite0", 1024, 16, 31.5 / 32),  # TF "same" padding: right/bottom only
    ("resnet18", 512, 8, 0.5 / 32),  # symmetric padding
])
def test_backbone_cell_centre_is_the_receptive_field_centre(name, size, cell, centre, lite0):
    torch.manual_seed(0)
    backbone = lite0 if name == "efficientnet-lite0" else create_backbone(name, pretrained=False).eval()
    assert backbone.cell_centre == centre
    mid = receptive_field_midpoint(backbone, size, cell)
    assert mid == ((cell + centre) * 32,) * 2
    assert abs(mid[0] - (cell + 0.5) * 32) == pytest.approx(15.5)  # the tile centre is off by 15.5 px


def test_mirrored_back_maps_look_where_the_plain_maps_look(lite0):
    """After mirror_shift, cell m of the flipped-back map of the mirrored input sees the same pixels."""
    dx = mirror_shift(lite0.cell_centre)
    assert dx == -1 and mirror_shift(0.5) == 0 and mirror_shift(0.5 / 32) == 1
    plain = (16 + lite0.cell_centre) * 32  # measured in the test above
    aligned = receptive_field_midpoint(lambda x: shift_cells(lite0(x.flip(-1)).flip(-1), dx), 1024, 16)[0]
    unaligned = receptive_field_midpoint(lambda x: lite0(x.flip(-1)).flip(-1), 1024, 16)[0]
    assert abs(aligned - plain) <= 1.0
    assert abs(unaligned - plain) == 31.0  # what the flip fused before section 14


def test_shift_cells_and_cells_to_pixels_known_answers():
    maps = torch.arange(1.0, 5.0).view(1, 1, 1, 4)
    assert shift_cells(maps, -1).flatten().tolist() == [2, 3, 4, 0]
    assert shift_cells(maps, 2).flatten().tolist() == [0, 0, 1, 2]
    assert shift_cells(maps, 0) is maps
    cells = torch.tensor([[0.0, 0.0], [13.0, 2.0]])
    assert cells_to_pixels(cells, (14, 14), (448, 448)).tolist() == [[16, 16], [432, 80]]
    assert cells_to_pixels(cells, (14, 14), (448, 448), 31.5 / 32).tolist() == [[31.5, 31.5], [447.5, 95.5]]


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return LMPNetPair(LMPNetConfig(image_size=128, num_classes=3, thr=1.0), pretrained=False).eval()


def test_centres_option_moves_every_feature_map_method_by_the_offset(pair):
    assert pair.config.centres == "receptive-field" and pair.cell_centre() == 31.5 / 32
    assert pair.cell_centre("grid") == 0.5
    with pytest.raises(ValueError, match="unknown centres"):
        pair.cell_centre("middle")
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        rf = LMPNetMethod(pair, k=3)(x, {})
        grid = LMPNetMethod(pair, k=3, centres="grid")(x, {})
        base_rf = ChannelMeanBaseline(pair, 3)(x, {})
        pair.set_centres("grid")
        try:
            base_grid = ChannelMeanBaseline(pair, 3)(x, {})
        finally:
            pair.set_centres("receptive-field")
    assert rf.xy.isfinite().any()
    torch.testing.assert_close(rf.xy - grid.xy, torch.full_like(rf.xy, 15.5), equal_nan=True)
    torch.testing.assert_close(rf.score, grid.score)
    torch.testing.assert_close(base_rf.xy - base_grid.xy, torch.full_like(base_rf.xy, 15.5))
    with pytest.raises(ValueError, match="unknown centres"):
        pair.set_centres("middle")
    assert pair.config.centres == "receptive-field"
