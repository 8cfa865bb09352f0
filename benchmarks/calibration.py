"""Are keypoints biased? Greedy PCK of keypoints moved by fixed offsets, and the mean displacement to the nearest part.

A keypoint method maps a feature-map cell to input pixels as ``(cell + 0.5) * stride`` (the
centre of the cell's tile). An unbiased method scores best unshifted, and the displacement from
each keypoint to its nearest visible part averages about zero. The default shifts include
+15.5 px on both axes: where EfficientNet-Lite's receptive fields are centred (TensorFlow "same"
padding pads its five stride-2 convolutions on the right and bottom only, so cell ``i`` spans
pixels centred on ``32 i + 31.5``; quality log, section 14), and −15.5 px for comparison.
Rows: the checkpoint's LMPNet keypoints and the channel-mean baseline, each shifted by
``(dx, dy)`` network-input pixels (scaled to each original image); both networks run once.
A second table splits the unshifted keypoints of each rank by the distance to their nearest
visible part, in units of α: a keypoint within α is correct (greedy PCK); one at 1–1.5 α is a
near miss that finer localisation could fix; one beyond 2 α sits on the wrong place.

    python benchmarks/calibration.py --data ../shared/data/cub50 [--weights W] [--limit 400] [--out table.md]
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from _cub import cub_parser, load_split
from _markdown import emit_table
from lmpcli.inference import iterate
from lmpcli.methods import ChannelMeanBaseline, LMPNetMethod
from lmpcli.meters import KeypointMeter

SHIFTS = "0,0 8,8 -8,-8 15.5,15.5 -15.5,-15.5 15.5,0 0,15.5"
BINS = (0.0, 0.5, 1.0, 1.5, 2.0, float("inf"))  # nearest-part distance, units of alpha
BIN_LABELS = ["< 0.5 α", "0.5–1 α", "1–1.5 α", "1.5–2 α", "≥ 2 α"]


def nearest_part(xy: torch.Tensor, parts: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each keypoint's nearest visible part: ``(part - keypoint (N, k, 2), distance (N, k))``.

    Args:
        xy: (N, k, 2) keypoints; parts: (N, P, 2); visible: (N, P) bool; one pixel unit for all.
            A missing keypoint (NaN) or an image without visible parts gives distance inf.
    """
    d = parts[:, None] - xy[:, :, None]  # (N, k, P, 2)
    dist = d.norm(dim=-1).nan_to_num(float("inf")).masked_fill(~visible[:, None].bool(), float("inf"))
    dist, nearest = dist.min(-1)  # (N, k)
    return torch.gather(d, 2, nearest[..., None, None].expand(-1, -1, 1, 2))[:, :, 0], dist


def main() -> None:
    ap = cub_parser(__doc__)
    ap.add_argument("--shifts", default=SHIFTS, help="space-separated dx,dy in network-input pixels")
    args = ap.parse_args()
    shifts = [tuple(float(v) for v in pair.split(",")) for pair in args.shifts.split()]
    model, _, _, loader = load_split(args)
    s = model.config.image_size
    lmpnet = LMPNetMethod(model)
    methods = [lmpnet, ChannelMeanBaseline(model, lmpnet.k)]
    xy = {m.name: [] for m in methods}
    parts, visible, sizes, start = [], [], [], time.perf_counter()
    for batch, results in iterate(loader, methods, torch.device("cpu")):
        parts.append(batch["keypoints"])
        visible.append(batch["visible"])
        sizes.append(batch["size"])
        for name in xy:
            xy[name].append(results[name]["xy"])
    parts, visible, sizes = torch.cat(parts), torch.cat(visible), torch.cat(sizes).float()
    per_px = sizes / s  # (N, 2) original pixels per network-input pixel
    rows, notes = [], []
    for name, chunks in xy.items():
        pred = torch.cat(chunks)
        for dx, dy in shifts:
            moved = pred + torch.tensor([dx, dy]) * per_px[:, None]
            meter = KeypointMeter()
            meter.update(moved, parts, visible, sizes)
            row = meter.compute()
            rows.append([name, f"({dx:g}, {dy:g})", f"{row['avg']:.1f}", f"{row['recall']:.1f}"])
        disp, dist = nearest_part(pred / per_px[:, None], parts / per_px[:, None], visible)  # network-input px
        disp = disp[dist < 0.15 * s]
        mean, median = disp.mean(0), disp.median(0).values
        notes.append(f"{name}: part − keypoint mean ({mean[0]:.1f}, {mean[1]:.1f}), "
                     f"median ({median[0]:.1f}, {median[1]:.1f}) px")
    ranks = []
    for name, chunks in xy.items():
        d = nearest_part(torch.cat(chunks), parts, visible)[1] / (0.1 * sizes.amin(-1, keepdim=True))  # units of α
        for r in range(d.shape[1]):
            share = [100 * ((d[:, r] >= lo) & (d[:, r] < hi)).float().mean().item() for lo, hi in zip(BINS, BINS[1:])]
            ranks.append([name, f"KP{r + 1}", *(f"{v:.1f}" for v in share)])
    caption = (f"{len(pred)} {args.split} images of {args.data}, weights {args.weights or 'shipped'}, "
               f"{time.perf_counter() - start:.0f} s. Shift in network-input px ({s} px input). "
               f"Displacement to the nearest visible part within 0.15 × {s} px, network-input px: "
               + "; ".join(notes) + ".")
    text = emit_table(caption, ["method", "shift (dx, dy)", "avg greedy PCK", "part recall"], rows)
    print()
    text += "\n\n" + emit_table("Share of images (%) by the distance from the keypoint to its nearest visible part:",
                                ["method", "rank", *BIN_LABELS], ranks)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
