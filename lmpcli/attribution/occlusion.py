"""Occlusion sensitivity as an object in captum's shape (``Occlusion(forward).attribute(images, target=...)``).

Source: Zeiler & Fergus (2014), as used by Shan, "Weakly supervised keypoint detection"
(poster; /work/shared/papers/002_*), section *Coarse-scale keypoint detection*: the pixels
inside an occluder ``b`` are replaced by random colours ``g`` ("to avoid creating edges") and
the drop ``d(x, b) = max(p_c(x) - p_c(h_g(x, b)), 0)`` of the predicted class' softmax
probability is measured. Unlike captum's ``Occlusion`` (a constant baseline, the last window
cut off at the border), the fill can be per-pixel noise, the window positions end flush with
the border (:func:`occluder_starts`), and occluded copies of all images share the forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .base import logits_of

FILLS = ("noise", "colour", "mean")


def check_occlusion_settings(size: int = 16, stride: int = 8, chunk_size: int = 1, fill: str = "noise") -> None:
    """Refuse occlusion settings that :meth:`Occlusion.attribute` cannot use (also called by
    the method's constructor, so a bad option fails before any network runs).

    Raises:
        ValueError: ``size``, ``stride`` or ``chunk_size`` < 1, or ``fill`` not in :data:`FILLS`.
    """
    if size < 1 or stride < 1:
        raise ValueError(f"occluder size and stride must be >= 1, got {size} and {stride}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")


def occluder_starts(length: int, size: int, stride: int) -> list[int]:
    """First pixel of every occluder position along one axis of ``length`` pixels.

    Positions ``0, stride, 2*stride, ...`` while the occluder fits, plus a last one flush
    with the border when the grid does not reach it, so every pixel is covered. If the
    occluder is larger than the axis, one position (0) covering everything.

    Raises:
        ValueError: ``size`` or ``stride`` < 1.
    """
    check_occlusion_settings(size, stride)
    if size >= length:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


class Occlusion:
    """Occlusion sensitivity of a classifier [poster: Coarse-scale keypoint detection].

    Args:
        forward_func: maps (N, 3, H, W) normalised images to logits (N, K) (or a tuple whose
            first item is the logits, as ``LMPNet.forward``); any backend (torch, ONNX
            Runtime), since no gradient is taken. Called under ``torch.no_grad``.
        mean, std: the input normalisation of ``forward_func`` (per RGB channel), to draw the
            random colours uniformly in [0, 1] pixel space and normalise them like the images.

    Example::

        occ = Occlusion(model.main, mean=model.config.mean, std=model.config.std)
        drops = occ.attribute(images, target=logits.argmax(-1), size=16, stride=8)  # (B, H, W)
    """

    def __init__(self, forward_func: Callable[[Tensor], Tensor | tuple],
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        self.forward_func = forward_func
        self.mean, self.std = tuple(mean), tuple(std)

    @torch.no_grad()
    def attribute(self, images: Tensor, target: Tensor, *, size: int = 16, stride: int = 8, chunk_size: int = 32,
                  fill: str = "noise", generator: torch.Generator | None = None,
                  base_probs: Tensor | None = None) -> Tensor:
        """Mean probability drop of the occluders covering each pixel.

        For every occluder position ``b`` (``size`` x ``size`` px, step ``stride``, see
        :func:`occluder_starts`; captum's ``sliding_window_shapes`` and ``strides``) the drop
        ``d(x, b) = max(p_c(x) - p_c(h_g(x, b)), 0)`` of the softmax probability of class
        ``c = target`` is measured; each pixel gets the mean drop of the occluders covering
        it. Occluded copies of all images are batched together, ``chunk_size`` copies per
        forward (captum's ``perturbations_per_eval``; the memory/speed knob): ``B * P`` copies
        for ``P`` positions, i.e. ``ceil(B * P / chunk_size)`` forwards (plus one for
        ``base_probs`` when not given).

        Args:
            images: (B, 3, H, W) float normalised images.
            target: (B,) int64 class per image (the predicted class in the poster).
            size, stride: occluder side and step, pixels of ``images`` (poster: 16 and 8).
            chunk_size: occluded copies per forward.
            fill: ``"noise"`` (default: an independent random colour per pixel, the poster's
                random colours), ``"colour"`` (one random colour per occluder) or ``"mean"``
                (zeros in normalised space, the dataset mean colour; captum's default baseline).
            generator: random generator on ``images.device`` (seed it for reproducible maps;
                the colours are drawn in chunk order).
            base_probs: (B,) ``p_c(x)`` of the unoccluded images when already known.

        Returns:
            (B, H, W) float32 map of mean probability drops, in [0, 1], on the pixel grid of
            ``images``.

        Raises:
            ValueError: settings refused by :func:`check_occlusion_settings`, images not
                (B, C, H, W) or ``target`` not (B,).
        """
        check_occlusion_settings(size, stride, chunk_size, fill)
        if images.dim() != 4 or target.shape != images.shape[:1]:
            raise ValueError(f"expected images (B, C, H, W) and target (B,), got {tuple(images.shape)}, "
                             f"{tuple(target.shape)}")
        forward = self.forward_func
        b, c, h, w = images.shape
        dev = images.device
        target = target.to(dev)
        if base_probs is None:
            base_probs = logits_of(forward(images)).float().softmax(-1).gather(1, target[:, None])[:, 0]
        ys = torch.tensor(occluder_starts(h, size, stride), device=dev)
        xs = torch.tensor(occluder_starts(w, size, stride), device=dev)
        ny, nx = len(ys), len(xs)
        npos = ny * nx
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)  # for the coverage counts
        mean_t = torch.as_tensor(self.mean, dtype=images.dtype, device=dev).view(1, c, 1, 1)
        std_t = torch.as_tensor(self.std, dtype=images.dtype, device=dev).view(1, c, 1, 1)
        drops = torch.empty(b * npos, device=dev)
        wh, ww = min(size, h), min(size, w)  # an occluder's window (occluder_starts keeps it inside the image)
        for start in range(0, b * npos, chunk_size):
            job = torch.arange(start, min(start + chunk_size, b * npos), device=dev)
            img, pos = job // npos, job % npos
            y0, x0 = ys[pos // nx], xs[pos % nx]
            n = len(job)
            if fill == "noise":  # one random colour per pixel of each window
                g = (torch.rand((n, c, wh, ww), generator=generator, device=dev, dtype=images.dtype) - mean_t) / std_t
            elif fill == "colour":
                g = ((torch.rand((n, c, 1, 1), generator=generator, device=dev, dtype=images.dtype) - mean_t) / std_t
                     ).expand(n, c, wh, ww)
            else:
                g = images.new_zeros((n, c, wh, ww))
            copies = images[img]  # a copy; each occluder's window pasted in by slicing (one block copy per
            # occluded copy: 0.045 s per chunk of 32 at 448 px against 0.072 s for one advanced-indexing write)
            for i, (top, left) in enumerate(zip(y0.tolist(), x0.tolist())):
                copies[i, :, top:top + wh, left:left + ww] = g[i]
            probs = logits_of(forward(copies)).float().softmax(-1).gather(1, target[img][:, None])[:, 0]
            drops[start:start + n] = (base_probs[img].float() - probs).clamp_min(0)
        cover_y = ((rows >= ys[:, None]) & (rows < ys[:, None] + size)).float()  # (ny, H)
        cover_x = ((cols >= xs[:, None]) & (cols < xs[:, None] + size)).float()  # (nx, W)
        total = torch.einsum("yh,byx,xw->bhw", cover_y, drops.view(b, ny, nx), cover_x)
        count = cover_y.sum(0)[:, None] * cover_x.sum(0)[None, :]
        return total / count.clamp_min(1)
