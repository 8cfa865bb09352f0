#!/usr/bin/env python
"""Write an untrained LMPNet checkpoint: ImageNet backbone features, random linear layers.

The keypoint branch (filter selection, replica fusion, learnable clustering) never uses the
linear layer, so ``lmp evaluate`` on this checkpoint scores keypoints from ImageNet features
alone, with the keypoint settings of a reference checkpoint (accuracy is chance). Used in
docs/quality-log.md to ask whether fine-tuning helps keypoints::

    python benchmarks/imagenet_features_checkpoint.py --out runs/imagenet-lite0/model.pt
    lmp evaluate --data ../shared/data/cub50 --split test --weights runs/imagenet-lite0/model.pt
"""

from __future__ import annotations

import argparse

import torch

from lmpcli.checkpoint import read_checkpoint, save_checkpoint
from lmpcli.model import LMPNetConfig, LMPNetPair


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="Checkpoint to write.")
    ap.add_argument("--like", default="weights/lmpnet-lite0-cub50.pt",
                    help="Reference checkpoint: config (backbone, image size, keypoint settings) and class names.")
    args = ap.parse_args()
    ref = read_checkpoint(args.like)
    cfg = LMPNetConfig.from_dict(ref["config"])
    torch.manual_seed(0)
    model = LMPNetPair(cfg, pretrained=True).eval()
    meta = {"command": "python " + " ".join(["benchmarks/imagenet_features_checkpoint.py", "--out", args.out,
                                             "--like", args.like]), "epochs": 0}
    save_checkpoint(args.out, model, ref["class_names"], meta, half=True)
    print(f"{args.out}: {cfg.backbone} ImageNet weights, {cfg.num_classes} random outputs")


if __name__ == "__main__":
    main()
