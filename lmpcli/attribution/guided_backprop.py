"""Guided backpropagation as an object in captum's shape (``GuidedBackprop(model).attribute(images, target=...)``).

Source: Springenberg et al. (2015), "Striving for simplicity: the all convolutional net", as
used by Shan, "Weakly supervised keypoint detection" (poster; /work/shared/papers/002_*),
section *Fine-scale keypoint detection*: "guided backpropagation from the softmax layer
reveals which pixel positively influences the class". At every rectified unit with output
``y`` the backward signal ``R`` becomes ``[lo < y < hi] * [R > 0] * R``.

Unlike captum's ``GuidedBackprop`` (backward hooks on non-in-place ``nn.ReLU`` only), this
handles ``nn.ReLU6`` / ``nn.Hardtanh`` (the upper gate ``y < hi``; EfficientNet-Lite's
activation), in-place activations and modules called several times per forward.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from .base import logits_of, normalise_max

OBJECTIVES = ("prob", "logprob", "logit")


def check_objective(objective: str) -> None:
    """Refuse an unknown guided-backprop objective (also called by the method's constructor).

    Raises:
        ValueError: ``objective`` not in :data:`OBJECTIVES`.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


class _GuidedGate(torch.autograd.Function):
    """Identity forward on a ReLU/ReLU6 output ``y``; guided backward
    ``R_in = [lo < y < hi] * [R_out > 0] * R_out`` (Springenberg et al.)."""

    @staticmethod
    def forward(ctx, y: Tensor, lo: float, hi: float) -> Tensor:  # noqa: D102
        ctx.save_for_backward(y)
        ctx.lo, ctx.hi = lo, hi
        return y.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        (y,) = ctx.saved_tensors
        gate = (y > ctx.lo) & (y < ctx.hi) & (grad > 0)
        return grad * gate, None, None


def _guided_hook(module: nn.Module, inputs, output):
    if not torch.is_grad_enabled() or not isinstance(output, Tensor):
        return None
    if isinstance(module, nn.Hardtanh):  # includes ReLU6
        return _GuidedGate.apply(output, float(module.min_val), float(module.max_val))
    return _GuidedGate.apply(output, 0.0, math.inf)


@contextlib.contextmanager
def guided_relu_hooks(module: nn.Module) -> Iterator[int]:
    """Make every ``nn.ReLU`` / ``nn.ReLU6`` / ``nn.Hardtanh`` in ``module`` backpropagate
    the guided way while the context is open.

    Works with in-place activations (``inplace=True``, as in EfficientNet-Lite and
    torchvision models) and with modules called several times per forward (the shared
    ``_swish`` ReLU6 of an MBConv block): a forward hook wraps the module's *output* in an
    identity autograd function whose backward applies ``[lo < y < hi] * [R > 0]``.
    Functional activations (``F.relu``) are not affected.

    The hooks are removed when the context exits, also on an exception (``finally``).

    Yields:
        The number of hooked modules.
    """
    handles = []
    try:
        for m in module.modules():
            if isinstance(m, (nn.ReLU, nn.Hardtanh)):
                handles.append(m.register_forward_hook(_guided_hook))
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


class GuidedBackprop:
    """Guided-backpropagation gradient of a class score w.r.t. the input.

    Args:
        model: network whose ReLU / ReLU6 / Hardtanh modules are hooked while
            :meth:`attribute` runs (:func:`guided_relu_hooks`); a torch module (gradients).
        forward: inputs -> logits (or a tuple with the logits first); default ``model``.

    Example::

        gbp = GuidedBackprop(model.main)
        grad = gbp.attribute(images, target=logits.argmax(-1))  # (B, 3, H, W)
        fine = gbp_heatmap(grad)                                  # (B, H, W) in [0, 1]
    """

    def __init__(self, model: nn.Module, forward: Callable[[Tensor], Tensor | tuple] | None = None) -> None:
        self.model = model
        self.forward_func = model if forward is None else forward

    def attribute(self, images: Tensor, target: Tensor, *, objective: str = "prob") -> Tensor:
        """Guided-backprop gradient of each image's ``target`` class [poster: Fine-scale keypoint detection].

        Batched: one forward and one backward for the whole batch (images are independent when
        the model is in eval mode; in train mode batch-norm mixes them). Runs with gradients
        enabled and autocast disabled even when called under ``torch.inference_mode`` or AMP;
        the hooks are on the model only during the call and removed also on an exception.

        Args:
            images: (B, ...) float inputs, e.g. (B, 3, H, W) normalised images (not modified).
            target: (B,) int64 class per image.
            objective: what is differentiated: ``"prob"`` (softmax probability, the poster's
                "guided backpropagation from the softmax layer"), ``"logprob"`` or ``"logit"``.

        Returns:
            (B, ...) float32 input gradient, same shape as ``images`` (captum's shape).

        Raises:
            ValueError: unknown ``objective``. Errors of the forward (e.g. a class index out
                of range) propagate, with the hooks removed.
        """
        check_objective(objective)
        autocast_off = torch.autocast(images.device.type, enabled=False) if images.device.type in ("cpu", "cuda") \
            else contextlib.nullcontext()
        with torch.inference_mode(False), torch.enable_grad(), autocast_off, guided_relu_hooks(self.model):
            # clones: normal tensors, not inference ones; in the network's memory format (channels_last
            # on the CPU, lmpcli.device.prepare_model: 1.3x for this forward + backward at 448 px)
            fmt = torch.channels_last if images.dim() == 4 and _channels_last(self.model) else torch.contiguous_format
            x = images.detach().clone(memory_format=fmt).float().requires_grad_(True)
            target = target.detach().clone().to(x.device).view(-1, 1)
            logits = logits_of(self.forward_func(x)).float()
            if objective == "prob":
                out = logits.softmax(-1)
            elif objective == "logprob":
                out = logits.log_softmax(-1)
            else:
                out = logits
            selected = out.gather(1, target).sum()
            (grad,) = torch.autograd.grad(selected, x)
        return grad.detach().contiguous()


def _channels_last(model) -> bool:
    """Whether ``model``'s first 4-D parameter (a convolution's weight) is stored channels_last."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None) if hasattr(model, "parameters") else None
    return weight is not None and weight.is_contiguous(memory_format=torch.channels_last) \
        and not weight.is_contiguous()


def gbp_heatmap(grad: Tensor) -> Tensor:
    """(B, C, H, W) input gradient -> (B, H, W) float32 map: the maximum over channels of
    ``|grad|``, divided by each map's maximum (in [0, 1]; all-zero maps stay zero)
    [poster: Fine-scale keypoint detection]."""
    return normalise_max(grad.abs().amax(1).float())
