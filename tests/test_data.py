import pytest
import torch
from torchvision.transforms import v2

from lmpcli.data import CUBDataset, InputError, eval_transform, expand_inputs, load_rgb


def test_cub_loader_on_official_layout(tiny_cub):
    train = CUBDataset(tiny_cub, "train")
    test = CUBDataset(tiny_cub, "test")
    assert (len(train), len(test)) == (3, 3)
    assert train.class_ids == [3, 7] and train.class_names == ["Bird_3", "Bird_7"]
    assert train.labels.tolist() == [0, 0, 1]  # labels remapped to the classes present
    item = train[1]  # image 2 is grayscale
    assert item["image"].mode == "RGB"
    assert item["size"].tolist() == [100, 70]
    assert item["visible"].tolist()[:3] == [True, True, False]
    assert item["orig_keypoints"][1].tolist() == [8.0, 6.0]
    assert train.part_names[1] == "beak"


def test_cmyk_and_class_filter(tiny_cub):
    ds = CUBDataset(tiny_cub, "test", eval_transform(32, (0.5,) * 3, (0.5,) * 3), classes=[7])
    assert len(ds) == 2 and ds.class_names == ["Bird_7"]
    item = ds[0]  # image 5 is CMYK
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32


def test_keypoints_follow_the_transform(tiny_cub):
    ds = CUBDataset(tiny_cub, "train", v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(p=1.0)]))
    item = ds[0]
    w = item["size"][0].item()
    x_orig = item["orig_keypoints"][:, 0]
    assert torch.allclose(item["keypoints"][:, 0], w - x_orig, atol=1.0)  # flipped with the image


def test_not_a_cub_folder(tmp_path):
    with pytest.raises(InputError, match="images.txt"):
        CUBDataset(tmp_path)


def test_expand_inputs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["a.jpg", "sub/b.PNG", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.split("/")[-1] for p in expand_inputs([str(tmp_path)])] == ["a.jpg", "b.PNG"]
    assert len(expand_inputs([str(tmp_path / "*.jpg")])) == 1
    assert expand_inputs(["-"], stdin=["x.jpg\n", "\n", "y.jpg\n"]) == ["x.jpg", "y.jpg"]
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        expand_inputs([str(tmp_path / "empty")])


def test_load_rgb_flattens_alpha(tmp_path):
    from PIL import Image

    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "t.png")
    assert load_rgb(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)
