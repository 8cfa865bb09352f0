"""Training of LMPNet and its replica (after torchvision's classification reference).

``train_one_epoch`` runs one pass. ``fit`` runs the reference script's steps, each a function:
resolving the run (``_resolve_run``: out folder, resume/overwrite, seeds; ``_run_meta``), the data
(``_training_data``, ``_training_loader``: datasets, loaders, sharding), the optimisation
(``_optimisation``: optimizer and schedule), restoring state (``_restore_state``: exact resume) and
the loop (``_train_epochs``: ``train_one_epoch``, then ``last.pt`` with the optimizer state for
``resume``, ``model.pt`` for inference and ``metrics.csv`` every epoch); then the optional
batch-norm and part-model steps.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.transforms import v2

from .checkpoint import read_checkpoint, save_checkpoint
from .data import ClassFolderDataset, CUBDataset, InputError, eval_transform, train_transform
from .device import autocast, prepare_model
from .distributed import (DistContext, all_gather_objects, close_distributed, convert_sync_batchnorm,
                          init_distributed, reduce_epoch_row)
from .model import LMPNetConfig, LMPNetPair
from .settings import TRAIN_DEFAULTS, KeypointSettings
from .outputs import atomic_write_text
from .progress import NullProgress, Progress
from .rng import capture_rng_state, restore_rng_state, seed_everything
from .validate import check_train_out


def open_training_data(data: str | Path, transform, split: str = "train", classes: list[int] | None = None):
    """A CUB-layout folder (has ``images.txt``) or a class-per-folder tree.

    Raises:
        InputError: the folder does not exist or holds no usable data.
    """
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"no such data folder: {data}")
    if (root / "images.txt").is_file():
        return CUBDataset(root, split, transform, classes=classes)
    return ClassFolderDataset(root, transform)


def _collate(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([it["image"] for it in items]), torch.tensor([it["label"] for it in items])


def cutmix_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int, prob: float,
                 alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al., ICCV 2019) applied to a whole batch with probability ``prob``.

    A box of random size (area fraction 1 − λ, λ ~ Beta(α, α)) from the batch rolled by one
    is pasted into every image; the targets become λ·onehot(own) + (1 − λ)·onehot(other), with
    λ corrected to the pasted box's true area. This is torchvision's ``transforms.v2.CutMix``;
    it uses (and advances) torch's global random generator.

    Args:
        images: (B, 3, H, W) float batch.
        labels: (B,) int64 class indices.
        num_classes: C.
        prob: chance that the batch is mixed; 0 returns the inputs unchanged and draws nothing.
    Returns:
        images (B, 3, H, W) and targets: ``labels`` unchanged when not mixed, else (B, C) float
        class probabilities (rows sum to 1), usable by ``F.cross_entropy``.
    """
    if prob <= 0 or float(torch.rand(())) >= prob:
        return images, labels
    return v2.CutMix(alpha=alpha, num_classes=num_classes)(images, labels)


def train_one_epoch(model: LMPNetPair, loader: DataLoader, optimizer, scheduler, device: torch.device,
                    label_smoothing: float = 0.1, progress: Progress | None = None,
                    cutmix: float = 0.0) -> dict:
    """One epoch over ``loader``; returns mean loss and training accuracy of both networks.

    ``cutmix`` is the chance per batch of :func:`cutmix_batch`; training accuracy on a mixed
    batch counts the class with the larger share of each image. ``model`` may be wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel` (then the numbers are this rank's).
    """
    progress = progress or NullProgress()
    model.train()
    net = model.module if isinstance(model, DistributedDataParallel) else model
    n = loss_sum = correct = correct_rep = 0
    start = time.perf_counter()
    num_classes = net.config.num_classes
    for images, labels in loader:
        images, targets = cutmix_batch(images, labels, num_classes, cutmix)
        if targets.ndim == 2:
            labels = targets.argmax(-1)
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device):
            logits, rep_logits = model(images)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
            if rep_logits is not None:
                loss = loss + F.cross_entropy(rep_logits.float(), targets, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        b = labels.numel()
        n += b
        loss_sum += float(loss.detach()) * b
        correct += int((logits.argmax(-1) == labels).sum())
        if rep_logits is not None:
            correct_rep += int((rep_logits.argmax(-1) == labels).sum())
        progress.advance(b, loss=loss_sum / n, acc=correct / n)
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1),
            "train_acc_replica": correct_rep / max(n, 1) if net.replica is not None else float("nan"),
            "seconds": seconds, "images_per_s": n / max(seconds, 1e-9)}


def trained_batchnorms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """The batch norms that training updates (outside the frozen stages), in module order.

    Asks the model itself: :meth:`lmpcli.model.LMPNet.train` keeps the frozen stages in eval
    mode. Leaves ``model`` in eval mode.
    """
    model.train()
    norms = [m for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training]
    model.eval()
    return norms


@torch.no_grad()
def recalibrate_batchnorm(model: LMPNetPair, loader: DataLoader, device: torch.device,
                          progress: Progress | None = None) -> int:
    """Recompute the batch-norm running statistics of the trained layers ("precise BN").

    The EfficientNet-Lite batch norms keep TensorFlow's momentum 0.01, so their running mean
    and variance average over the last ~100 steps; when the weights still move fast at the end
    of training (strong weight decay) those statistics lag behind the weights and eval-mode
    outputs drift from what the network learned (docs/quality-log.md, section 26). This resets
    the running statistics of every batch norm outside the frozen stages and re-estimates
    them as the plain average over all batches of ``loader`` (PyTorch's ``momentum=None``),
    with gradients off and every other layer as at test time (drop connect and dropout off);
    the replica sees the main network's first keypoint masked out, as in training (Sec. 3.3).
    Weights are not changed. Frozen
    stages keep their ImageNet statistics. The model is left in eval mode. It restores the
    accuracy of strongly decayed runs, but on the shipped recipe the keypoints were better
    with the statistics training left behind (section 26), so :func:`fit` runs it only on request.

    Args:
        model: the trained pair, on ``device``.
        loader: yields (images (B, 3, S, S) float normalised, labels (B,)); the images should
            look like the ones seen at test time (``eval_transform`` of the training split).
        device: where ``model`` lives.

    Returns:
        The number of images used.

    Raises:
        ValueError: ``loader`` yields no batch (the statistics are left untouched).
    """
    if len(loader) == 0:
        raise ValueError("batch-norm recalibration needs at least one batch of images")
    progress = progress or NullProgress()
    trained = trained_batchnorms(model)  # the rest stays in eval mode: drop connect and dropout off
    momenta = [m.momentum for m in trained]
    n = 0
    try:
        for m in trained:
            m.train()
            m.reset_running_stats()
            m.momentum = None
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                model(images)
            n += images.shape[0]
            progress.advance(images.shape[0])
    finally:
        for m, momentum in zip(trained, momenta):
            m.momentum = momentum
        model.eval()
    return n


def fit(
    data: str | Path,
    out_dir: str | Path,
    *,
    backbone: str = TRAIN_DEFAULTS["backbone"],
    image_size: int = TRAIN_DEFAULTS["image_size"],
    epochs: int = TRAIN_DEFAULTS["epochs"],
    batch_size: int = TRAIN_DEFAULTS["batch_size"],
    lr: float = TRAIN_DEFAULTS["lr"],
    weight_decay: float = TRAIN_DEFAULTS["weight_decay"],
    label_smoothing: float = TRAIN_DEFAULTS["label_smoothing"],
    pooling: str = TRAIN_DEFAULTS["pooling"],
    eps: float = TRAIN_DEFAULTS["eps"],
    mask_size: float = TRAIN_DEFAULTS["mask_size"],
    replica: bool = TRAIN_DEFAULTS["replica"],
    keypoints: KeypointSettings | None = None,
    freeze: int = TRAIN_DEFAULTS["freeze"],
    crop_scale: float = TRAIN_DEFAULTS["crop_scale"],
    jitter: float = TRAIN_DEFAULTS["jitter"],
    cutmix: float = TRAIN_DEFAULTS["cutmix"],
    classes: list[int] | None = None,
    limit: int | None = None,
    pretrained: bool = TRAIN_DEFAULTS["pretrained"],
    seed: int = TRAIN_DEFAULTS["seed"],
    device: str = "auto",
    workers: int = TRAIN_DEFAULTS["workers"],
    resume: bool = False,
    overwrite: bool = False,
    half_weights: bool = True,
    bn_images: int = TRAIN_DEFAULTS["bn_images"],
    parts: int = TRAIN_DEFAULTS["parts"],
    sync_bn: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Train LMPNet (+ replica) on ``data`` and return the path of the inference checkpoint.

    ``data`` is a CUB-200-2011-layout folder (its train split is used) or a folder with one
    sub-folder of images per class. ``out_dir`` receives ``last.pt`` (resumable),
    ``model.pt`` (weights + config + class names + metadata; float16 when ``half_weights``)
    and ``metrics.csv`` (one row per epoch). ``keypoints``: the keypoint settings the checkpoint
    stores as its defaults (:class:`~lmpcli.settings.KeypointSettings`, None fields:
    :data:`lmpcli.settings.DEFAULTS`; ``num_filters``, ``thr`` and ``iterations`` also place the
    replica's training mask, Sec. 3.3; the rest is test-time only). Other keywords are the
    :class:`LMPNetConfig` fields and the optimisation settings (AdamW, cosine schedule, label smoothing, ``cutmix``:
    chance per batch of CutMix, see :func:`cutmix_batch`; 0 = off). ``weight_decay`` is
    AdamW's decoupled decay; 1 (the default since docs/quality-log.md section 23, where it
    raised greedy PCK and part recall on two seeds, and section 24 on four) shrinks the trained weights by about 16 %
    over the shipped 4-epoch schedule. ``bn_images`` > 0: after the last epoch, re-estimate
    the batch-norm running statistics on that many training images (eval transform; see
    :func:`recalibrate_batchnorm`) and save both checkpoints again; resuming a finished run
    that lacks this step performs it alone. 0 (the default) keeps the statistics as training
    left them: on the shipped recipe the step kept accuracy but lowered greedy PCK by 3.2 and
    part recall by 1.6 on two seeds (docs/quality-log.md, section 26). ``parts`` > 0: then fit
    a part model with that many parts on the training images, no labels read
    (:func:`lmpcli.parts.fit_parts_from_loader`, docs/parts.md), and save both checkpoints again.

    Resume is exact: ``last.pt`` holds the optimizer and schedule and every random generator
    (Python, NumPy, torch, CUDA, the loader's shuffle generator, which also seeds the loader's
    workers each epoch), so a run killed and resumed at an epoch boundary ends with the same
    weights, bit for bit on the CPU, as one never stopped (with the same ``workers`` and number
    of processes). A killed epoch is run again from its start.

    Under ``torchrun`` (docs/distributed.md) every process trains on its share of the images
    (:class:`~torch.utils.data.DistributedSampler`, reshuffled each epoch) with
    :class:`~torch.nn.parallel.DistributedDataParallel` (gloo on the CPU, NCCL on CUDA);
    ``batch_size`` is per process, so one step sees ``batch_size`` x processes images, and
    ``lr`` is used as given (no automatic scaling). Only rank 0 logs and writes ``out_dir``.
    ``sync_bn``: batch-norm statistics over all processes' images
    (:class:`~torch.nn.SyncBatchNorm`, CUDA only) in the trained blocks.

    Raises:
        InputError: bad data folder.
        UsageError: ``out_dir`` holds any file of a previous run (``last.pt``, ``model.pt``,
            ``metrics.csv``) and neither ``resume`` nor ``overwrite`` is set; ``resume`` without
            ``last.pt``; ``out_dir`` inside ``data`` (:func:`lmpcli.validate.check_train_out`).
        BackboneError: backbone weights unavailable.
        ValueError: ``sync_bn`` off CUDA, a bad device or torchrun environment.
    """
    ctx, dev = init_distributed(device)
    progress = (progress or NullProgress()) if ctx.is_main else NullProgress()
    if sync_bn and dev.type != "cuda":
        raise ValueError("--sync-bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel)")
    out, state = _resolve_run(out_dir, data, resume, overwrite, seed, ctx)
    if state is not None:
        config = LMPNetConfig.from_dict(state["config"])
    else:
        config = LMPNetConfig(backbone=backbone, pooling=pooling, eps=eps, image_size=image_size,
                              mask_size=mask_size, replica=replica, freeze=freeze, keypoints=keypoints)
    dataset, class_names = _training_data(data, config, crop_scale, jitter, classes, limit, seed)
    model = prepare_model(LMPNetPair(config, pretrained=pretrained and state is None), dev)
    loader = _training_loader(dataset, batch_size, workers, seed, dev, ctx)
    optimizer, scheduler = _optimisation(model, lr, weight_decay, epochs * len(loader))
    run = _Run(out, ctx, dev, progress, model, class_names, optimizer, scheduler, loader, half_weights)
    if state is not None:
        _restore_state(run, state)
    recipe = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
              "label_smoothing": label_smoothing, "crop_scale": crop_scale, "jitter": jitter, "cutmix": cutmix,
              "seed": seed}
    run.meta = _run_meta(data, recipe, len(dataset), sync_bn, state, ctx, dev)
    _train_epochs(run, _parallel(model, sync_bn, ctx, dev), epochs, label_smoothing, cutmix)
    if ctx.is_main and bn_images > 0 and not run.meta.get("bn_recalibrated"):
        _recalibrate_step(run, _eval_images(data, config, classes, dataset), bn_images, batch_size, workers, seed,
                          max(run.start_epoch, epochs))
    if ctx.is_main and parts > 0 and run.meta.get("parts") != parts:
        _fit_parts_step(run, _eval_images(data, config, classes, dataset), parts, batch_size, workers, seed,
                        max(run.start_epoch, epochs))
    close_distributed(ctx)
    return out / "model.pt"


# The steps of fit, in order (torchvision's reference script keeps them in one main(); here each is a function).


def _resolve_run(out_dir: str | Path, data: str | Path, resume: bool, overwrite: bool, seed: int,
                 ctx: DistContext) -> tuple[Path, dict | None]:
    """The run folder (checked: :func:`lmpcli.validate.check_train_out`), every generator seeded
    (``seed`` + rank) and, with ``resume``, the contents of its ``last.pt`` (else None)."""
    out = check_train_out(out_dir, data, resume=resume, overwrite=overwrite)
    seed_everything(seed + ctx.rank)  # rank 0 = one process: seed; DDP copies rank 0's initial weights
    return out, read_checkpoint(out / "last.pt") if resume else None


def _training_data(data: str | Path, config: LMPNetConfig, crop_scale: float, jitter: float,
                   classes: list[int] | None, limit: int | None, seed: int) -> tuple[Dataset, list[str]]:
    """The augmented training images and their class names; sets ``config``'s ``num_classes``,
    ``mean`` and ``std`` (the backbone's input normalisation). ``limit``: a random subset of that
    many images (a :class:`~torch.utils.data.Subset`, drawn from ``seed``)."""
    probe = LMPNetPair(replace(config, num_classes=2, replica=False), pretrained=False)
    mean, std = probe.main.backbone.mean, probe.main.backbone.std
    del probe
    dataset = open_training_data(data, train_transform(config.image_size, mean, std, crop_scale, jitter),
                                 classes=classes)
    class_names = list(dataset.class_names)
    config.num_classes, config.mean, config.std = len(class_names), tuple(mean), tuple(std)
    if limit:
        g = torch.Generator().manual_seed(seed)
        dataset = Subset(dataset, torch.randperm(len(dataset), generator=g)[:limit].tolist())
    return dataset, class_names


def _eval_images(data: str | Path, config: LMPNetConfig, classes: list[int] | None, dataset: Dataset) -> Dataset:
    """The training images of ``dataset`` (the same subset), with the test-time transform."""
    images = open_training_data(data, eval_transform(config.image_size, config.mean, config.std), classes=classes)
    return Subset(images, dataset.indices) if isinstance(dataset, Subset) else images


def _optimisation(model: LMPNetPair, lr: float, weight_decay: float, total_steps: int):
    """AdamW over the trainable parameters, and a per-step schedule: linear warm-up over the first
    10 % of ``total_steps``, then cosine decay to 0 (resumable with more epochs)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    total_steps = max(1, total_steps)
    warmup = max(1, total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))))
    return optimizer, scheduler


@dataclass
class _Run:
    """What the steps of one :func:`fit` call share: where it writes, what it trains, how far it is."""

    out: Path
    ctx: DistContext
    dev: torch.device
    progress: Progress
    model: LMPNetPair
    class_names: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: DataLoader
    half_weights: bool
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    rng_states: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def save(self, epoch: int) -> None:
        """``last.pt`` (with the optimizer, schedule and generators, for resume) and ``model.pt``."""
        _save(self.out, self.model, self.class_names, self.meta, self.optimizer, self.scheduler, epoch,
              self.history, self.half_weights, self.rng_states)


def _restore_state(run: _Run, state: dict) -> None:
    """Weights, optimizer, schedule, history and generators from ``last.pt`` (exact resume)."""
    run.model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["state_dict"].items()})
    ts = state["training_state"]
    run.optimizer.load_state_dict(ts["optimizer"])
    run.scheduler.load_state_dict(ts["scheduler"])
    run.history = list(ts["history"])
    run.start_epoch = int(ts["epoch"])
    run.rng_states = ts.get("rng_states", [])
    _restore_generators(ts, run.loader, run.dev, run.ctx, run.progress)
    run.progress.log(f"resuming {run.out / 'last.pt'} after epoch {run.start_epoch}")


def _parallel(model: LMPNetPair, sync_bn: bool, ctx: DistContext, dev: torch.device) -> torch.nn.Module:
    """The module to train: ``model`` itself, or under torchrun wrapped in DistributedDataParallel."""
    if not ctx.distributed:
        return model
    if sync_bn:
        convert_sync_batchnorm(model, trained_batchnorms(model))
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def _run_meta(data: str | Path, recipe: dict, train_images: int, sync_bn: bool, state: dict | None,
              ctx: DistContext, dev: torch.device) -> dict:
    """The metadata stored in both checkpoints: the command, the recipe, the machine. On resume the
    run's own recipe (not this call's defaults; the optimizer state holds them) and this command as
    ``resume_command``."""
    meta = {
        "command": " ".join(["lmp", *sys.argv[1:]]) if Path(sys.argv[0]).name == "lmp" else "lmpcli.train.fit",
        "data": str(data), **recipe,
        "train_images": train_images, "world_size": ctx.world_size, "sync_bn": sync_bn, "device": str(dev),
        "torch": str(torch.__version__), "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.system()}",
        "cuda_device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "",
    }
    if state is not None:
        kept = ("epochs", "device", "torch", "machine", "cuda_device", "train_images", "world_size")
        this_command = meta["command"]
        meta.update({k: v for k, v in state.get("meta", {}).items() if k not in kept})
        meta["resume_command"] = this_command
    return meta


def _train_epochs(run: _Run, trained: torch.nn.Module, epochs: int, label_smoothing: float, cutmix: float) -> None:
    """Epochs ``run.start_epoch + 1 .. epochs``: :func:`train_one_epoch`, the ranks' rows combined,
    both checkpoints and ``metrics.csv`` written after each (rank 0)."""
    run.out.mkdir(parents=True, exist_ok=True)
    ctx, progress, loader = run.ctx, run.progress, run.loader
    for epoch in range(run.start_epoch, epochs):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        progress.start(f"epoch {epoch + 1}/{epochs}", len(loader.sampler))
        row = {"epoch": epoch + 1, **train_one_epoch(trained, loader, run.optimizer, run.scheduler, run.dev,
                                                     label_smoothing, progress, cutmix),
               "lr": run.scheduler.get_last_lr()[0]}
        progress.finish()
        row = reduce_epoch_row(row, ctx)
        run.history.append(row)
        progress.log(f"epoch {epoch + 1}: loss {row['train_loss']:.3f}, train acc {row['train_acc']:.3f}, "
                     f"{row['images_per_s']:.2f} img/s")
        run.meta.update(history=run.history, train_seconds=sum(h["seconds"] for h in run.history), bn_recalibrated=0)
        run.rng_states = all_gather_objects(capture_rng_state(loader.generator, run.dev), ctx)  # every rank's: exact resume
        if ctx.is_main:
            run.save(epoch + 1)
            _write_metrics(run.out / "metrics.csv", run.history)


def _recalibrate_step(run: _Run, images: Dataset, bn_images: int, batch_size: int, workers: int, seed: int,
                      epoch: int) -> None:
    """Re-estimate the batch-norm statistics on ``bn_images`` random ``images`` (drawn from ``seed``)
    and save both checkpoints again (:func:`recalibrate_batchnorm`)."""
    g = torch.Generator().manual_seed(seed)
    images = Subset(images, torch.randperm(len(images), generator=g)[:bn_images].tolist())
    run.progress.start("batch-norm statistics", len(images))
    start = time.perf_counter()
    run.meta["bn_recalibrated"] = recalibrate_batchnorm(
        run.model, DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate),
        run.dev, run.progress)
    run.progress.finish()
    run.meta["bn_seconds"] = time.perf_counter() - start
    run.progress.log(f"batch-norm statistics re-estimated on {run.meta['bn_recalibrated']} images "
                     f"in {run.meta['bn_seconds']:.0f} s")
    run.save(epoch)


def _fit_parts_step(run: _Run, images: Dataset, parts: int, batch_size: int, workers: int, seed: int,
                    epoch: int) -> None:
    """Fit a part model of ``parts`` parts on ``images`` (no labels read) and save both checkpoints
    again; a data set too small for it is logged and leaves the checkpoints without one."""
    from .data import collate_skip_errors
    from .parts import PartModelError, fit_parts_from_loader

    try:
        run.model.part_model = fit_parts_from_loader(
            run.model, DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=workers,
                                  collate_fn=collate_skip_errors), len(images), k=parts, seed=seed,
            progress=run.progress)
    except PartModelError as e:  # e.g. fewer feature-map cells than parts on a tiny data set
        run.progress.log(f"no part model: {e}")
        return
    run.meta["parts"] = parts
    run.progress.log(f"part model: {parts} parts fitted on {len(images)} images")
    run.save(epoch)


def _training_loader(dataset, batch_size: int, workers: int, seed: int, dev: torch.device,
                     ctx: DistContext) -> DataLoader:
    """The shuffling training loader; under torchrun each rank reads its share (DistributedSampler).

    Its ``generator`` draws the shuffle order (one process) and, each epoch, the seeds of the
    workers; workers are started anew every epoch (not persistent) so that those seeds, and so
    every augmentation, follow from the generator state stored in ``last.pt``.
    """
    generator = torch.Generator().manual_seed(seed + ctx.rank)
    sampler = None
    if ctx.distributed:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    per_rank = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, num_workers=workers,
                      collate_fn=_collate, drop_last=per_rank > batch_size, pin_memory=dev.type == "cuda",
                      generator=generator)


def _restore_generators(ts: dict, loader: DataLoader, dev: torch.device, ctx: DistContext, progress) -> None:
    """Set this rank's generators to the ones stored in ``last.pt`` (see :mod:`lmpcli.rng`)."""
    states = ts.get("rng_states")
    if states is None:  # a checkpoint from before exact resume: the torch state only
        torch.set_rng_state(ts["rng"])
        progress.log("this checkpoint predates exact resume: the data order restarts from the seed")
    elif len(states) == ctx.world_size:
        restore_rng_state(states[ctx.rank], loader.generator, dev)
    else:
        progress.log(f"the run was trained by {len(states)} processes, resumed by {ctx.world_size}: "
                     "it continues, but not bit for bit as an uninterrupted run")


def _save(out: Path, model, class_names, meta, optimizer, scheduler, epoch, history, half_weights,
          rng_states: list[dict]) -> None:
    training_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "rng_states": rng_states, "epoch": epoch, "history": history}
    save_checkpoint(out / "last.pt", model, class_names, meta, training_state)
    save_checkpoint(out / "model.pt", model, class_names, meta, half=half_weights)


def _write_metrics(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())
