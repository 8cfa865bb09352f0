"""``lmpcli.evaluate.evaluate`` on known answers (tiny CUB fixture of tests/conftest.py).

- an oracle method that returns the ground-truth part locations scores 100 % greedy PCK at every
  rank and 100 % part recall; the same oracle moved off the parts scores 0 / 0;
- a variant row differs from the default row when its setting does (``variants``).
"""

from __future__ import annotations

import pytest
import torch

import lmpcli.evaluate as evaluate_module
from lmpcli.data import CUBDataset, eval_transform
from lmpcli.evaluate import evaluate
from lmpcli.methods.base import KeypointOutput
from lmpcli.settings import KeypointSettings

PARTS = 15  # CUB parts; the oracle predicts one keypoint per part


class Oracle:
    """A keypoint method (:class:`lmpcli.methods.base.KeypointMethod`) that knows the answers.

    Returns, for the images of ``dataset`` in loader order, the 15 ground-truth parts in network-input
    pixels (invisible parts replaced by the first visible one), moved by ``shift`` (x, y) pixels of
    the original image; checks that the images it is given are the ones it expects.
    """

    uses_main = False

    def __init__(self, name: str, dataset: CUBDataset, shift: tuple[float, float] = (0.0, 0.0)) -> None:
        self.name, self.k, self.dataset, self.shift, self.seen = name, PARTS, dataset, torch.tensor(shift), 0

    def __call__(self, images: torch.Tensor, cache: dict | None = None) -> KeypointOutput:
        xy = []
        for j in range(images.shape[0]):
            item = self.dataset[self.seen + j]
            assert torch.allclose(images[j].float(), item["image"], atol=1e-6), "images reached the oracle out of order"
            gt, vis = item["orig_keypoints"], item["visible"]
            gt = torch.where(vis[:, None], gt, gt[vis][0]) + self.shift
            xy.append(gt * images.shape[-1] / item["size"])  # original (W, H) pixels -> S x S input pixels
        self.seen += images.shape[0]
        return KeypointOutput(torch.stack(xy), torch.ones(images.shape[0], PARTS), None)


@pytest.fixture
def with_oracles(monkeypatch, tiny_cub):
    """Register the methods ``oracle`` and ``oracle-off`` with evaluate's method factory."""
    original = evaluate_module.create_method

    def create_method(name, model, *args, **kwargs):
        cfg = model.config
        dataset = CUBDataset(tiny_cub, "all", eval_transform(cfg.image_size, cfg.mean, cfg.std))
        if name == "oracle":
            return Oracle(name, dataset)
        if name == "oracle-off":
            # the fixture's parts lie on the line y = 0.75 x; move every keypoint 20 px across it,
            # more than twice the PCK radius (0.1 * min(W, H) <= 9 px on these images)
            return Oracle(name, dataset, shift=(12.0, -16.0))
        return original(name, model, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "create_method", create_method)


KW = dict(split="all", workers=0, batch_size=4, device="cpu", fit_images=0)  # the oracles know only these images


def test_an_oracle_scores_100_and_an_oracle_off_the_parts_scores_0(with_oracles, tiny_checkpoint, tiny_cub):
    rep = evaluate(tiny_cub, weights=tiny_checkpoint, methods=("oracle", "oracle-off"), settings=KeypointSettings(k=PARTS), **KW)
    t = rep["table"].set_index("method")
    assert list(t.index) == ["oracle", "oracle-off", "centre", "channel-mean"]
    assert rep["config"]["images"] == 6
    ranks = [f"KP{r}" for r in range(1, PARTS + 1)]
    scores = ["avg", "recall", "recall_head", "recall_body", "recall_wings", "recall_tail", "recall_legs"]
    assert t.loc["oracle", ranks + scores].tolist() == [100.0] * (PARTS + len(scores))
    assert t.loc["oracle-off", ranks + scores].tolist() == [0.0] * (PARTS + len(scores))
    landing = rep["landing"].set_index(["method", "rank"])
    assert (landing.loc["oracle", "miss"] == 0).all() and (landing.loc["oracle-off", "miss"] == 100).all()
    # the baselines on the same images are scored by the same code and fall short of the oracle
    assert t.loc["centre", "avg"] < 100 and t.loc["centre", "recall"] < 100


def test_a_variant_row_differs_from_the_default_when_its_setting_does(tiny_checkpoint, tiny_cub):
    """alpha = 1 makes every found keypoint correct, so KP r is the share of images with an r-th keypoint;
    each variant's setting leaves fewer keypoints than the default finds on every image."""
    variants = {"thr-huge": {"thr": 100.0},  # the first keypoint erases every proposal
                "one-filter": {"num_filters": 1},  # one proposal per network: at most 2 keypoints
                "gate-max": {"gate": 1.0},  # only proposals on the channel-mean peak cell: 1 keypoint
                "same": {"thr": None}}  # a setting equal to the default: the same row
    rep = evaluate(tiny_cub, weights=tiny_checkpoint, settings=KeypointSettings(k=3), alpha=1.0, baselines=False,
                   variants=variants, **KW)
    t = rep["table"].set_index("method")
    cols = ["KP1", "KP2", "KP3"]
    assert t.loc["lmpnet", cols].tolist() == [100.0, 100.0, 100.0]
    assert t.loc["thr-huge", cols].tolist() == [100.0, 0.0, 0.0]
    assert t.loc["one-filter", "KP3"] == 0.0 and t.loc["one-filter", "KP1"] == 100.0
    assert t.loc["gate-max", cols].tolist() == [100.0, 0.0, 0.0]
    scores = [c for c in t.columns if c != "images_per_s"]
    assert t.loc["same", scores].tolist() == t.loc["lmpnet", scores].tolist()
