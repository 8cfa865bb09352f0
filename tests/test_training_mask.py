"""The training forward (Sec. 3.3): the replica sees the image with the main network's first
keypoint masked out, and the mask carries no gradient back into the main network."""

from __future__ import annotations

import pytest
import torch

from lmpcli.layers import mask_out
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.settings import KeypointSettings

SIZE = 128  # 4x4 feature maps: the first keypoint can sit in 16 cells


@pytest.fixture(scope="module")
def pair() -> LMPNetPair:
    torch.manual_seed(0)
    return LMPNetPair(LMPNetConfig(image_size=SIZE, num_classes=3, mask_size=0.25, keypoints=KeypointSettings(thr=1.0)), pretrained=False)


def _training_forward(pair: LMPNetPair, images: torch.Tensor):
    """Run ``pair(images)`` in training mode; return its outputs, the main network's feature maps
    and the tensor that reached the replica."""
    seen = {}

    def keep_features(module, inputs, outputs):
        seen["features"] = outputs[1]

    def keep_replica_input(module, inputs):
        seen["replica_input"] = inputs[0]

    hooks = [pair.main.register_forward_hook(keep_features), pair.replica.register_forward_pre_hook(keep_replica_input)]
    try:
        pair.train()
        pair.zero_grad(set_to_none=True)
        logits, replica_logits = pair(images)
    finally:
        for h in hooks:
            h.remove()
    return logits, replica_logits, seen["features"], seen["replica_input"]


def test_replica_input_is_the_image_masked_at_the_main_networks_first_keypoint(pair):
    torch.manual_seed(1)
    images = torch.randn(4, 3, SIZE, SIZE)
    _, _, features, replica_input = _training_forward(pair, images)
    with torch.no_grad():
        first = pair.first_keypoint(features, (SIZE, SIZE))  # (B, 2) input pixels
    expected = mask_out(images, first, pair.config.mask_size)
    assert torch.equal(replica_input, expected)
    # the mask is a real square hole at that keypoint: 32 x 32 px zeroed, the rest untouched
    hole = replica_input == 0
    assert hole.sum(dim=(1, 2, 3)).tolist() == [3 * 32 * 32] * 4
    assert torch.equal(replica_input[~hole], images[~hole])
    for b, (x, y) in enumerate(first.tolist()):
        assert hole[b, :, int(y), int(x)].all()  # the keypoint's own pixel is masked


def test_no_gradient_reaches_the_main_network_through_the_mask(pair):
    torch.manual_seed(2)
    images = torch.randn(4, 3, SIZE, SIZE)
    logits, replica_logits, _, replica_input = _training_forward(pair, images)
    assert logits.requires_grad and replica_logits.requires_grad
    # the replica's input is a constant: nothing of the main network's graph is attached to it
    assert not replica_input.requires_grad and replica_input.grad_fn is None
    replica_logits.logsumexp(-1).sum().backward()
    main_grads = [name for name, p in pair.main.named_parameters() if p.grad is not None]
    replica_grads = [name for name, p in pair.replica.named_parameters() if p.grad is not None]
    assert main_grads == []  # the replica's loss trains the replica only
    assert replica_grads and "classifier.weight" in replica_grads
    # while the main network's own loss does train it (the check above is not vacuous)
    pair.zero_grad(set_to_none=True)
    logits.logsumexp(-1).sum().backward()
    assert pair.main.classifier.weight.grad is not None and pair.main.classifier.weight.grad.abs().sum() > 0
