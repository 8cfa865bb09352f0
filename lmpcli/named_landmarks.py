"""Named landmarks: Huang & Li's Kp regressors fit from a few labelled images, applied to new images.

This is the only place in ``lmp`` where keypoint labels enter. ``lmp fit-landmarks`` fits one of
two landmark models (:data:`LANDMARK_MODELS`) on N labelled images and stores it in a plain JSON
file; ``lmp predict --landmarks FILE`` applies it and writes the landmarks by name (beak, crown,
left eye ... from the annotation file):

* ``regression``: runs a keypoint method (trained from class labels only) and fits one linear map
  per landmark from the method's keypoints to that landmark
  (:func:`lmpcli.landmarks.fit_landmark_regressor`, Huang & Li's Kp regressors).
* ``prototypes``: the mean descriptor of the main network's final-conv and mid-level maps at each
  labelled landmark; on a new image the landmark sits at the cell most like it, and is reported
  absent when no cell is (:func:`fit_landmark_prototypes`; docs/quality-log.md sections 37 and 38).

At predict time there is no ground-truth box, so coordinates are normalised by a frame every
image has (:data:`NORMALISATIONS`): ``image`` (default) divides by the image's width and height;
``keypoints`` by the box of the image's own predicted keypoints. The regressors are fit in the
same frame. ``benchmarks/part_metrics.py`` scores both against the ground-truth box, the unit of
the evaluation protocol (docs/part-metrics.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .choices import LANDMARK_MODELS, NORMALISATIONS  # landmark models and frames (first: the defaults)
from .data import CUBDataset, InputError, eval_transform, load_rgb
from .landmarks import LandmarkRegressor, fit_landmark_regressor, normalise_to_box
from .outputs import atomic_write_text, check_writable

FORMAT = "lmp-landmarks/1"


def reference_boxes(xy, sizes, normalisation: str = "image") -> torch.Tensor:
    """The frame each image's coordinates are normalised by, as ``(x, y, w, h)`` boxes.

    Args:
        xy: (N, K, 2) predicted keypoints, pixels of the original image; NaN = absent.
        sizes: (N, 2) image (W, H).
        normalisation: ``image``: the whole image; ``keypoints``: the bounding box of the
            image's present keypoints, each side at least a tenth of the shorter image side
            (the whole image when fewer than two keypoints are present).

    Returns:
        (N, 4) float64 boxes in pixels.

    Raises:
        ValueError: unknown ``normalisation``.
    """
    xy = torch.as_tensor(xy, dtype=torch.float64)
    sizes = torch.as_tensor(sizes, dtype=torch.float64)
    image = torch.cat([torch.zeros_like(sizes), sizes], 1)
    if normalisation == "image":
        return image
    if normalisation != "keypoints":
        raise ValueError(f"unknown normalisation {normalisation!r}; choose one of {', '.join(NORMALISATIONS)}")
    present = ~xy.isnan().any(-1)  # (N, K)
    lo = torch.where(present[..., None], xy, torch.inf).amin(1)
    hi = torch.where(present[..., None], xy, -torch.inf).amax(1)
    side = (hi - lo).clamp_min(0.1 * sizes.amin(1, keepdim=True))
    centre = (lo + hi) / 2
    box = torch.cat([centre - side / 2, side], 1)
    return torch.where((present.sum(1) >= 2)[:, None], box, image)


def fit_named_landmarks(xy, sizes, landmarks, visible, names: list[str], normalisation: str = "image") -> LandmarkRegressor:
    """Fit the landmark regressors in the predict-time frame.

    Args:
        xy: (N, K, 2) keypoints of the labelled images, original pixels, method order; NaN = absent.
        sizes: (N, 2) (W, H). landmarks: (N, L, 2) labelled landmarks, pixels. visible: (N, L) bool.
        names: L landmark names. normalisation: see :func:`reference_boxes`.

    Returns:
        :class:`lmpcli.landmarks.LandmarkRegressor`.

    Raises:
        ValueError: a landmark labelled on none of the images; an unknown normalisation.
    """
    boxes = reference_boxes(xy, sizes, normalisation)
    return fit_landmark_regressor(normalise_to_box(xy, boxes), normalise_to_box(landmarks, boxes), visible, names)


def apply_named_landmarks(regressor: LandmarkRegressor, xy, sizes, normalisation: str = "image") -> np.ndarray:
    """Named landmarks of new images.

    Args:
        xy: (N, K, 2) keypoints, original pixels, the order the regressor was fit on; NaN = absent.
        sizes: (N, 2) (W, H).

    Returns:
        (N, L, 2) float64 landmarks (x, y) in pixels of the original image.
    """
    boxes = reference_boxes(xy, sizes, normalisation).numpy()
    pred = regressor.predict(normalise_to_box(xy, boxes))
    return pred * boxes[:, None, 2:] + boxes[:, None, :2]


def landmark_regression_error(fit: dict, test: dict, method: str, normalisation: str = "image") -> float:
    """Kp of named landmarks: fit in the predict-time frame, error in units of the ground-truth box.

    Args:
        fit, test: dicts of :func:`lmpcli.part_metrics.collect_predictions`.
        method: key of ``xy``. normalisation: see :func:`reference_boxes`.

    Returns:
        mean L2 distance over visible test landmarks, per axis divided by the ground-truth box,
        x 100 (the unit of Huang & Li's Kp; NaN when a landmark is visible on no fit image).
    """
    try:
        reg = fit_named_landmarks(fit["xy"][method], fit["size"], fit["keypoints"], fit["visible"], [], normalisation)
    except ValueError:
        return float("nan")
    pred = apply_named_landmarks(reg, test["xy"][method], test["size"], normalisation)
    box = test["box"].numpy().astype(np.float64)
    d = np.linalg.norm((pred - test["keypoints"].numpy()) / box[:, None, 2:], axis=-1)
    return 100.0 * float(d[test["visible"].numpy()].mean())


def landmark_descriptors(features: torch.Tensor, points, image_size: tuple[int, int], cell_centre: float = 0.5,
                         centred: bool = True, mid_channels: int = 0) -> torch.Tensor:
    """Descriptors of the main network's maps at labelled landmark locations.

    Args:
        features: (N, C, h, w) final-conv maps (float16 or float32).
        points: (N, L, 2) landmark (x, y) in pixels of the network input (NaN allowed: rows of
            unlabelled landmarks are returned but meaningless).
        image_size: (H, W) of the network input, pixels.
        cell_centre: where a cell sits, fraction of the stride (:func:`lmpcli.head.cells_to_pixels`).
        centred: compare cells as the ``kmeans-centred`` part model does
            (:func:`lmpcli.parts.centred_descriptors`); False: the raw cells, L2-normalised.
        mid_channels: the last ``mid_channels`` of ``features`` are the mid-level map, stacked
            after the final map (:func:`lmpcli.parts.stack_maps`; centred descriptors only).

    Returns:
        (N, L, C) float32 unit descriptors: the bilinear sample of the (centred, normalised) cell
        descriptors at each point (``grid_sample``, ``align_corners=False``, border padding).
    """
    from .parts import centred_descriptors

    f = features.float()
    n, c, h, w = f.shape
    flat = f.flatten(2).transpose(1, 2)  # (N, hw, C)
    if centred:
        cells = centred_descriptors(flat, flat[..., : c - mid_channels].sum(-1), mid_channels)
    else:
        cells = torch.nn.functional.normalize(flat, dim=-1)
    maps = cells.transpose(1, 2).reshape(n, c, h, w)
    pts = torch.nan_to_num(torch.as_tensor(points, dtype=torch.float32))
    cell = pts / pts.new_tensor([image_size[1] / w, image_size[0] / h]) - cell_centre  # (N, L, 2) cell coordinates
    grid = (2 * cell + 1) / pts.new_tensor([w, h]) - 1  # grid_sample's [-1, 1], align_corners=False
    out = torch.nn.functional.grid_sample(maps, grid[:, :, None, :], mode="bilinear", padding_mode="border",
                                          align_corners=False)  # (N, C, L, 1)
    return torch.nn.functional.normalize(out[..., 0].transpose(1, 2), dim=-1)


def balanced_threshold(peaks: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """The response threshold that best tells labelled from unlabelled images.

    Args:
        peaks: (N,) float peak responses of one landmark on N images.
        visible: (N,) bool, where the landmark is labelled; both values must occur.

    Returns:
        0-d tensor: the lowest of the peaks that maximise the balanced accuracy
        ``(P(peak >= t | labelled) + P(peak < t | unlabelled)) / 2``.
    """
    order = peaks.argsort()
    p, y = peaks[order], visible[order].float()
    pos_below = torch.cumsum(y, 0) - y  # labelled images strictly below each candidate
    neg_below = torch.cumsum(1 - y, 0) - (1 - y)
    score = (y.sum() - pos_below) / y.sum() + neg_below / (1 - y).sum()
    return p[int(score.argmax())]


def fit_landmark_prototypes(features: torch.Tensor, points, visible, image_size: tuple[int, int],
                            cell_centre: float = 0.5, centred: bool = True, threshold: str = "labels",
                            chunk: int = 64, mid_channels: int = 0):
    """One prototype per landmark from N labelled images: a part model whose parts are named landmarks.

    The prototype of landmark l is the L2-normalised mean of :func:`landmark_descriptors` over
    the images where l is labelled. Applied with :meth:`lmpcli.parts.PartModel.locate`: response
    = the cell's cosine with the prototype (``kmeans-centred``: times the cell's channel sum
    relative to the image's strongest cell; raw cells: the ``kmeans`` response), the landmark at
    the peak's 3 x 3 sub-cell centroid, absent below a threshold learnt from the labelled images
    (``threshold``).

    Args:
        features: (N, C, h, w) final-conv maps of the labelled images.
        points: (N, L, 2) labelled (x, y), pixels of the network input. visible: (N, L) bool.
        image_size, cell_centre, centred, mid_channels: see :func:`landmark_descriptors`
            (with ``mid_channels``, ``features`` are the final and mid-level maps stacked).
        threshold: ``labels`` (default; quality log 37 item 1c): absent below the peak that best
            separates the images where the landmark is labelled from those where it is not
            (:func:`balanced_threshold`); ``median``, and for a landmark labelled on every image:
            below :data:`lmpcli.parts.VISIBLE_FRACTION` of its median peak where labelled.

    Returns:
        :class:`lmpcli.parts.PartModel` with K = L rows in landmark order.

    Raises:
        ValueError: a landmark labelled on none of the images, or shapes that do not match.
    """
    from .parts import PartModel, calibrate

    visible = torch.as_tensor(visible, dtype=torch.bool)
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.shape[:2] != visible.shape or len(points) != len(features):
        raise ValueError(f"points {tuple(points.shape)}, visible {tuple(visible.shape)} and "
                         f"{len(features)} maps do not match")
    counts = visible.sum(0)
    if (counts == 0).any():
        raise ValueError(f"landmarks {torch.nonzero(counts == 0).flatten().tolist()} are labelled on none of the images")
    total = torch.zeros(points.shape[1], features.shape[1])
    for i in range(0, len(features), chunk):
        d = landmark_descriptors(features[i: i + chunk], points[i: i + chunk], image_size, cell_centre, centred,
                                 mid_channels)
        total += (d * visible[i: i + chunk, :, None]).sum(0)
    proto = torch.nn.functional.normalize(total, dim=1)
    model = PartModel("kmeans-centred" if centred else "kmeans", proto, torch.zeros(len(proto)), torch.ones(len(proto)),
                      mid_channels=int(mid_channels) if centred else 0)
    peaks = calibrate(model, features, visible)  # the median rule; (N, L) peaks
    if threshold == "labels":
        for j in torch.nonzero(~visible.all(0)).flatten().tolist():
            model.threshold[j] = balanced_threshold(peaks[:, j], visible[:, j])
    model.meta = {"images": len(features), "fit_counts": counts.tolist()}
    return model


def save_landmarks(path: str | Path, regressor, meta: dict, overwrite: bool = False, names: list[str] | None = None) -> Path:
    """Write a fitted landmark model as JSON (:data:`FORMAT`), atomically.

    Args:
        regressor: :class:`lmpcli.landmarks.LandmarkRegressor` (``regression``) or the
            :class:`lmpcli.parts.PartModel` of :func:`fit_landmark_prototypes` (``prototypes``;
            stored under ``"prototypes"`` with ``names``).
        meta: settings to store beside the arrays (``method``, ``k``, ``normalisation``,
            ``weights``, ``images`` ...); for ``regression``, ``method``, ``k`` and ``normalisation``
            are required to apply them.
        names: landmark names of a ``prototypes`` model.

    Raises:
        OutputError: ``path`` exists without ``overwrite``, or its folder cannot be written.
    """
    from .parts import PartModel

    path = check_writable(path, overwrite)
    if isinstance(regressor, PartModel):
        d = regressor.to_dict()
        doc = {"format": FORMAT, **meta, "model": "prototypes", "names": list(names or []),
               "fit_counts": [int(c) for c in regressor.meta.get("fit_counts", [])],
               "prototypes": {**{key: d[key].tolist() for key in ("projection", "threshold", "scale")},
                              "method": d["method"], "mid_channels": d["mid_channels"]}}
    else:
        doc = {"format": FORMAT, **meta, "model": "regression", "names": regressor.names,
               "fit_counts": [int(c) for c in regressor.fit_counts],
               **{key: getattr(regressor, key).tolist() for key in ("in_mean", "in_scale", "out_mean", "out_scale", "coef")}}
    atomic_write_text(path, json.dumps(doc) + "\n")
    return path


def load_landmarks(path: str | Path) -> tuple:
    """Read a file of :func:`save_landmarks`.

    Returns:
        (model, meta: the stored settings, with ``"model"``: ``regression`` (model: a
        :class:`lmpcli.landmarks.LandmarkRegressor`) or ``prototypes`` (model: a
        :class:`lmpcli.parts.PartModel`; ``meta["names"]``: its landmark names)).

    Raises:
        InputError: missing, unreadable or not an ``lmp fit-landmarks`` file.
    """
    from .parts import PartModel

    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != FORMAT:
            raise KeyError("format")
        doc.setdefault("model", "regression")  # files written before the prototypes
        if doc["model"] == "prototypes":
            d = doc.pop("prototypes")
            model = PartModel.from_dict({"method": d["method"], "mid_channels": d.get("mid_channels", 0),
                                         **{key: torch.tensor(d[key], dtype=torch.float32)
                                            for key in ("projection", "threshold", "scale")}})
            if len(doc["names"]) != model.k:
                raise ValueError(f"{len(doc['names'])} names for {model.k} prototypes")
            return model, doc
        arrays = {key: np.asarray(doc.pop(key), dtype=np.float64) for key in
                  ("in_mean", "in_scale", "out_mean", "out_scale", "coef")}
        n_lm, dim = arrays["in_mean"].shape
        arrays["coef"] = arrays["coef"].reshape(n_lm, dim, 2)
        reg = LandmarkRegressor(**arrays, names=doc.pop("names"), fit_counts=np.asarray(doc.pop("fit_counts")))
        for key in ("method", "k", "normalisation"):
            doc[key]  # noqa: B018 - required
    except FileNotFoundError:
        raise InputError(f"landmarks file {path} not found") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path} is not an lmp fit-landmarks file ({type(e).__name__}: {e})") from None
    return reg, doc


class CocoKeypointDataset(Dataset):
    """Images with keypoint labels from a COCO-keypoints JSON file (for ``lmp fit-landmarks``).

    Uses ``images`` (``id``, ``file_name``), the first annotation with keypoints per image
    (``keypoints``: flat ``[x, y, v] * L`` in pixels; a landmark counts as labelled when v > 0) and
    the landmark names of the first category's ``keypoints`` list (default ``landmark1..L``).

    Args:
        annotations: the JSON file. images: folder ``file_name`` is relative to (default: the
            JSON file's folder). transform: ``transform(image, keypoints)`` as for CUBDataset.

    Items: ``image``, ``size`` (W, H), ``orig_keypoints`` (L, 2), ``visible`` (L,), ``box``
    (the annotation's ``bbox`` or the whole image), ``path``.

    Raises:
        InputError: unreadable JSON, no image with keypoint labels, a missing image file.
    """

    def __init__(self, annotations: str | Path, images: str | Path | None = None, transform=None) -> None:
        try:
            doc = json.loads(Path(annotations).read_text())
            anns = [a for a in doc["annotations"] if sum(a.get("keypoints", [])[2::3]) > 0]
            files = {im["id"]: im["file_name"] for im in doc["images"]}
        except FileNotFoundError:
            raise InputError(f"annotation file {annotations} not found") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{annotations} is not a COCO keypoints file ({type(e).__name__}: {e})") from None
        first: dict = {}
        for a in anns:
            first.setdefault(a["image_id"], a)
        if not first:
            raise InputError(f"{annotations} has no annotation with keypoint labels")
        root = Path(images) if images is not None else Path(annotations).parent
        self.items = [(root / files[i], a) for i, a in first.items() if i in files]
        n_lm = len(self.items[0][1]["keypoints"]) // 3
        cats = doc.get("categories") or [{}]
        self.part_names = list(cats[0].get("keypoints") or [f"landmark{i + 1}" for i in range(n_lm)])
        if len(self.part_names) != n_lm:
            raise InputError(f"{annotations}: {len(self.part_names)} keypoint names but {n_lm} keypoints per annotation")
        kp = torch.tensor([a["keypoints"] for _, a in self.items], dtype=torch.float32).view(len(self.items), n_lm, 3)
        self.keypoints, self.visible = kp[..., :2], kp[..., 2] > 0
        missing = [str(p) for p, _ in self.items if not p.is_file()]
        if missing:
            raise InputError(f"{len(missing)} labelled images not found, e.g. {missing[0]}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, ann = self.items[index]
        image = load_rgb(path)
        w, h = image.size
        box = torch.tensor(ann.get("bbox") or [0.0, 0.0, w, h], dtype=torch.float32)
        from torchvision import tv_tensors

        kp = tv_tensors.KeyPoints(self.keypoints[index], canvas_size=(h, w))
        if self.transform is not None:
            image, kp = self.transform(image, kp)
        return {"image": image, "size": torch.tensor([w, h], dtype=torch.float32),
                "orig_keypoints": self.keypoints[index], "visible": self.visible[index], "box": box, "path": str(path)}


def fit_landmarks(
    data: str | Path,
    out: str | Path,
    *,
    images: str | Path | None = None,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    weights: str | Path | None = None,
    method: str = "lmpnet",
    k: int = 5,
    normalisation: str = "image",
    model: str = "regression",
    batch_size: int = 8,
    device: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    progress=None,
) -> dict:
    """Fit named-landmark regressors from labelled images and store them (``lmp fit-landmarks``).

    Args:
        data: a CUB-200-2011-layout folder (its ``split`` and ``parts/part_locs.txt`` labels) or a
            COCO-keypoints ``.json`` file (images relative to ``images`` or the file's folder).
        out: the JSON file to write (:func:`save_landmarks`).
        limit: use N labelled images drawn at random with ``seed`` (None = all).
        weights, method, k: the checkpoint and, for ``regression``, the keypoint method whose
            keypoints are regressed (their output order is the identity; see
            :data:`lmpcli.methods.METHODS`).
        normalisation: the frame at fit and predict time of ``regression`` (:data:`NORMALISATIONS`).
        model: the landmark model (:data:`LANDMARK_MODELS`): ``regression`` (Huang & Li's linear maps
            from the method's keypoints) or ``prototypes`` (:func:`fit_landmark_prototypes` on the
            main network's maps; ``method``, ``k`` and ``normalisation`` unused).

    Returns:
        ``{"out": path, "images": N, "names": [...], "fit_counts": [...], "left_out": [...]}``:
        landmarks labelled on none of the images are left out of the file.

    Raises:
        InputError: no labelled images or landmarks, unreadable annotations.
        OutputError: ``out`` exists without ``overwrite``.
        CheckpointError: missing or foreign checkpoint.
    """
    from .device import resolve_device
    from .inference import load_for_inference
    from .methods import create_method
    from .part_metrics import collect_predictions
    from .settings import KeypointSettings

    if normalisation not in NORMALISATIONS:
        raise InputError(f"unknown normalisation {normalisation!r}; choose one of {', '.join(NORMALISATIONS)}")
    if model not in LANDMARK_MODELS:
        raise InputError(f"unknown landmark model {model!r}; choose one of {', '.join(LANDMARK_MODELS)}")
    check_writable(out, overwrite)
    dev = resolve_device(device)
    (net, *_), _ = load_for_inference(weights, dev)
    cfg = net.config
    transform = eval_transform(cfg.image_size, cfg.mean, cfg.std)
    if str(data).lower().endswith(".json"):
        dataset = CocoKeypointDataset(data, images, transform)
    else:
        dataset = CUBDataset(data, split, transform)
    names = dataset.part_names
    if limit is not None:
        if limit < 1:
            raise InputError(f"limit must be >= 1, got {limit}")
        pick = np.sort(np.random.default_rng(seed).choice(len(dataset), min(limit, len(dataset)), replace=False))
        dataset = torch.utils.data.Subset(dataset, pick.tolist())
    if len(dataset) == 0:
        raise InputError(f"no labelled images in {data}")
    if model == "prototypes":
        return _fit_prototypes_file(net, dataset, names, out, dev, batch_size, workers, progress, overwrite,
                                    {"weights": str(weights or "shipped"), "data": str(data), "images": len(dataset),
                                     "seed": seed if limit is not None else None})
    kp_method = create_method(method, net, KeypointSettings(k=k))
    pred = collect_predictions(dataset, [kp_method], dev, batch_size=batch_size, workers=workers,
                               progress=progress, label="fit-landmarks")
    labelled = pred["visible"].any(0)  # a landmark labelled on none of the images cannot be fit: left out
    if not labelled.any():
        raise InputError(f"no landmark is labelled on the {len(dataset)} images of {data}")
    kept = [n for n, ok in zip(names, labelled.tolist()) if ok]
    reg = fit_named_landmarks(pred["xy"][kp_method.name], pred["size"], pred["keypoints"][:, labelled],
                              pred["visible"][:, labelled], kept, normalisation)
    meta = {"method": method, "k": k, "normalisation": normalisation, "weights": str(weights or "shipped"),
            "data": str(data), "images": len(dataset), "seed": seed if limit is not None else None}
    save_landmarks(out, reg, meta, overwrite)
    return {"out": str(out), "images": len(dataset), "names": kept, "fit_counts": reg.fit_counts.tolist(),
            "left_out": [n for n in names if n not in kept]}


#: ``lmp fit-landmarks --model prototypes`` reads the mid-level map beside the final one (the
#: stride-16 block, :func:`lmpcli.parts.stack_maps`): Kp 2.1-2.9 lower at every N on cub50
#: (quality log section 38, item 9).
PROTOTYPES_READ_MID = True


def _fit_prototypes_file(net, dataset, names: list[str], out, dev, batch_size: int, workers, progress, overwrite: bool,
                         meta: dict) -> dict:
    """``lmp fit-landmarks --model prototypes``: maps of the labelled images, prototypes, the file."""
    from .inference import make_loader
    from .part_metrics import collate_labelled
    from .parts import extract_features
    from .progress import NullProgress

    progress = progress or NullProgress()
    size = net.config.image_size
    loader = make_loader(dataset, batch_size, workers, collate_labelled, dev)
    feats, points, visible = [], [], []
    progress.start("fit-landmarks (features)", len(dataset))
    try:
        for batch, f in extract_features(net, loader, progress, with_mid=PROTOTYPES_READ_MID):
            feats.append(f.half())
            points.append(batch["orig_keypoints"] * (size / batch["size"])[:, None, :])  # original -> network-input pixels
            visible.append(batch["visible"])
    finally:
        progress.finish()
    visible = torch.cat(visible)
    labelled = visible.any(0)
    if not labelled.any():
        raise InputError(f"no landmark is labelled on the {len(dataset)} images")
    kept = [n for n, ok in zip(names, labelled.tolist()) if ok]
    mid = int(net.main.backbone.mid_channels) if PROTOTYPES_READ_MID else 0
    protos = fit_landmark_prototypes(torch.cat(feats), torch.cat(points)[:, labelled], visible[:, labelled],
                                     (size, size), net.cell_centre(), mid_channels=mid)
    save_landmarks(out, protos, {**meta, "method": "parts", "k": len(kept)}, overwrite, names=kept)
    return {"out": str(out), "images": len(dataset), "names": kept, "fit_counts": protos.meta["fit_counts"],
            "left_out": [n for n in names if n not in kept]}


#: CSV columns of ``lmp predict --landmarks``.
LANDMARK_CSV_COLUMNS = ["image", "landmark", "x", "y"]


def add_landmarks(item, landmark_model, meta: dict) -> list[list]:
    """Attach one predicted image's named landmarks and return its CSV rows.

    Args:
        item: :class:`lmpcli.predict.ImageKeypoints`; gets ``extras["landmarks"] =
            {"landmarks": {name: [x, y] or None}}`` (pixels of the original image, 2 decimals; None:
            a ``prototypes`` landmark reported absent).
        landmark_model, meta: from :func:`load_landmarks`. For ``prototypes`` the item's keypoints
            are already the landmarks (``lmp predict`` ran the ``parts`` method with the prototypes).

    Returns:
        rows ``[image, landmark, x, y]`` (:data:`LANDMARK_CSV_COLUMNS`; x and y empty when absent).
    """
    if "landmarks" in item.extras:  # already attached (the annotated image was drawn first)
        named = item.extras["landmarks"]["landmarks"]
        return [[item.image, name, *(xy if xy is not None else ("", ""))] for name, xy in named.items()]
    if meta.get("model") == "prototypes":
        xy, names = item.xy.astype(np.float64), meta["names"]
    else:
        xy = apply_named_landmarks(landmark_model, item.xy[None].astype(np.float64), [[item.width, item.height]],
                                   meta["normalisation"])[0]
        names = landmark_model.names
    named = {name: [round(float(x), 2), round(float(y), 2)] if np.isfinite(x) else None
             for name, (x, y) in zip(names, xy)}
    item.extras["landmarks"] = {"landmarks": named}
    return [[item.image, name, *(xy if xy is not None else ("", ""))] for name, xy in named.items()]
