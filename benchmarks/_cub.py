"""Shared set-up of the benchmark scripts that score a checkpoint on a CUB-layout split."""

from __future__ import annotations

import argparse

import torch

from lmpcli.checkpoint import load_model
from lmpcli.data import CUBDataset, eval_transform, spread_subset
from lmpcli.evaluate import _collate
from lmpcli.inference import make_loader


def cub_parser(description: str, several_weights: str | None = None) -> argparse.ArgumentParser:
    """Arguments every such script takes: --data, --weights, --split, --limit, --out, --batch-size, --workers.

    ``several_weights``: help text of a required ``--weights A.pt B.pt ...`` (a list); None: one
    optional checkpoint (default the shipped weights)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    if several_weights:
        ap.add_argument("--weights", nargs="+", required=True, help=several_weights)
    else:
        ap.add_argument("--weights", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="N images spread evenly over the split")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    return ap


def load_split(args: argparse.Namespace):
    """(model, full CUBDataset, indices scored, CPU loader over them) for parsed :func:`cub_parser` arguments."""
    model, _ = load_model(args.weights)
    cfg = model.config
    full = CUBDataset(args.data, args.split, eval_transform(cfg.image_size, cfg.mean, cfg.std))
    indices = spread_subset(len(full), args.limit) if args.limit else list(range(len(full)))
    loader = make_loader(torch.utils.data.Subset(full, indices), args.batch_size, args.workers, _collate,
                         torch.device("cpu"))
    return model, full, indices, loader
