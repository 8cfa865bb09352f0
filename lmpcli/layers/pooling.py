"""Global pooling family of LMPNet (Guo & Farrell, Sec. 3.1, Eqs. 1-3).

Every global pooling here is an inner product of the flattened feature map with a
pooling vector ``w`` of length ``h*w``:

* ``avg``: ``w_i = 1/(hw)`` (Eq. 1)
* ``max``: ``w_i = 1`` at the argmax, ``0`` elsewhere (Eq. 2)
* ``lmp`` (leaky max pooling): ``w_i = 1`` at the argmax, ``-eps`` elsewhere (Eq. 3)

The layout follows timm's ``layers/``: a function per operation plus a thin module that
picks the operation by name.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..choices import POOLING_MODES


def _flat_argmax_value(x: Tensor) -> tuple[Tensor, Tensor]:
    """Return (value, flat index) of the spatial maximum of ``x`` (B, C, H, W).

    The value is taken with ``gather`` so that its gradient is 1 at exactly one cell
    (the first argmax), as in Eq. 2, instead of being split among ties as ``amax`` does.
    """
    flat = x.flatten(-2)
    idx = flat.argmax(dim=-1, keepdim=True)
    return flat.gather(-1, idx).squeeze(-1), idx.squeeze(-1)


def leaky_max_pool2d(x: Tensor, eps: float = 0.1) -> Tensor:
    """Global leaky max pooling (Sec. 3.1, Eq. 3).

    ``y = x[argmax] - eps * sum_{i != argmax} x_i`` for every (image, channel).

    Args:
        x: feature maps, shape (B, C, H, W), any floating dtype and device.
        eps: leak ``ε >= 0`` applied to every non-maximum cell (paper: 0.1).
            ``eps = 0`` is max pooling.

    Returns:
        Tensor of shape (B, C), same dtype as ``x``.

    The gradient w.r.t. ``x`` is 1 at the (first) argmax cell and ``-eps`` elsewhere.
    Paper Fig. 3: a dense 2x2 map of ones gives ``1 - 3ε``; a sparse one (a single 1) gives 1.

    Raises:
        ValueError: if ``x`` is not 4-D or ``eps < 0``.
    """
    if x.ndim != 4:
        raise ValueError(f"leaky_max_pool2d expects (B, C, H, W), got shape {tuple(x.shape)}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    peak, _ = _flat_argmax_value(x)
    return (1.0 + eps) * peak - eps * x.sum(dim=(-2, -1))


def global_pool2d(x: Tensor, mode: str = "lmp", eps: float = 0.1) -> Tensor:
    """Global pooling chosen by name: ``avg`` (Eq. 1), ``max`` (Eq. 2) or ``lmp`` (Eq. 3).

    Args:
        x: feature maps (B, C, H, W).
        mode: one of :data:`POOLING_MODES`.
        eps: leak of ``lmp`` (ignored by ``avg`` and ``max``).

    Returns:
        (B, C) pooled features.

    Raises:
        ValueError: for an unknown ``mode`` or a non-4-D input.
    """
    if x.ndim != 4:
        raise ValueError(f"global_pool2d expects (B, C, H, W), got shape {tuple(x.shape)}")
    if mode == "avg":
        return x.mean(dim=(-2, -1))
    if mode == "max":
        return _flat_argmax_value(x)[0]
    if mode == "lmp":
        return leaky_max_pool2d(x, eps)
    raise ValueError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")


def pooling_vector(x: Tensor, mode: str = "lmp", eps: float = 0.1) -> Tensor:
    """The pooling vector ``w`` (Sec. 3.1) of every (image, channel) map.

    Args:
        x: feature maps (B, C, H, W).
        mode, eps: as in :func:`global_pool2d`.

    Returns:
        (B, C, H*W) weights such that ``(x.flatten(-2) * w).sum(-1) == global_pool2d(x)``.
    """
    b, c, h, w = x.shape
    flat = x.flatten(-2)
    if mode == "avg":
        return torch.full_like(flat, 1.0 / (h * w))
    onehot = torch.zeros_like(flat).scatter_(-1, flat.argmax(-1, keepdim=True), 1.0)
    if mode == "max":
        return onehot
    if mode == "lmp":
        return onehot * (1.0 + eps) - eps
    raise ValueError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")


class GlobalPool2d(nn.Module):
    """Module wrapper of :func:`global_pool2d`: (B, C, H, W) -> (B, C).

    Args:
        mode: ``"avg"``, ``"max"`` or ``"lmp"`` (leaky max pooling, Sec. 3.1).
        eps: leak of leaky max pooling (paper default 0.1).

    Raises:
        ValueError: for an unknown mode or a negative ``eps``.
    """

    def __init__(self, mode: str = "lmp", eps: float = 0.1) -> None:
        super().__init__()
        if mode not in POOLING_MODES:
            raise ValueError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.mode = mode
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return global_pool2d(x, self.mode, self.eps)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, eps={self.eps}"
