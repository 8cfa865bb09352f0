"""Training helpers: CutMix on a batch (known answers) and a tiny fit() run with it."""

import math

import pandas as pd
import torch

from lmpcli.train import cutmix_batch, fit


def _flat_batch(b=4, size=32):
    """Image i is filled with the value i, so every pixel tells which image it came from."""
    return torch.arange(b).float().view(b, 1, 1, 1).expand(b, 3, size, size).clone(), torch.arange(b)


def test_cutmix_targets_are_the_pasted_area_shares():
    images, labels = _flat_batch()
    torch.manual_seed(0)
    mixed, targets = cutmix_batch(images, labels, num_classes=6, prob=1.0)
    assert targets.shape == (4, 6) and torch.allclose(targets.sum(1), torch.ones(4))
    for i in range(4):
        own = (mixed[i, 0] == i).float().mean()
        donor = int(mixed[i, 0][mixed[i, 0] != i].unique().item())  # one box from one other image
        assert donor != i
        assert math.isclose(float(targets[i, i]), float(own), abs_tol=1e-6)
        assert math.isclose(float(targets[i, donor]), 1 - float(own), abs_tol=1e-6)
    assert (mixed != images).any()


def test_cutmix_off_returns_inputs_and_draws_nothing():
    images, labels = _flat_batch()
    torch.manual_seed(1)
    state = torch.get_rng_state()
    out, targets = cutmix_batch(images, labels, num_classes=6, prob=0.0)
    assert out is images and targets is labels
    assert torch.equal(state, torch.get_rng_state())  # the default schedule stays bit-identical


def test_fit_with_cutmix_on_tiny_data(tiny_cub, tmp_path):
    path = fit(tiny_cub, tmp_path / "run", image_size=64, batch_size=2, epochs=1, workers=0, pretrained=False,
               cutmix=1.0, seed=0)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["meta"]["cutmix"] == 1.0
    row = pd.read_csv(tmp_path / "run" / "metrics.csv").iloc[0]
    assert math.isfinite(row["train_loss"]) and 0 <= row["train_acc"] <= 1
