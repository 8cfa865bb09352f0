"""Where LMPNet's wrong keypoints land, and what an oracle object prior could add: prints a table.

For every keypoint rank: the share of images whose keypoint is correct (a visible part within
α of it: greedy PCK), wrong and outside the bird's bounding box (CUB ``bounding_boxes.txt``), or
wrong but inside the box. Rows: the checkpoint's keypoint branch as configured, the test-time
flip (``lmp evaluate --flip``), an *oracle box gate* that drops every proposal outside the true
box before clustering (an upper bound for any object prior such as ``--gate``), and both.
Both networks run twice per batch (plain and mirrored); every row reuses those maps.

    python benchmarks/error_analysis.py --data ../shared/data/cub50 [--weights W] [--limit 400] [--out table.md]
"""

from __future__ import annotations

import time

import torch

from _cub import cub_parser, load_split
from _markdown import emit_table
from lmpcli.head import KeypointHead
from lmpcli.layers import Proposals
from lmpcli.meters import KeypointMeter

ROWS = {"as configured": (False, False), "test-time flip": (True, False),
        "oracle box gate": (False, True), "flip + oracle box gate": (True, True)}


def box_gate(proposals: Proposals, boxes_cells: torch.Tensor) -> Proposals:
    """Clear proposals whose peak cell centre lies outside (B, 4) boxes (x0, y0, x1, y1) in cells."""
    x, y = proposals.xy[..., 0], proposals.xy[..., 1]
    b = boxes_cells[:, None, :]
    inside = (x >= b[..., 0] - 0.5) & (x <= b[..., 2] + 0.5) & (y >= b[..., 1] - 0.5) & (y <= b[..., 3] + 0.5)
    return proposals._replace(valid=proposals.valid & inside)


def main() -> None:
    args = cub_parser(__doc__).parse_args()
    model, full, indices, loader = load_split(args)
    cfg, s = model.config, model.config.image_size
    settings = model.resolve()  # the checkpoint's keypoint settings
    kp_head = KeypointHead(settings, model.cell_centre())  # the keypoint branch of lmp predict / evaluate
    centre = model.cell_centre()
    boxes = torch.tensor(full.table.loc[indices, ["bx", "by", "bw", "bh"]].values, dtype=torch.float32)
    meters = {n: KeypointMeter() for n in ROWS}
    inside = {n: [] for n in ROWS}  # (B, k) keypoint inside the true box
    seen, start = 0, time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            n = len(batch["path"])
            box = boxes[seen: seen + n]
            seen += n
            _, feats, rep = model.features(batch["image"])
            mirrored = model.flipped_features(batch["image"])
            h, w = feats.shape[-2:]
            per_px = batch["size"].float() / s  # original pixels per input pixel, (B, 2)
            cell = torch.tensor([s / w, s / h])
            x0y0 = box[:, :2] / per_px / cell - centre
            x1y1 = (box[:, :2] + box[:, 2:]) / per_px / cell - centre
            box_cells = torch.cat([x0y0, x1y1], -1)
            for name, (flip, oracle) in ROWS.items():
                maps = [feats] + ([rep] if rep is not None else []) + (mirrored if flip else [])
                props = kp_head.proposals(maps)
                if oracle:
                    props = box_gate(props, box_cells)
                xy, _ = kp_head.to_pixels(kp_head.cluster(props, (h, w)), (h, w), (s, s))
                xy = xy * per_px[:, None, :]
                meters[name].update(xy, batch["keypoints"], batch["visible"], batch["size"])
                x, y = xy[..., 0], xy[..., 1]
                inside[name].append((x >= box[:, None, 0]) & (x <= box[:, None, 0] + box[:, None, 2])
                                    & (y >= box[:, None, 1]) & (y <= box[:, None, 1] + box[:, None, 3]))
    ranks = range(1, settings.k + 1)
    head = (["row"] + [f"KP{r}" for r in ranks] + ["avg", "recall"]
            + [f"wrong outside KP{r}" for r in ranks] + [f"wrong inside KP{r}" for r in ranks])
    caption = (f"Error analysis: {seen} {args.split} images of {args.data}, weights {args.weights or 'shipped'} "
               f"({cfg.backbone}, {s} px, thr={settings.thr}, filters={settings.num_filters}); "
               f"{time.perf_counter() - start:.0f} s. Percent of images per rank.")
    rows = []
    for name, meter in meters.items():
        row, wrong, box_in = meter.compute(), 1 - meter.hits().float(), torch.cat(inside[name]).float()
        cells = ([row[c] for c in head[1:settings.k + 3]] + [100 * v for v in (wrong * (1 - box_in)).mean(0).tolist()]
                 + [100 * v for v in (wrong * box_in).mean(0).tolist()])
        rows.append([name] + [f"{v:.1f}" for v in cells])
    emit_table(caption, head, rows, args.out)


if __name__ == "__main__":
    main()
