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


def _tiny_pair(replica=False):
    from lmpcli.model import LMPNetConfig, LMPNetPair
    torch.manual_seed(0)
    return LMPNetPair(LMPNetConfig(num_classes=3, image_size=96, replica=replica, freeze=6), pretrained=False)


def _norms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_recalibrate_batchnorm_stores_the_batch_statistics_of_every_trained_layer():
    """Known answer: recalibrated on one batch, each trained batch norm holds that batch's mean and
    unbiased variance of its input, so eval mode normalises as training mode does on it."""
    from lmpcli.train import recalibrate_batchnorm
    model = _tiny_pair()
    frozen_norms = [m for st in model.main.backbone.stages()[:6] for m in _norms(st)]
    for m in _norms(model):  # stale statistics, as a lagging running average leaves them
        m.running_mean.add_(0.5)
        m.running_var.mul_(3.0)
    frozen = [m.running_mean.clone() for m in frozen_norms]
    momentum = {m: m.momentum for m in _norms(model)}
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    images = torch.randn(8, 3, 96, 96)
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp: inputs.setdefault(mod, inp[0].clone())) for m in _norms(model)]
    try:
        model.eval()  # the reference: batch statistics in the trained norms, drop connect off
        for m in _norms(model):
            m.train(all(m is not f for f in frozen_norms))
        with torch.no_grad():
            model.main(images)
    finally:
        for h in hooks:
            h.remove()
    n = recalibrate_batchnorm(model, [(images, torch.zeros(8))], torch.device("cpu"))
    assert n == 8 and not model.training
    trained = [m for m in _norms(model) if all(m is not f for f in frozen_norms)]
    assert len(trained) == 49 - len(frozen_norms) and len(trained) > 20
    for m in trained:
        x = inputs[m]
        assert torch.allclose(m.running_mean, x.mean((0, 2, 3)), rtol=1e-4, atol=1e-6)
        assert torch.allclose(m.running_var, x.var((0, 2, 3), unbiased=True), rtol=1e-3, atol=1e-7)
        assert m.momentum == momentum[m]  # restored
    first = trained[-1]  # the final 1x1 conv's norm: an input far from constant
    x = inputs[first]
    with torch.no_grad():
        stale_free = first(x)  # eval mode, recalibrated statistics
        first.train()
        batch = first(x)
    assert torch.allclose(stale_free, batch, rtol=1e-2, atol=1e-3 * float(batch.abs().max()))
    for key, value in model.state_dict().items():
        if key in weights:
            assert torch.equal(value, weights[key]), key
    for m, before in zip(frozen_norms, frozen):
        assert torch.equal(m.running_mean, before)  # frozen stages keep their statistics


def test_recalibrate_batchnorm_averages_batches_equally():
    """Known answer: the running mean is the plain average of the per-batch means of the layer input."""
    from lmpcli.train import recalibrate_batchnorm
    model = _tiny_pair()
    last = _norms(model.main.backbone.stages()[-1])[-1]
    seen = []
    handle = last.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].mean((0, 2, 3)).clone()))
    try:
        batches = [(torch.randn(4, 3, 96, 96) * (1 + i), torch.zeros(4)) for i in range(3)]
        recalibrate_batchnorm(model, batches, torch.device("cpu"))
    finally:
        handle.remove()
    assert len(seen) == 3
    assert torch.allclose(last.running_mean, torch.stack(seen).mean(0), atol=1e-5)
    assert int(last.num_batches_tracked) == 3


def test_recalibrate_batchnorm_refuses_an_empty_loader():
    from lmpcli.train import recalibrate_batchnorm
    model = _tiny_pair()
    before = [m.running_var.clone() for m in _norms(model)]
    try:
        recalibrate_batchnorm(model, [], torch.device("cpu"))
    except ValueError as e:
        assert "at least one batch" in str(e)
    else:
        raise AssertionError("no error")
    assert all(torch.equal(m.running_var, b) for m, b in zip(_norms(model), before))


def test_fit_recalibrates_after_training_and_on_resume_of_a_finished_run(tiny_cub, tmp_path):
    run = tmp_path / "run"
    fit(tiny_cub, run, image_size=64, batch_size=2, epochs=1, workers=0, pretrained=False, seed=0,
        weight_decay=0.5, bn_images=0)
    plain = torch.load(run / "last.pt", weights_only=True)
    assert not plain["meta"]["bn_recalibrated"]
    fit(tiny_cub, run, image_size=64, batch_size=2, epochs=1, workers=0, pretrained=False, seed=0,
        resume=True, bn_images=3)  # no epoch left: only the statistics step runs
    recal = torch.load(run / "last.pt", weights_only=True)
    assert recal["meta"]["bn_recalibrated"] == 3
    assert recal["meta"]["weight_decay"] == 0.5  # the run's setting, not this call's default
    assert recal["meta"]["resume_command"] == "lmpcli.train.fit" and "command" in recal["meta"]
    assert len(recal["meta"]["history"]) == 1 and recal["training_state"]["epoch"] == 1
    changed = [k for k, v in plain["state_dict"].items() if not torch.equal(v, recal["state_dict"][k])]
    assert changed and all("running" in k or "num_batches" in k for k in changed)
    half = torch.load(run / "model.pt", weights_only=True)
    key = next(k for k in changed if k.endswith("running_mean"))
    assert torch.allclose(half["state_dict"][key].float(), recal["state_dict"][key], rtol=1e-2, atol=1e-3)
