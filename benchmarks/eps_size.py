"""Classification accuracy at other test-time input sizes, with ε 0.1 and with ε rescaled.

Leaky max pooling (Eq. 3) returns (1 + ε) · peak − ε · (sum over all cells), so its value depends
on the number of cells. For each checkpoint and input size this prints the main network's accuracy
with the checkpoint's ε and with ε × (training cells / cells), which keeps the leak's weight per
image constant; both poolings reuse one forward pass per batch (quality log, section 22).

    python benchmarks/eps_size.py --data ../shared/data/cub50 --weights weights/lmpnet-lite0-cub50.pt runs/seed1/model.pt --sizes 384 448 512 576 --limit 400
"""

from __future__ import annotations

import argparse
import time

import torch

from _markdown import emit_table
from lmpcli.checkpoint import load_model
from lmpcli.data import CUBDataset, eval_transform, spread_subset
from lmpcli.layers.pooling import global_pool2d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--sizes", nargs="+", type=int, default=[384, 448, 512, 576])
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=400, help="N images spread evenly over the split")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()

    rows = []
    with torch.inference_mode():
        for weights in args.weights:
            model, _ = load_model(weights, "cpu")
            net, cfg = model.main.eval(), model.config
            trained_cells = (cfg.image_size // cfg.output_stride) ** 2
            for size in args.sizes:
                start = time.time()
                data = CUBDataset(args.data, args.split, eval_transform(size, cfg.mean, cfg.std))
                data = torch.utils.data.Subset(data, spread_subset(len(data), args.limit))
                loader = torch.utils.data.DataLoader(data, batch_size=8, num_workers=args.workers, collate_fn=list)
                hits, n, cells = [0, 0], 0, trained_cells
                for items in loader:
                    images = torch.stack([it["image"] for it in items])
                    labels = torch.tensor([it["label"] for it in items])
                    features = net.backbone.as_trained(net.backbone(images))
                    cells = features.shape[-2] * features.shape[-1]
                    for i, eps in enumerate((cfg.eps, cfg.eps * trained_cells / cells)):
                        logits = net.classifier(global_pool2d(features, cfg.pooling, eps))
                        hits[i] += int((logits.argmax(-1) == labels).sum())
                    n += len(items)
                rows.append([weights, str(size), str(cells), f"{100 * hits[0] / n:.2f}",
                             f"{cfg.eps * trained_cells / cells:.3f}", f"{100 * hits[1] / n:.2f}",
                             f"{time.time() - start:.0f}"])
    emit_table(f"{args.data} {args.split}, {args.limit} images; main-network accuracy (%)",
               ["checkpoint", "size", "cells", "acc, checkpoint ε", "rescaled ε", "acc, rescaled ε", "s"], rows, args.out)


if __name__ == "__main__":
    main()
