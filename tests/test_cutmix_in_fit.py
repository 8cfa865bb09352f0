"""CutMix (``--cutmix``) really mixes inside ``fit``: the batch that reaches the model and the loss's
targets are spied on during one tiny epoch (the known answers of ``cutmix_batch`` itself are in
tests/test_train.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lmpcli.train as train_module
from lmpcli.model import LMPNetPair
from lmpcli.train import fit


@pytest.fixture
def spied_fit(monkeypatch, tiny_cub, tmp_path):
    """Run one epoch of ``fit`` on the tiny fixture (3 training images of 2 classes, one batch);
    return the collated batches, the images the model was called on and the loss targets."""
    seen = {"batches": [], "model_inputs": [], "targets": []}
    collate, forward, cross_entropy = train_module._collate, LMPNetPair.forward, F.cross_entropy

    def spy_collate(items):
        images, labels = collate(items)
        seen["batches"].append((images.clone(), labels.clone()))
        return images, labels

    def spy_forward(self, images):
        seen["model_inputs"].append(images.detach().clone())
        return forward(self, images)

    def spy_cross_entropy(logits, target, *args, **kwargs):
        seen["targets"].append(target.detach().clone())
        return cross_entropy(logits, target, *args, **kwargs)

    monkeypatch.setattr(train_module, "_collate", spy_collate)
    monkeypatch.setattr(LMPNetPair, "forward", spy_forward)
    monkeypatch.setattr(F, "cross_entropy", spy_cross_entropy)

    def run(cutmix: float):
        fit(tiny_cub, tmp_path / f"run{cutmix}", image_size=64, batch_size=3, epochs=1, workers=0,
            pretrained=False, cutmix=cutmix, seed=0)
        assert len(seen["batches"]) == len(seen["model_inputs"]) == 1  # one batch of all 3 images
        return seen["batches"][0], seen["model_inputs"][0], seen["targets"]

    return run


def test_cutmix_mixes_the_batch_that_reaches_the_model(spied_fit):
    (inputs, labels), mixed, targets = spied_fit(1.0)
    b = inputs.shape[0]
    assert b == 3 and len(set(labels.tolist())) == 2 and mixed.shape == inputs.shape
    for i in range(b):
        # a mixed image differs from every input image ...
        assert all(not torch.equal(mixed[i], inputs[j]) for j in range(b)), f"image {i} was not mixed"
        # ... and is made of its own pixels plus a box from one other image of the batch
        own = (mixed[i] == inputs[i]).all(0)  # (H, W)
        donors = [j for j in range(b) if j != i and ((mixed[i] == inputs[j]).all(0) | own).all()]
        assert donors and 0 < own.float().mean() < 1, f"image {i}"
    # the loss (main and replica) sees label weights, not one-hot labels
    assert len(targets) == 2 and all(torch.equal(t, targets[0]) for t in targets)
    weights = targets[0]
    assert weights.shape == (b, 2) and weights.is_floating_point()
    assert torch.allclose(weights.sum(1), torch.ones(b))
    assert ((weights > 0).sum(1) == 2).any()  # some image carries two classes
    for i in range(b):
        own_share = (mixed[i] == inputs[i]).all(0).float().mean()
        if (weights[i] > 0).sum() == 2:  # the weights are the area shares of the pixels
            assert weights[i, labels[i]].item() == pytest.approx(own_share.item(), abs=1e-6)


def test_without_cutmix_the_model_gets_the_batch_and_one_hot_labels(spied_fit):
    (inputs, labels), mixed, targets = spied_fit(0.0)
    assert torch.equal(mixed, inputs)
    assert all(torch.equal(t, labels) for t in targets)  # class indices: one-hot targets
