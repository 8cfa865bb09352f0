"""``lmp evaluate``: greedy PCK per keypoint rank (Table 2), part recall, accuracy, speed.

Every chosen method and the two trivial baselines are scored on the same images in one run:
the methods are built, one loop over the images feeds a :class:`lmpcli.meters.KeypointMeter` per
method (and an :class:`lmpcli.meters.EntropyMeter` with ``entropy``), and the report is read off
the meters (torchvision's classification reference, ``evaluate``, has the same shape).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import torch

from .data import CUBDataset, InputError, eval_transform, spread_subset
from .backends import resolve_backend
from .distributed import close_distributed, init_distributed
from .inference import checkpoint_paths, iterate, load_for_inference, make_loader
from .methods import LMPNetMethod, create_method
from .meters import EntropyMeter, KeypointMeter, PartAssignmentMeter, gather_meters
from .outputs import atomic_write_text, check_writable
from .part_metrics import DEFAULT_FIT_IMAGES, collect_predictions, fit_subset, part_metric_rows
from .progress import NullProgress, Progress
from .settings import KeypointSettings
from .shards import shard_bounds

BASELINES = ("centre", "channel-mean")


def _collate(items: list[dict]) -> dict:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "size": torch.stack([it["size"] for it in items]),
        "keypoints": torch.stack([it["orig_keypoints"] for it in items]),
        "visible": torch.stack([it["visible"] for it in items]),
        "box": torch.stack([it["box"] for it in items]),
        "label": torch.tensor([it["label"] for it in items]),
        "path": [it["path"] for it in items],
    }


def evaluate(
    data: str | Path,
    *,
    split: str = "test",
    weights: str | Path | Sequence[str | Path] | None = None,
    methods: Sequence[str] = ("lmpnet",),
    baselines: bool = True,
    settings: KeypointSettings | None = None,
    method_options: dict[str, dict] | None = None,
    variants: dict[str, dict] | None = None,
    entropy: bool = False,
    alpha: float = 0.1,
    classes: list[int] | None = None,
    limit: int | None = None,
    fit_images: int | None = DEFAULT_FIT_IMAGES,
    fit_classes: list[int] | None = None,
    crop_to_box: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    backend: str = "auto",
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict:
    """Score keypoint methods on a CUB-200-2011-layout split.

    Args:
        data: CUB-layout folder (``images.txt``, ``parts/part_locs.txt``, ...).
        split: ``train``, ``test`` or ``all``.
        weights: checkpoint (None = shipped weights), or several: LMPNet then fuses the
            proposals of every pair and averages their logits (an ensemble, an extension;
            :class:`lmpcli.methods.LMPNetMethod`); the other methods, the baselines and
            ``entropy`` use the first.
        methods: keypoint methods to score (see :data:`lmpcli.methods.METHODS`).
        baselines: also score :data:`BASELINES` on the same images.
        settings: keypoint settings (:class:`lmpcli.settings.KeypointSettings`; None fields and
            None: the checkpoint's, the erase radius rescaled to the grid the networks run at,
            :func:`lmpcli.settings.resolve_settings`): ``k`` for every method; ``thr`` (cells),
            ``num_filters``, ``iterations``, ``subcell``, ``refine``, ``gate``, ``replica``, ``flip``
            and ``members`` for LMPNet; ``output_stride`` (16: twice as fine maps from the same
            weights, docs/quality-log.md section 15) and ``image_size`` (section 21) for the networks.
        method_options: ``{method name: constructor keywords}`` for the other methods, e.g.
            ``{"occlusion-gbp": {"input_size": 112}, "cam": {"nms_radius": 1}}``.
        variants: extra LMPNet rows, ``{row name: changes}``: the row's settings are
            ``dataclasses.replace(settings, **changes)``, any field but ``output_stride`` and
            ``image_size`` (the networks run at one grid), e.g. ``{"thr3": {"thr": 3.0},
            "no-fusion": {"replica": False}, "first": {"members": 1}}`` (``members``: fuse only the
            first n of ``weights``); they share the networks' forward passes, so a test-time sweep
            costs about one evaluation.
        entropy: also report the mean entropy of the main network's normalised feature maps
            (Fig. 6) on the same images: over all filters, over the maps that fire, and over
            the top-``num_filters`` selected filters (in ``config``; nats).
        alpha: PCK radius as a fraction of the shorter image side.
        classes: only these CUB class ids (e.g. classes held out from training).
        limit: evaluate ``limit`` images spread evenly over the split (quick checks; every class).
        backend: network runtime, ``auto`` (ONNX Runtime on the CPU, torch on CUDA), ``torch``
            or ``onnxruntime`` (:mod:`lmpcli.backends`; docs/speed.md).
        workers: image-decoding processes (None = :func:`lmpcli.inference.default_workers`).
        fit_images: train-split images (spread evenly, every class; None = all) each method
            also runs on to fit the Kp regressors (:mod:`lmpcli.part_metrics`); 0 = no Kp, NMI,
            ARI columns and no mean-landmark row. On ``split="train"`` or ``"all"`` the fit images
            are among the scored ones (an in-sample Kp).
        fit_classes: CUB class ids of the train images the Kp regressors are fit on; None: the
            same as ``classes``. The class-held-out check fits them on the seen classes and scores
            the unseen ones (``classes=41-50, fit_classes=1-40``; docs/part-metrics.md).
        crop_to_box: evaluate (and fit) on images cropped to their ground-truth box: keypoints
            in pixels of the crop, PCK radius ``alpha`` times the crop's shorter side.

    Returns:
        ``{"table": DataFrame (one row per method: KP1..KPk, avg, recall, per-group
        recall, acc, images/s), "landing": DataFrame, "config": {...}}``; PCK and recall in
        percent; acc and images/s are NaN for a method that runs no network (``centre``).
        ``landing`` has one row per method and keypoint rank (columns ``method``, ``rank``,
        one per part group, ``miss``): the percentage of images whose keypoint of that rank
        has its nearest visible part within α in that group (:func:`lmpcli.metrics.nearest_part`);
        a row's groups sum to its greedy PCK and ``miss`` is the rest. With ``fit_images``,
        ``table`` also has columns ``Kp``, ``NMI``, ``ARI`` (:data:`lmpcli.part_metrics.PART_COLUMNS`:
        Huang & Li's landmark regression error, and NMI / ARI adapted to points; the method's
        output order is its keypoint identity) and a last row ``mean-landmark`` (the no-feature
        regressor; only ``Kp``). Rows of methods with a part model (``parts``) also have
        ``NMI_map``, ``ARI_map`` (:data:`lmpcli.meters.MAP_COLUMNS`, with or without
        ``fit_images``): each visible landmark takes the part of the part-assignment map at its
        location (:meth:`lmpcli.parts.PartModel.assign`), PDiscoNet's protocol, and
        ``config["part_models"]`` records each such row's part model (``k``, ``method``, ``maps``,
        ``location``).

    Raises:
        InputError: not a CUB folder, unknown split, no images.
        CheckpointError: missing or foreign checkpoint.
        ValueError: a variant named like a method, an unknown variant setting or one that changes
            the grid, a bad setting, an unsupported ``output_stride`` (BackboneError for a ResNet
            backbone) or ``image_size``.

    Under torchrun with several processes each process scores one contiguous block of the
    images (:func:`lmpcli.shards.shard_bounds`, no padding) and every process returns the report
    of all of them, gathered per image in image order: each image counted once.
    ``images_per_s`` is then per process.
    """
    ctx, dev = init_distributed(device, backend="gloo")  # only Python objects are gathered
    progress = (progress or NullProgress()) if ctx.is_main else NullProgress()
    (model, *ensemble), ckpt = load_for_inference(weights, dev, settings, backend)
    cfg = model.config
    root = Path(data)
    if not (root / "images.txt").is_file():
        raise InputError(f"{data} is not a CUB-200-2011-layout folder (no images.txt)")
    transform = eval_transform(cfg.image_size, cfg.mean, cfg.std)
    dataset = CUBDataset(root, split, transform, classes=classes, crop_to_box=crop_to_box)
    if len(dataset) == 0:
        raise InputError(f"no images in split {split!r} of {data}")
    label_map = None
    if dataset.class_names != ckpt["class_names"]:  # evaluate on other classes: map by name when possible
        index = {n: i for i, n in enumerate(ckpt["class_names"])}
        label_map = torch.tensor([index.get(n, -1) for n in dataset.class_names])
    if limit:
        dataset = torch.utils.data.Subset(dataset, spread_subset(len(dataset), limit))
    total, bounds = len(dataset), shard_bounds(len(dataset), ctx.rank, ctx.world_size)
    if ctx.distributed:
        dataset = torch.utils.data.Subset(dataset, range(*bounds))
    names = list(dict.fromkeys([*methods, *(BASELINES if baselines else ())]))
    extra = method_options or {}
    kp_methods = [create_method(n, model, settings, **({"ensemble": ensemble} if n == "lmpnet" else {}),
                                **extra.get(n, {})) for n in names]
    for vname, changes in (variants or {}).items():
        if vname in names:
            raise ValueError(f"variant name {vname!r} is already a method row")
        kp_methods.append(LMPNetMethod(model, variant_settings(settings, vname, changes), name=vname, ensemble=ensemble))
        names.append(vname)
    resolved = next((m.settings for m in kp_methods if isinstance(m, LMPNetMethod)), model.resolve(settings))
    meters = {n: KeypointMeter(alpha) for n in names}
    entropy_meter = EntropyMeter(resolved.num_filters) if entropy else None
    part_maps = {m.name: m for m in kp_methods if getattr(m, "part_model", None) is not None}  # NMI_map / ARI_map
    map_meters = {n: PartAssignmentMeter() for n in part_maps}
    truth: dict[str, list] = {"keypoints": [], "visible": [], "box": []}  # for the Kp regressors
    loader = make_loader(dataset, batch_size, workers, _collate, dev)
    progress.start(f"evaluate {', '.join(names)}", len(dataset))
    try:
        for batch, results, cache in iterate(loader, kp_methods, dev, with_cache=True):
            if entropy_meter is not None:
                entropy_meter.update(cache["main"][1] if "main" in cache else model.main(batch["image"].to(dev))[1])
            labels = batch["label"] if label_map is None else label_map[batch["label"]]
            for n, res in results.items():
                meters[n].update(res["xy"], batch["keypoints"], batch["visible"], batch["size"],
                                 logits=res["logits"], labels=labels, seconds=res["seconds"])
            points = batch["keypoints"] / batch["size"][:, None, :].float()
            for n, m in part_maps.items():
                maps = m.part_features(batch["image"], cache)[1]  # from the batch's cache: no new forward
                map_meters[n].update(m.part_model.assign(maps, points, m.model.cell_centre()), batch["visible"])
            for key in truth:
                truth[key].append(batch[key])
            progress.advance(len(batch["path"]))
    finally:
        progress.finish()
    n_images = meters[names[0]].images
    if ctx.distributed:
        merged = gather_meters([*meters.values(), *map_meters.values(), *([entropy_meter] if entropy_meter else [])],
                               n_images, bounds, total, ctx)
        meters, n_images = dict(zip(names, merged)), total
        map_meters = dict(zip(map_meters, merged[len(names):len(names) + len(map_meters)]))
        entropy_meter = merged[-1] if entropy_meter else None
        close_distributed(ctx)
    part_rows, n_fit = {}, 0
    if fit_images != 0 and not ctx.distributed:  # Kp / NMI / ARI need every rank's keypoints: not under torchrun
        fit_data = fit_subset(CUBDataset(root, "train", transform, classes=classes if fit_classes is None else fit_classes,
                                         crop_to_box=crop_to_box), fit_images)
        if len(fit_data) == 0:
            raise InputError(f"no train-split images in {data} to fit the Kp regressors; pass --fit-images 0")
        fit = collect_predictions(fit_data, kp_methods, dev, batch_size=batch_size, workers=workers, progress=progress)
        test = {"xy": {n: m.xy() for n, m in meters.items()}, **{key: torch.cat(v) for key, v in truth.items()}}
        part_rows, n_fit = part_metric_rows(fit, test, names), len(fit_data)
    rows = [{"method": n, **meters[n].compute(), **part_rows.pop(n, {}),
             **(map_meters[n].compute() if n in map_meters else {})} for n in names]
    landing = [{"method": n, **r} for n in names for r in meters[n].landing()]
    rows += [{"method": n, **r} for n, r in part_rows.items()]  # the mean-landmark row

    checkpoints = [str(p or "shipped") for p in checkpoint_paths(weights)]
    config = {"data": str(data), "split": split, "images": n_images, "alpha": alpha, **resolved.to_dict(),
              "weights": checkpoints[0] if len(checkpoints) == 1 else checkpoints, "device": str(dev), "backend": resolve_backend(backend, dev), "backbone": cfg.backbone,
              "classes": classes, "feature_map": cfg.image_size // cfg.output_stride,
              "method_options": {n: o for n, o in extra.items() if n in names}, "variants": variants or {},
              "crop_to_box": crop_to_box, "fit_images": n_fit,
              "fit_classes": classes if fit_classes is None else fit_classes,
              "part_models": {n: {"k": m.part_model.k, "method": m.part_model.method, "maps": m.part_model.maps,
                                  "location": m.part_model.location}
                              for n, m in part_maps.items()}}
    if entropy_meter is not None:
        config["entropy"] = entropy_meter.compute()
    return {"table": pd.DataFrame(rows), "landing": pd.DataFrame(landing), "config": config}


def variant_settings(base: KeypointSettings | None, name: str, changes: dict) -> KeypointSettings:
    """The settings of variant row ``name``: ``dataclasses.replace(base, **changes)``.

    Raises:
        ValueError: a change that is not a keypoint setting, or one of the grid (``output_stride``,
            ``image_size``: the networks of one run run at one grid).
    """
    grid = {"output_stride", "image_size"} & set(changes)
    if grid:
        raise ValueError(f"variant {name!r}: {', '.join(sorted(grid))} cannot change within one run")
    try:
        return replace(base if base is not None else KeypointSettings(), **changes)
    except TypeError:
        known = ", ".join(f.name for f in fields(KeypointSettings))
        raise ValueError(f"variant {name!r}: unknown setting in {sorted(changes)}; choose among {known}") from None


def write_report(report: dict, out: str | Path, overwrite: bool = False) -> None:
    """Write the evaluation table as CSV, or as JSON for ``.json`` (config, table records and,
    when present, the ``landing`` records of :func:`evaluate`).

    Raises:
        OutputError: existing file without ``overwrite``, unwritable folder.
    """
    path = check_writable(out, overwrite)
    if path.suffix.lower() == ".json":
        doc = {"config": report["config"], "results": report["table"].to_dict("records")}
        if "landing" in report:
            doc["landing"] = report["landing"].to_dict("records")
        text = json.dumps(doc, indent=1)
        atomic_write_text(path, text + "\n")
    else:
        atomic_write_text(path, report["table"].to_csv(index=False, float_format="%.2f"))
