"""Named landmarks: Huang & Li's Kp regressors fit from a few labelled images, applied to new images.

This is the only place in ``lmp`` where keypoint labels enter: ``lmp fit-landmarks`` runs a
keypoint method (trained from class labels only) on N labelled images, fits one linear map per
landmark from the method's keypoints to that landmark (:func:`lmpcli.landmarks.fit_landmark_regressor`)
and stores the maps in a plain JSON file; ``lmp predict --landmarks FILE`` applies them and writes
the landmarks by name (beak, crown, left eye ... from the annotation file).

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

from .choices import NORMALISATIONS  # frames of the named landmarks (first: the default)
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


def save_landmarks(path: str | Path, regressor: LandmarkRegressor, meta: dict, overwrite: bool = False) -> Path:
    """Write fitted regressors as JSON (:data:`FORMAT`), atomically.

    Args:
        meta: settings to store beside the arrays (``method``, ``k``, ``normalisation``,
            ``weights``, ``images`` ...); ``method``, ``k`` and ``normalisation`` are required to apply them.

    Raises:
        OutputError: ``path`` exists without ``overwrite``, or its folder cannot be written.
    """
    path = check_writable(path, overwrite)
    doc = {"format": FORMAT, **meta, "names": regressor.names,
           "fit_counts": [int(c) for c in regressor.fit_counts],
           **{key: getattr(regressor, key).tolist() for key in ("in_mean", "in_scale", "out_mean", "out_scale", "coef")}}
    atomic_write_text(path, json.dumps(doc) + "\n")
    return path


def load_landmarks(path: str | Path) -> tuple[LandmarkRegressor, dict]:
    """Read a file of :func:`save_landmarks`.

    Returns:
        (regressor, meta: the stored settings).

    Raises:
        InputError: missing, unreadable or not an ``lmp fit-landmarks`` file.
    """
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != FORMAT:
            raise KeyError("format")
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
        weights, method, k: the checkpoint and keypoint method whose keypoints are regressed
            (their output order is the identity; see :data:`lmpcli.methods.METHODS`).
        normalisation: the frame at fit and predict time (:data:`NORMALISATIONS`).

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
    check_writable(out, overwrite)
    dev = resolve_device(device)
    (model, *_), _ = load_for_inference(weights, dev)
    cfg = model.config
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
    kp_method = create_method(method, model, KeypointSettings(k=k))
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


#: CSV columns of ``lmp predict --landmarks``.
LANDMARK_CSV_COLUMNS = ["image", "landmark", "x", "y"]


def add_landmarks(item, regressor: LandmarkRegressor, meta: dict) -> list[list]:
    """Attach one predicted image's named landmarks and return its CSV rows.

    Args:
        item: :class:`lmpcli.predict.ImageKeypoints`; gets ``extras["landmarks"] =
            {"landmarks": {name: [x, y]}}`` (pixels of the original image, 2 decimals).
        regressor, meta: from :func:`load_landmarks`.

    Returns:
        rows ``[image, landmark, x, y]`` (:data:`LANDMARK_CSV_COLUMNS`).
    """
    xy = apply_named_landmarks(regressor, item.xy[None].astype(np.float64), [[item.width, item.height]],
                               meta["normalisation"])[0]
    named = {name: [round(float(x), 2), round(float(y), 2)] for name, (x, y) in zip(regressor.names, xy)}
    item.extras["landmarks"] = {"landmarks": named}
    return [[item.image, name, x, y] for name, (x, y) in named.items()]
