"""Occlusion + guided-backprop keypoints (Shan, "Weakly supervised keypoint detection", poster).

Pipeline (poster sections in brackets):

1. *Coarse scale* [Coarse-scale keypoint detection]: occlusion sensitivity (Zeiler & Fergus).
   A ``size`` x ``size`` occluder filled with random colours slides over the image with
   ``stride``; ``d(x, b) = max(p_c(x) - p_c(h_g(x, b)), 0)`` at the predicted class ``c``
   (softmax probabilities). Each pixel gets the mean ``d`` of the occluders covering it.
2. *Fine scale* [Fine-scale keypoint detection]: guided backpropagation (Springenberg et al.)
   from the predicted class' softmax probability to the input; the map is the max over
   colour channels of the absolute input gradient.
3. *Fusion* [Fine-scale keypoint detection, last paragraph]: each map (normalised to [0, 1])
   goes through a sigmoid; the two are combined linearly; the value is the confidence score.
4. *Post-processing* [Post-processing, Keypoint prediction]: max-pool non-maximum
   suppression, Förstner sub-pixel refinement, the top 40 % of peaks by confidence kept,
   then the ``k`` best are the keypoints.

CPU cost: the coarse map needs ``ceil((S' - size) / stride + 1) ** 2`` forwards per image,
``S'`` the side the occlusion runs at (``input_size``, default the network input side
``S``): 3025 forwards per image at 448 px with 16/8, 729 at 224 px. Use ``input_size`` (e.g.
224) and a larger ``chunk_size`` on a GPU to trade resolution for speed.

Coordinates: heat maps are (B, S, S) on the network input's pixel grid; map pixel index
``(col, row)`` has its centre at ``(col + 0.5, row + 0.5)`` input pixels, the convention of
:class:`lmpcli.model.KeypointOutput`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backends.onnx import torch_network
from ..model import KeypointOutput
from .base import main_forward

FILLS = ("noise", "colour", "mean")
GBP_OBJECTIVES = ("prob", "logprob", "logit")
FORSTNER_MODELS = ("corner", "centre")


def _logits_of(out) -> Tensor:
    """Logits from a forward's output: the tensor itself or the first item of a tuple."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _normalise_max(maps: Tensor) -> Tensor:
    """(B, H, W) -> each map divided by its maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-30)
    return maps / peak[:, None, None]


# --------------------------------------------------------------------------- coarse scale

def occluder_starts(length: int, size: int, stride: int) -> list[int]:
    """First pixel of every occluder position along one axis of ``length`` pixels.

    Positions ``0, stride, 2*stride, ...`` while the occluder fits, plus a last one flush
    with the border when the grid does not reach it, so every pixel is covered. If the
    occluder is larger than the axis, one position (0) covering everything.

    Raises:
        ValueError: ``size`` or ``stride`` < 1.
    """
    if size < 1 or stride < 1:
        raise ValueError(f"occluder size and stride must be >= 1, got {size} and {stride}")
    if size >= length:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


@torch.no_grad()
def occlusion_sensitivity(
    forward: Callable[[Tensor], Tensor | tuple],
    images: Tensor,
    target: Tensor,
    size: int = 16,
    stride: int = 8,
    chunk_size: int = 32,
    fill: str = "noise",
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    generator: torch.Generator | None = None,
    base_probs: Tensor | None = None,
) -> Tensor:
    """Occlusion sensitivity map [poster: Coarse-scale keypoint detection].

    For every occluder position ``b`` (``size`` x ``size`` px, step ``stride``, see
    :func:`occluder_starts`) the drop ``d(x, b) = max(p_c(x) - p_c(h_g(x, b)), 0)`` of the
    softmax probability of class ``target`` is measured; each pixel gets the mean drop of
    the occluders covering it. Occluded copies of all images are batched together,
    ``chunk_size`` copies per forward (the memory/speed knob): ``B * P`` copies for ``P``
    positions, i.e. ``ceil(B * P / chunk_size)`` forwards.

    Args:
        forward: maps (N, 3, H, W) normalised images to logits (N, K) (or a tuple whose first
            item is the logits, as ``LMPNet.forward``). Called under ``torch.no_grad``.
        images: (B, 3, H, W) float normalised images.
        target: (B,) int64 class per image (the predicted class).
        size, stride: occluder side and step, pixels of ``images``.
        chunk_size: occluded copies per forward.
        fill: ``"noise"`` (default: independent random colour per pixel, avoids creating
            edges as in the poster), ``"colour"`` (one random colour per occluder) or
            ``"mean"`` (zeros in normalised space, the dataset mean colour).
        mean, std: input normalisation, to draw random colours uniformly in [0, 1] pixel
            space and normalise them like the images.
        generator: random generator on ``images.device`` (seeded for reproducibility).
        base_probs: (B,) ``p_c(x)`` of the unoccluded images when already known.

    Returns:
        (B, H, W) float32 map of mean probability drops, in [0, 1].

    Raises:
        ValueError: bad ``fill``, ``chunk_size`` < 1, shape mismatch.
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if images.dim() != 4 or target.shape != images.shape[:1]:
        raise ValueError(f"expected images (B, C, H, W) and target (B,), got {tuple(images.shape)}, {tuple(target.shape)}")
    b, c, h, w = images.shape
    dev = images.device
    target = target.to(dev)
    if base_probs is None:
        base_probs = _logits_of(forward(images)).float().softmax(-1).gather(1, target[:, None])[:, 0]
    ys = torch.tensor(occluder_starts(h, size, stride), device=dev)
    xs = torch.tensor(occluder_starts(w, size, stride), device=dev)
    ny, nx = len(ys), len(xs)
    npos = ny * nx
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=dev).view(1, c, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=dev).view(1, c, 1, 1)
    drops = torch.empty(b * npos, device=dev)
    for start in range(0, b * npos, chunk_size):
        job = torch.arange(start, min(start + chunk_size, b * npos), device=dev)
        img, pos = job // npos, job % npos
        y0, x0 = ys[pos // nx], xs[pos % nx]
        inside = ((rows >= y0[:, None]) & (rows < y0[:, None] + size))[:, None, :, None] & \
                 ((cols >= x0[:, None]) & (cols < x0[:, None] + size))[:, None, None, :]  # (n, 1, H, W)
        n = len(job)
        if fill == "noise":
            g = (torch.rand((n, c, h, w), generator=generator, device=dev, dtype=images.dtype) - mean_t) / std_t
        elif fill == "colour":
            g = (torch.rand((n, c, 1, 1), generator=generator, device=dev, dtype=images.dtype) - mean_t) / std_t
        else:
            g = images.new_zeros(())
        copies = torch.where(inside, g, images[img])
        probs = _logits_of(forward(copies)).float().softmax(-1).gather(1, target[img][:, None])[:, 0]
        drops[start:start + n] = (base_probs[img].float() - probs).clamp_min(0)
    cover_y = ((rows >= ys[:, None]) & (rows < ys[:, None] + size)).float()  # (ny, H)
    cover_x = ((cols >= xs[:, None]) & (cols < xs[:, None] + size)).float()  # (nx, W)
    total = torch.einsum("yh,byx,xw->bhw", cover_y, drops.view(b, ny, nx), cover_x)
    count = cover_y.sum(0)[:, None] * cover_x.sum(0)[None, :]
    return total / count.clamp_min(1)


# --------------------------------------------------------------------------- fine scale

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
    the guided way while the context is open [poster: Fine-scale keypoint detection].

    Works with in-place activations (``inplace=True``, as in EfficientNet-Lite and
    torchvision models) and with modules called several times per forward (the shared
    ``_swish`` ReLU6 of an MBConv block): a forward hook wraps the module's *output* in an
    identity autograd function whose backward applies ``[lo < y < hi] * [R > 0]``. (Captum's
    ``GuidedBackprop`` only handles non-in-place ``nn.ReLU``, not ReLU6.) Functional
    activations (``F.relu``) are not affected.

    The hooks are removed when the context exits, also on an exception.

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


def guided_backprop(
    module: nn.Module,
    images: Tensor,
    target: Tensor,
    objective: str = "prob",
    forward: Callable[[Tensor], Tensor | tuple] | None = None,
) -> Tensor:
    """Guided-backpropagation gradient of each image's ``target`` class w.r.t. the input.

    Batched: one forward and one backward for the whole batch (images are independent when
    ``module`` is in eval mode; in train mode batch-norm mixes them). Runs with gradients
    enabled and autocast disabled even when called under ``torch.inference_mode`` or AMP.

    Args:
        module: network whose ReLU/ReLU6 modules are hooked (:func:`guided_relu_hooks`).
        images: (B, ...) float inputs, e.g. (B, 3, H, W) normalised images.
        target: (B,) int64 class per image.
        objective: what is differentiated: ``"prob"`` (softmax probability, the poster's
            "guided backpropagation from the softmax layer"), ``"logprob"`` or ``"logit"``.
        forward: inputs -> logits (or tuple with logits first); default ``module``.

    Returns:
        (B, ...) float32 input gradient, same shape as ``images``.

    Raises:
        ValueError: unknown ``objective``; errors of the forward propagate (hooks removed).
    """
    if objective not in GBP_OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(GBP_OBJECTIVES)}")
    forward = module if forward is None else forward
    autocast_off = torch.autocast(images.device.type, enabled=False) if images.device.type in ("cpu", "cuda") \
        else contextlib.nullcontext()
    with torch.inference_mode(False), torch.enable_grad(), autocast_off, guided_relu_hooks(module):
        x = images.detach().clone().float().requires_grad_(True)  # clones: normal tensors, not inference ones
        target = target.detach().clone().to(x.device).view(-1, 1)
        logits = _logits_of(forward(x)).float()
        if objective == "prob":
            out = logits.softmax(-1)
        elif objective == "logprob":
            out = logits.log_softmax(-1)
        else:
            out = logits
        selected = out.gather(1, target).sum()
        (grad,) = torch.autograd.grad(selected, x)
    return grad.detach()


def gbp_heatmap(grad: Tensor) -> Tensor:
    """(B, C, H, W) input gradient -> (B, H, W) map: max over channels of ``|grad|``,
    divided by each map's maximum (in [0, 1]; all-zero maps stay zero)."""
    return _normalise_max(grad.abs().amax(1).float())


# --------------------------------------------------------------------------- fusion

def _sigmoid01(maps: Tensor, slope: float, centre: float) -> Tensor:
    """Sigmoid ``1 / (1 + exp(-slope (m - centre)))`` rescaled so that 0 -> 0 and 1 -> 1."""
    lo = 1.0 / (1.0 + math.exp(slope * centre))
    hi = 1.0 / (1.0 + math.exp(-slope * (1.0 - centre)))
    return ((torch.sigmoid(slope * (maps - centre)) - lo) / (hi - lo)).clamp(0, 1)


def fuse_heatmaps(coarse: Tensor, fine: Tensor, weights: tuple[float, float] = (0.5, 0.5),
                  slope: float | tuple[float, float] = 10.0, centre: float | tuple[float, float] = 0.5) -> Tensor:
    """Confidence map [poster: Fine-scale keypoint detection, last paragraph].

    Each map in [0, 1] goes through a sigmoid ``σ(slope (m - centre))`` (rescaled so that
    0 -> 0 and 1 -> 1) into a keypoint likelihood; the two are combined linearly with
    ``weights`` and divided by their sum, so the result is a confidence in [0, 1].

    Args:
        coarse, fine: (B, H, W) float maps in [0, 1].
        weights: (coarse, fine) non-negative weights, not both zero.
        slope, centre: sigmoid parameters, one value for both maps or a (coarse, fine) pair.

    Returns:
        (B, H, W) float32 confidence map in [0, 1].

    Raises:
        ValueError: shape mismatch, negative or all-zero weights, slope <= 0.
    """
    if coarse.shape != fine.shape:
        raise ValueError(f"coarse and fine maps differ in shape: {tuple(coarse.shape)} vs {tuple(fine.shape)}")
    wc, wf = (float(v) for v in weights)
    if wc < 0 or wf < 0 or wc + wf <= 0:
        raise ValueError(f"fusion weights must be >= 0 and not both 0, got {weights}")
    slopes = (slope, slope) if isinstance(slope, (int, float)) else tuple(slope)
    centres = (centre, centre) if isinstance(centre, (int, float)) else tuple(centre)
    if min(slopes) <= 0:
        raise ValueError(f"sigmoid slope must be > 0, got {slope}")
    return (wc * _sigmoid01(coarse.float(), slopes[0], centres[0])
            + wf * _sigmoid01(fine.float(), slopes[1], centres[1])) / (wc + wf)


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """(B, H, W) maps smoothed by a separable Gaussian of ``sigma`` pixels (replicate padding);
    ``sigma <= 0`` returns the input."""
    if sigma <= 0:
        return maps
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, device=maps.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    x = maps[:, None]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x[:, 0]


# --------------------------------------------------------------------------- post-processing

def nms_peaks(heatmap: Tensor, radius: int, max_peaks: int | None = None,
              keep_fraction: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Local maxima by max-pool non-maximum suppression, batched [poster: Post-processing].

    A pixel is a peak when it is the maximum of the ``(2 radius + 1)``-square window
    centred on it; ties are broken by the first pixel in row-major order, so no two peaks
    lie within ``radius`` (Chebyshev distance) of each other. Peaks are sorted by value;
    of an image's ``n`` peaks the best ``ceil(keep_fraction * n)`` are valid
    [poster: Keypoint prediction, "only the top 40 % ... is kept"].

    Args:
        heatmap: (B, H, W) float map; NaN / -inf pixels are never peaks.
        radius: suppression radius, pixels (cells) of the map, >= 0.
        max_peaks: number of peaks returned per image (N); None = the most any image has.
        keep_fraction: fraction of each image's peaks kept, in (0, 1].

    Returns:
        ``(values (B, N) float32, xy (B, N, 2) float32 (x = column, y = row) map indices,
        valid (B, N) bool)``; invalid slots have value -inf and xy NaN.

    Raises:
        ValueError: ``radius`` < 0, ``keep_fraction`` outside (0, 1], heatmap not 3-D.
    """
    if heatmap.dim() != 3:
        raise ValueError(f"expected a (B, H, W) heat map, got shape {tuple(heatmap.shape)}")
    if radius < 0:
        raise ValueError(f"NMS radius must be >= 0, got {radius}")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    b, h, w = heatmap.shape
    x = torch.nan_to_num(heatmap.float(), nan=-math.inf)[:, None]
    radius = int(radius)
    _, idx = F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius, return_indices=True)
    own = torch.arange(h * w, device=x.device).view(1, 1, h, w)
    is_peak = ((idx == own) & (x > -math.inf)).flatten(1)  # (B, H*W)
    count = is_peak.sum(1)
    n = int(count.max()) if max_peaks is None else int(max_peaks)
    vals = x.flatten(1).masked_fill(~is_peak, -math.inf)
    m = min(n, h * w)
    top, flat = vals.topk(m, dim=1) if m > 0 else (vals[:, :0], vals[:, :0].long())
    keep = torch.ceil(count.float() * keep_fraction).long()
    valid = (torch.arange(m, device=x.device)[None] < keep[:, None]) & (top > -math.inf)
    xy = torch.stack([flat % w, torch.div(flat, w, rounding_mode="floor")], -1).float()
    xy = torch.where(valid[..., None], xy, math.nan)
    top = top.masked_fill(~valid, -math.inf)
    if n > m:
        pad = n - m
        top = F.pad(top, (0, pad), value=-math.inf)
        xy = F.pad(xy, (0, 0, 0, pad), value=math.nan)
        valid = F.pad(valid, (0, pad), value=False)
    return top, xy, valid


def forstner_refine(heatmap: Tensor, peaks: Tensor, window: int = 5, model: str = "corner") -> Tensor:
    """Förstner sub-pixel refinement of peaks [poster: Post-processing].

    With ``Ix, Iy`` the central-difference gradients of ``heatmap`` and the sums over a
    ``window`` x ``window`` square centred on the rounded peak, solves ``A x̂ = b``::

        A = [[Σ Ix²,   Σ IxIy],      b = [Σ (Ix² x + IxIy y),
             [Σ IxIy,  Σ Iy² ]]           Σ (IxIy x + Iy² y)]

    i.e. the point closest (least squares) to the lines through every window pixel
    orthogonal to its gradient (``model="corner"``, the poster's formula) — exact for a
    corner whose edges pass through it (checkerboard corner: < 0.1 px), and for peaks
    point-symmetric about the window centre; on a smooth blob whose centre is off the
    window centre it is biased (about 1 px for a Gaussian of sigma 3 px with a 5 px
    window). ``model="centre"`` uses the lines *along* the gradients (Förstner's
    circular-point model: ``Ix`` and ``Iy`` swapped, ``IxIy`` negated), which pass
    through the centre of a radially symmetric peak. Where ``A`` is (near) singular, the
    solution is not finite, or it leaves the window, the peak is returned unchanged.
    Window pixels outside the map are ignored.

    Args:
        heatmap: (B, H, W) float map.
        peaks: (B, N, 2) float (x = column, y = row) map indices; NaN rows are passed through.
        window: odd window side in pixels, >= 3.
        model: ``"corner"`` (poster) or ``"centre"``.

    Returns:
        (B, N, 2) float32 refined (x, y), same convention as ``peaks``.

    Raises:
        ValueError: even or too small ``window``, unknown ``model``, shape mismatch.
    """
    if model not in FORSTNER_MODELS:
        raise ValueError(f"unknown Förstner model {model!r}; choose one of {', '.join(FORSTNER_MODELS)}")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"Förstner window must be odd and >= 3, got {window}")
    if heatmap.dim() != 3 or peaks.dim() != 3 or peaks.shape[0] != heatmap.shape[0] or peaks.shape[-1] != 2:
        raise ValueError(f"expected heatmap (B, H, W) and peaks (B, N, 2), got {tuple(heatmap.shape)}, {tuple(peaks.shape)}")
    b, h, w = heatmap.shape
    n = peaks.shape[1]
    img = heatmap.float()
    iy, ix = torch.gradient(img, dim=(1, 2)) if min(h, w) > 1 else (torch.zeros_like(img),) * 2
    peaks = peaks.float()
    finite = torch.isfinite(peaks).all(-1)  # (B, N)
    centre = torch.where(finite[..., None], peaks, 0.0).round()
    r = window // 2
    off = torch.arange(-r, r + 1, device=img.device, dtype=torch.float32)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    px = centre[..., 0, None] + ox.flatten()  # (B, N, w*w)
    py = centre[..., 1, None] + oy.flatten()
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    flat = (py.clamp(0, h - 1) * w + px.clamp(0, w - 1)).long().view(b, -1)
    gx = ix.flatten(1).gather(1, flat).view(b, n, -1) * inside
    gy = iy.flatten(1).gather(1, flat).view(b, n, -1) * inside
    if model == "centre":  # normals orthogonal to the gradient
        gx, gy = -gy, gx
    gxx, gxy, gyy = (gx * gx).sum(-1), (gx * gy).sum(-1), (gy * gy).sum(-1)
    bx = (gx * gx * px + gx * gy * py).sum(-1)
    by = (gx * gy * px + gy * gy * py).sum(-1)
    det = gxx * gyy - gxy * gxy
    trace = gxx + gyy
    ok = det > 1e-6 * trace.square().clamp_min(1e-30)
    safe = torch.where(ok, det, torch.ones_like(det))
    x_hat = (gyy * bx - gxy * by) / safe
    y_hat = (gxx * by - gxy * bx) / safe
    refined = torch.stack([x_hat, y_hat], -1)
    ok &= torch.isfinite(refined).all(-1) & ((refined - centre).abs() <= r + 0.5).all(-1) & finite
    return torch.where(ok[..., None], refined, peaks)


def detect_keypoints(confidence: Tensor, k: int, nms_radius: int = 16, keep_fraction: float = 0.4,
                     window: int = 5, forstner_model: str = "corner") -> tuple[Tensor, Tensor]:
    """Keypoints from a (B, H, W) confidence map on the network input's pixel grid
    [poster: Post-processing; Keypoint prediction].

    NMS (:func:`nms_peaks`), top ``keep_fraction`` of each image's peaks kept, the ``k``
    best refined with :func:`forstner_refine` (``window``, ``forstner_model``).

    Returns:
        ``(xy (B, k, 2) float32 (x, y) input pixels with pixel centres at +0.5, NaN where
        fewer than k peaks survive; score (B, k) float32 confidence at the peak in [0, 1],
        0 where not found)``.
    """
    values, peaks, valid = nms_peaks(confidence, nms_radius, max_peaks=k, keep_fraction=keep_fraction)
    xy = forstner_refine(confidence, peaks, window, forstner_model) + 0.5
    xy = torch.where(valid[..., None], xy, math.nan)
    score = torch.where(valid, values, 0.0).clamp(0, 1)
    return xy, score


# --------------------------------------------------------------------------- method

class OcclusionGBPMethod:
    """Occlusion-sensitivity + guided-backprop keypoints (Shan poster; see module docstring).

    Calling it on (B, 3, S, S) normalised images returns a
    :class:`~lmpcli.model.KeypointOutput` with ``k`` keypoints ((x, y) input pixels),
    confidences in [0, 1] and the main network's logits.

    CPU cost: about ``B * ceil((S' - occluder_size) / occluder_stride + 1) ** 2`` forwards of
    the main network per batch for the coarse map (``S' = input_size or S``; 3025 per image
    at 448 px, 729 at 224 px) plus one forward+backward for the fine map. Set ``input_size``
    (e.g. 224) to run occlusion at a lower resolution; the map is upsampled to S x S.

    Args:
        model: :class:`~lmpcli.model.LMPNetPair` in eval mode (anything with ``.main(images)
            -> (logits, features)``; ``.config.mean/std`` used when present).
        k: keypoints per image (None = ``model.config.k``).
        occluder_size, occluder_stride: occluder side and step, pixels of the occlusion input
            (poster: 16 and 8).
        chunk_size: occluded copies per forward (memory/speed knob; larger on a GPU).
        input_size: side the occlusion runs at; None = the network input side S.
        fill: occluder filling, ``"noise"`` (random colours, poster), ``"colour"``, ``"mean"``.
        coarse_weight, fine_weight: linear fusion weights.
        sigmoid_slope, sigmoid_centre: sigmoid applied to each [0, 1] map before fusion.
        fine_sigma: Gaussian smoothing of the fine map in pixels (0 = off, as in the poster).
        gbp_objective: ``"prob"`` (poster), ``"logprob"`` or ``"logit"``; see :func:`guided_backprop`.
        nms_radius: NMS radius, pixels of the network input.
        keep_fraction: fraction of peaks kept by confidence (poster: 0.4).
        forstner_window: Förstner window side, pixels (odd).
        forstner_model: ``"corner"`` (the poster's formula) or ``"centre"`` (unbiased on
            blob-like peaks); see :func:`forstner_refine`.
        seed: seed of the random occluder colours (same colours for every batch).
        mean, std: input normalisation; None = ``model.config``'s, else 0 / 1.

    Raises:
        ValueError: invalid option values.
    """

    name = "occlusion-gbp"
    uses_main = True

    def __init__(self, model, k: int | None = 5, occluder_size: int = 16, occluder_stride: int = 8, chunk_size: int = 32,
                 input_size: int | None = None, fill: str = "noise", coarse_weight: float = 0.5,
                 fine_weight: float = 0.5, sigmoid_slope: float = 10.0, sigmoid_centre: float = 0.5,
                 fine_sigma: float = 0.0, gbp_objective: str = "prob", nms_radius: int = 16,
                 keep_fraction: float = 0.4, forstner_window: int = 5, forstner_model: str = "corner", seed: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        if k is None:  # the checkpoint's k, as for lmpnet
            k = getattr(getattr(model, "config", None), "k", 5)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if occluder_size < 1 or occluder_stride < 1 or chunk_size < 1:
            raise ValueError("occluder_size, occluder_stride and chunk_size must be >= 1")
        if input_size is not None and input_size < 1:
            raise ValueError(f"input_size must be >= 1 or None, got {input_size}")
        if fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
        if gbp_objective not in GBP_OBJECTIVES:
            raise ValueError(f"unknown gbp_objective {gbp_objective!r}; choose one of {', '.join(GBP_OBJECTIVES)}")
        if coarse_weight < 0 or fine_weight < 0 or coarse_weight + fine_weight <= 0:
            raise ValueError("fusion weights must be >= 0 and not both 0")
        if sigmoid_slope <= 0:
            raise ValueError(f"sigmoid_slope must be > 0, got {sigmoid_slope}")
        if nms_radius < 0:
            raise ValueError(f"nms_radius must be >= 0, got {nms_radius}")
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        if forstner_window < 3 or forstner_window % 2 == 0:
            raise ValueError(f"forstner_window must be odd and >= 3, got {forstner_window}")
        if forstner_model not in FORSTNER_MODELS:
            raise ValueError(f"unknown forstner_model {forstner_model!r}; choose one of {', '.join(FORSTNER_MODELS)}")
        self.model, self.k = model, int(k)
        self.occluder_size, self.occluder_stride, self.chunk_size = occluder_size, occluder_stride, chunk_size
        self.input_size, self.fill = input_size, fill
        self.weights = (float(coarse_weight), float(fine_weight))
        self.sigmoid_slope, self.sigmoid_centre, self.fine_sigma = sigmoid_slope, sigmoid_centre, fine_sigma
        self.gbp_objective, self.nms_radius, self.keep_fraction = gbp_objective, int(nms_radius), keep_fraction
        self.forstner_window, self.forstner_model, self.seed = forstner_window, forstner_model, seed
        config = getattr(model, "config", None)
        self.mean = tuple(mean) if mean is not None else tuple(getattr(config, "mean", (0.0, 0.0, 0.0)))
        self.std = tuple(std) if std is not None else tuple(getattr(config, "std", (1.0, 1.0, 1.0)))

    def _forward(self, x: Tensor) -> Tensor:
        return _logits_of(self.model.main(x))

    def heatmaps_and_logits(self, images: Tensor, cache: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(coarse (B, S, S), fine (B, S, S), logits (B, K)) for (B, 3, S, S) images.

        Both maps are float32 in [0, 1] (each divided by its maximum) on the network input's
        pixel grid. The logits come from :func:`~lmpcli.methods.base.main_forward` (shared
        through ``cache``); the target class is their argmax.
        """
        logits, _ = main_forward(self.model, images, cache)
        target = logits.float().argmax(-1)
        s = images.shape[-2:]
        gen = torch.Generator(device=images.device)
        gen.manual_seed(self.seed)
        with torch.no_grad():
            if self.input_size is None or tuple(s) == (self.input_size, self.input_size):
                occ_in, base = images, logits.float().softmax(-1).gather(1, target[:, None])[:, 0]
            else:
                occ_in = F.interpolate(images.float(), size=(self.input_size, self.input_size), mode="bilinear",
                                       align_corners=False, antialias=True).to(images.dtype)
                base = None
            coarse = occlusion_sensitivity(self._forward, occ_in, target, self.occluder_size, self.occluder_stride,
                                           self.chunk_size, self.fill, self.mean, self.std, gen, base)
            if coarse.shape[-2:] != s:
                coarse = F.interpolate(coarse[:, None], size=tuple(s), mode="bilinear", align_corners=False)[:, 0]
            coarse = _normalise_max(coarse.clamp_min(0))
        grad = guided_backprop(torch_network(self.model.main), images, target, self.gbp_objective)  # torch: gradients
        fine = gbp_heatmap(grad)
        if self.fine_sigma > 0:
            fine = _normalise_max(gaussian_blur(fine, self.fine_sigma))
        return coarse, fine, logits

    def heatmaps(self, images: Tensor, cache: dict | None = None) -> tuple[Tensor, Tensor]:
        """(coarse, fine) maps, each (B, S, S) float32 in [0, 1], for visualisation
        (:func:`lmpcli.heatmaps.draw_heatmap_panel`)."""
        coarse, fine, _ = self.heatmaps_and_logits(images, cache)
        return coarse, fine

    def confidence(self, coarse: Tensor, fine: Tensor) -> Tensor:
        """(B, S, S) fused confidence map in [0, 1] (:func:`fuse_heatmaps` with this method's settings)."""
        return fuse_heatmaps(coarse, fine, self.weights, self.sigmoid_slope, self.sigmoid_centre)

    def predict(self, images: Tensor, cache: dict | None = None) -> tuple[KeypointOutput, Tensor, Tensor]:
        """Keypoints and the (coarse, fine) maps in one pass: ``(KeypointOutput, coarse, fine)``."""
        coarse, fine, logits = self.heatmaps_and_logits(images, cache)
        with torch.no_grad():
            xy, score = detect_keypoints(self.confidence(coarse, fine), self.k, self.nms_radius,
                                         self.keep_fraction, self.forstner_window, self.forstner_model)
        return KeypointOutput(xy, score, logits.float()), coarse, fine

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        """Keypoints for (B, 3, S, S) normalised images; see :class:`~lmpcli.model.KeypointOutput`.

        The (coarse, fine) maps, (B, S, S) each, are left in ``cache["heatmaps"]`` for figures.
        """
        out, coarse, fine = self.predict(images, cache)
        if cache is not None:
            cache["heatmaps"] = (coarse, fine)
        return out
