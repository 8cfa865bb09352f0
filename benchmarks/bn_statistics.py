"""Do a checkpoint's batch-norm running statistics fit its weights? One row per checkpoint and split.

For each checkpoint the main network classifies the same images twice: in eval mode (the
stored running statistics, as `lmp predict` and `lmp evaluate` run it) and with every trained
batch norm using the statistics of the batch itself (frozen stages, drop connect and dropout as
at test time). A large gap means the running statistics are stale, as with weight decay 3 in
quality-log section 26; `lmp train ... --resume --bn-images 512` re-estimates them. The last
columns describe the eval-mode final feature maps: the share of cells at zero after ReLU6, and
how peaked the channel-mean map is (its maximum over its mean, averaged over images).

    python benchmarks/bn_statistics.py --data ../shared/data/cub50 --weights runs/wd3-seed0/model.pt runs/wd3-seed0-bn/model.pt [--limit 160]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.utils.data import DataLoader, Subset

from _markdown import emit_table
from lmpcli.checkpoint import load_model
from lmpcli.data import CUBDataset, eval_transform, spread_subset
from lmpcli.train import _collate, trained_batchnorms


def batch_statistics_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in eval mode whose trained batch norms normalise with batch statistics."""
    copied = copy.deepcopy(model)
    for m in trained_batchnorms(copied):
        m.train()
    return copied


@torch.inference_mode()
def measure(weights: str, data: str, split: str, limit: int, batch_size: int, workers: int) -> dict:
    model, _ = load_model(weights)
    c = model.config
    batch_model = batch_statistics_copy(model)
    dataset = CUBDataset(data, split, eval_transform(c.image_size, c.mean, c.std))
    # CUB splits are sorted by class: a seeded shuffle of the even spread mixes classes in each batch,
    # as training batches are mixed (sorted batches would bias the batch statistics towards one class)
    indices = spread_subset(len(dataset), limit)
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(0)).tolist()
    loader = DataLoader(Subset(dataset, [indices[i] for i in order]), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate)
    n = eval_ok = batch_ok = 0
    zero = peak = 0.0
    for images, labels in loader:
        logits, features = model.main(images)
        eval_ok += int((logits.argmax(-1) == labels).sum())
        batch_ok += int((batch_model.main(images)[0].argmax(-1) == labels).sum())
        zero += float((features <= 0).float().mean((1, 2, 3)).sum())
        mean_map = features.mean(1).flatten(1)
        peak += float((mean_map.max(1).values / mean_map.mean(1).clamp_min(1e-12)).sum())
        n += labels.numel()
    return {"eval": 100 * eval_ok / n, "batch": 100 * batch_ok / n, "zero": 100 * zero / n, "peak": peak / n, "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="CUB-200-2011-layout folder")
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--splits", nargs="+", default=["train", "test"])
    ap.add_argument("--limit", type=int, default=160, help="images per split, spread evenly over it")
    ap.add_argument("--batch-size", type=int, default=16, help="also the batch the batch statistics come from")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    start = time.time()
    rows = []
    for w in args.weights:
        for split in args.splits:
            r = measure(w, args.data, split, args.limit, args.batch_size, args.workers)
            rows.append([w, split, str(r["n"]), f"{r['eval']:.1f}", f"{r['batch']:.1f}", f"{r['zero']:.1f}",
                         f"{r['peak']:.2f}"])
    emit_table(f"{args.data}, {args.limit} images per split, batches of {args.batch_size}, {time.time() - start:.0f} s",
               ["checkpoint", "split", "images", "accuracy, eval mode", "accuracy, batch statistics",
                "zero cells (%)", "channel-mean peak / mean"], rows, args.out)


if __name__ == "__main__":
    main()
