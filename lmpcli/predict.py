"""``lmp predict``: keypoints for image files, folders, globs or paths on stdin."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .data import ImagePathDataset, collate_skip_errors, eval_transform, expand_inputs, load_rgb
from .device import resolve_device
from .inference import iterate, load_for_inference, make_loader
from .methods import create_method
from .distributed import process_device
from .outputs import OutputError, atomic_write_image, draw_keypoints
from .progress import NullProgress, Progress
from .settings import KeypointSettings
from .shards import StreamedOutput, output_format, parse_shard, shard_from_env, shard_inputs, shard_path
from .validate import check_predict_call

CSV_COLUMNS = ["image", "rank", "x", "y", "score"]


@dataclass
class ImageKeypoints:
    """Keypoints of one image.

    Attributes:
        image: path as given.
        width, height: original image size, pixels, in the displayed frame (EXIF orientation applied).
        xy: (k, 2) float32 keypoints (x, y) in original-image pixels of the displayed frame, rank
            order; NaN = not found.
        score: (k,) confidences in [0, 1].
        class_index, class_name, class_prob: the main network's prediction (None for
            class-agnostic methods).
        orientation: the EXIF orientation tag applied before inference (1 = none).
    """

    image: str
    width: int
    height: int
    xy: np.ndarray
    score: np.ndarray
    class_index: int | None = None
    class_name: str | None = None
    class_prob: float | None = None
    extras: dict = field(default_factory=dict)
    orientation: int = 1

    def csv_rows(self) -> list[list]:
        return [[self.image, r + 1, round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                for r, ((x, y), s) in enumerate(zip(self.xy, self.score)) if math.isfinite(x)]

    def to_json(self) -> dict:
        """COCO-style record: ``keypoints`` is a flat list of [x, y, score] triplets in pixels of the
        displayed frame (``"frame": "displayed"``: EXIF orientation ``exif_orientation`` applied)."""
        trip: list[float] = []
        for (x, y), s in zip(self.xy, self.score):
            if math.isfinite(x):
                trip += [round(float(x), 2), round(float(y), 2), round(float(s), 4)]
        return {"image": self.image, "width": self.width, "height": self.height,
                "frame": "displayed", "exif_orientation": self.orientation, "num_keypoints": len(trip) // 3, "keypoints": trip,
                "category_id": self.class_index, "category": self.class_name,
                "score": None if self.class_prob is None else round(self.class_prob, 4)}


def predict_images(
    inputs: Iterable[str],
    *,
    weights: str | Path | Sequence[str | Path] | None = None,
    method: str = "lmpnet",
    settings: KeypointSettings | None = None,
    method_options: dict | None = None,
    batch_size: int = 8,
    device: str = "auto",
    backend: str = "auto",
    workers: int | None = None,
    stdin: Iterable[str] | None = None,
    on_error: Callable[[str, str], None] | None = None,
    progress: Progress | None = None,
) -> Iterator[ImageKeypoints]:
    """Yield :class:`ImageKeypoints` for every readable image, in input order.

    Args:
        inputs: image files, folders (searched recursively), glob patterns, or ``-`` for
            newline-separated paths on ``stdin``.
        weights: checkpoint path; None = the shipped weights; several paths: an LMPNet ensemble
            (extension): every pair's proposals are fused before one clustering and the class
            probabilities come from the averaged logits (docs/quality-log.md section 27).
        method: keypoint method name (see :data:`lmpcli.methods.METHODS`).
        settings: keypoint settings (:class:`lmpcli.settings.KeypointSettings`: ``k``, LMPNet's
            erase radius ``thr`` in cells, ``num_filters``, ``iterations``, ``subcell``, ``refine``,
            ``gate``, ``replica``, ``flip``, and the ``output_stride`` / ``image_size`` the networks
            run at, e.g. 16: twice as fine feature maps from the same weights, about 1.4x the
            forward time); None fields and None: the checkpoint's, the radius rescaled to the grid
            (:func:`lmpcli.settings.resolve_settings`). Methods other than ``lmpnet`` use ``k`` only.
        method_options: extra constructor keywords of the method (e.g. ``occluder_size``,
            ``input_size`` for ``occlusion-gbp``; ``nms_radius`` for ``cam``).
        backend: network runtime, ``auto`` (ONNX Runtime on the CPU, torch on CUDA), ``torch``
            or ``onnxruntime`` (:mod:`lmpcli.backends`; docs/speed.md).
        workers: image-decoding processes (None = :func:`lmpcli.inference.default_workers`).
        on_error: called as ``on_error(path, reason)`` for each unreadable file (skipped).

    Raises:
        InputError: missing paths, empty folders, no inputs.
        CheckpointError: missing or foreign checkpoint.
        ValueError, BackboneError: a bad setting, an unsupported ``output_stride`` or ``image_size``.
    """
    progress = progress or NullProgress()
    paths = expand_inputs(list(inputs), stdin)
    dev = resolve_device(device)
    (model, *ensemble), ckpt = load_for_inference(weights, dev, settings, backend)
    if ensemble and method != "lmpnet":
        raise ValueError(f"several --weights (an ensemble) work with the lmpnet method only, not {method!r}")
    names = ckpt["class_names"]
    options = {"ensemble": ensemble} if method == "lmpnet" else {}
    kp_method = create_method(method, model, settings, **options, **(method_options or {}))
    cfg = model.config
    dataset = ImagePathDataset(paths, eval_transform(cfg.image_size, cfg.mean, cfg.std), cfg.image_size)
    loader = make_loader(dataset, batch_size, workers, collate_skip_errors, dev)
    progress.start(f"predict ({method})", len(paths))
    try:
        for batch, results in iterate(loader, [kp_method], dev):
            for path, reason in batch["errors"]:
                if on_error is not None:
                    on_error(path, reason)
            if not results:
                progress.advance(len(batch["errors"]))
                continue
            res = results[kp_method.name]
            probs = None if res["logits"] is None else res["logits"].softmax(-1)
            for i, path in enumerate(batch["path"]):
                w, h = (int(v) for v in batch["size"][i].tolist())
                item = ImageKeypoints(path, w, h, res["xy"][i].numpy(), res["score"][i].numpy(),
                                      orientation=int(batch["orientation"][i]))
                if probs is not None:
                    p, c = probs[i].max(-1)
                    item.class_index, item.class_name, item.class_prob = int(c), names[int(c)], float(p)
                if "heatmaps" in res:
                    item.extras["heatmaps"] = tuple(m[i].numpy() for m in res["heatmaps"])
                yield item
            progress.advance(len(batch["path"]) + len(batch["errors"]))
    finally:
        progress.finish()


def _csv_text(rows: list[list], header: bool = True, columns: list[str] = CSV_COLUMNS) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


def run_predict(
    inputs: list[str],
    *,
    out: str | None = None,
    json_format: bool = False,
    jsonl: bool = False,
    vis_dir: str | Path | None = None,
    heatmaps_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    shard: str | tuple[int, int] | None = None,
    landmarks: str | Path | None = None,
    stdout=None,
    **options,
) -> dict:
    """Predict and write outputs; the body of ``lmp predict``.

    Args:
        out: output file (``.csv``, ``.jsonl`` or ``.json``), ``-`` for stdout, None for CSV on stdout.
        json_format: write one JSON array (also chosen by a ``.json`` suffix).
        jsonl: write JSON Lines, one image a line (also chosen by a ``.jsonl`` suffix); streams on stdout.
        vis_dir: folder for annotated images (created; existing files need ``overwrite``).
        heatmaps_dir: folder for heat-map panels (input | coarse | fine | keypoints, the
            poster's Fig. 2) of methods that make heat maps (``occlusion-gbp``).
        overwrite: replace existing output files.
        resume: continue the unfinished ``<out>.part`` of a killed run: skip the images it holds
            (see :class:`lmpcli.shards.StreamedOutput`); a finished ``out`` is left as it is.
        shard: ``"i/N"``: predict only shard i of N of the sorted inputs into
            ``<stem>.shard-0000i-of-0000N<suffix>`` (:mod:`lmpcli.shards`; join them with
            :func:`lmpcli.shards.merge_shards`). None: under torchrun with several processes,
            shard rank of world size (each process on ``cuda:LOCAL_RANK`` when on CUDA); else all.
        landmarks: a file of ``lmp fit-landmarks``: write its named landmarks instead of the
            keypoints (CSV ``image, landmark, x, y``; JSON ``"landmarks": {name: [x, y]}`` beside the
            keypoints; annotated images show the landmarks, numbered, with their names in the
            legend), using the file's method and ``k`` (:mod:`lmpcli.named_landmarks`); a
            ``prototypes`` file runs the ``parts`` method with its landmarks as the parts, and a
            landmark it reports absent has empty x, y (JSON ``null``).
        options: keywords of :func:`predict_images`.

    Every output location is checked before the model is loaded
    (:func:`lmpcli.validate.check_predict_call`): an output that is an input, or a folder that
    holds input images, is refused. A file output is streamed to ``<out>.part`` image by image and
    renamed to ``out`` when every image is done, so ``out`` is never half written and a killed run
    can be resumed; on stdout CSV rows and JSON Lines are streamed. Annotated images are named
    after their input (``_2``, ``_3``... for repeated names).

    Returns:
        ``{"images": n predicted now, "resumed": n skipped as already done, "errors": [(path, reason)],
        "seconds": t, "out": the file written (a shard's own name), "short": number of images with
        fewer than ``k`` keypoints (the method ran out of proposals), "k": keypoints asked for per image}``.

    Raises:
        UsageError: see :func:`lmpcli.validate.check_predict_call` (also ``resume`` or a shard,
            explicit or from torchrun, with no file ``out``).
        OutputError: existing output without ``overwrite``, an unfinished ``.part`` without
            ``resume``, unwritable folder, no image readable.
        InputError, CheckpointError: see :func:`predict_images`.
        ValueError: a bad ``shard``, both ``json_format`` and ``jsonl``.
    """
    stdout = stdout or sys.stdout
    to_stdout = out in (None, "-")
    fmt = output_format(out, json_format, jsonl)
    shard = shard_from_env() if shard is None else parse_shard(shard)
    # an existing out / annotated image is left to StreamedOutput when resuming or sharding
    checked = check_predict_call(inputs, out=out, vis_dir=vis_dir, heatmaps_dir=heatmaps_dir,
                                 overwrite=overwrite or resume or shard is not None, shard=shard, resume=resume,
                                 stdin=options.pop("stdin", None), **options)
    paths = checked["paths"]
    vis, heat = checked["vis"], checked["heatmaps"]
    if shard is not None:
        out = str(shard_path(out, *shard))
        paths = shard_inputs(paths, *shard)
        if not (overwrite or resume):  # the check above was left to this shard: its own images only
            mine = set(paths)
            for table in (vis, heat):
                for path, target in (table or {}).items():
                    if path in mine and Path(target).exists():
                        raise OutputError(f"{target} exists; pass --overwrite to replace it")
        options["device"] = process_device(options.get("device", "auto"))
    named = None
    if landmarks is not None:
        from .named_landmarks import LANDMARK_CSV_COLUMNS, add_landmarks, load_landmarks

        named = load_landmarks(landmarks)
        options.update(method=named[1]["method"],
                       settings=replace(options.get("settings") or KeypointSettings(), k=named[1]["k"]))
        if named[1]["model"] == "prototypes":  # the parts method with the landmarks as its parts
            options["method_options"] = {**(options.get("method_options") or {}), "part_model": named[0]}
    parts = options.get("method") == "parts"  # identities: one entry per part, absent ones kept
    if parts or named is not None:
        from .part_outputs import PART_CSV_COLUMNS, draw_parts, part_csv_rows, part_json
    columns = PART_CSV_COLUMNS if parts else CSV_COLUMNS
    csv_rows, to_json = (part_csv_rows, part_json) if parts else (ImageKeypoints.csv_rows, ImageKeypoints.to_json)
    draw = draw_parts if parts else draw_keypoints
    if named is not None:  # named landmarks replace the keypoint rows; JSON keeps both
        columns, keypoint_json = LANDMARK_CSV_COLUMNS, to_json

        def csv_rows(item):
            return add_landmarks(item, *named)

        def to_json(item):
            add_landmarks(item, *named)
            return {**keypoint_json(item), **item.extras["landmarks"]}
    sink = None if to_stdout else StreamedOutput(out, fmt, _csv_text([], columns=columns), resume=resume, overwrite=overwrite)
    start = time.perf_counter()
    if sink is not None and sink.complete:
        return {"images": 0, "resumed": 0, "errors": [], "seconds": 0.0, "out": out, "short": 0, "k": 0}
    done = sink.done if sink is not None else set()
    todo = [p for p in paths if p not in done]
    errors: list[tuple[str, str]] = []
    user_on_error = options.pop("on_error", None)

    def on_error(path: str, reason: str) -> None:
        errors.append((path, reason))
        if user_on_error is not None:
            user_on_error(path, reason)

    records: list[dict] = []
    n = short = k = 0
    header = True
    try:
        # the paths as expanded once (stdin is read once), passed as stdin lines so that a listed
        # file that has gone missing is reported and skipped, as any unreadable image
        for item in (predict_images(["-"], stdin=todo, on_error=on_error, **options) if todo else ()):
            n += 1
            k = len(item.xy)
            short += int(not parts and not np.isfinite(item.xy[:, 0]).all())  # parts keep absent ones as NaN
            if vis is not None or heat is not None:  # drawn before the rows: a resumed run skips images with rows
                import cv2

                bgr = cv2.cvtColor(np.asarray(load_rgb(item.image)), cv2.COLOR_RGB2BGR)
                label = None if item.class_name is None else f"{item.class_name} {item.class_prob:.2f}"
            if vis is not None:
                if named is not None:  # the named landmarks, numbered and named in the legend
                    add_landmarks(item, *named)
                    marks = item.extras["landmarks"]["landmarks"]
                    xy = np.array([v if v is not None else [np.nan, np.nan] for v in marks.values()], dtype=float)
                    score = item.score if named[1]["model"] == "prototypes" else None
                    atomic_write_image(vis[item.image], draw_parts(bgr, xy, score, label, names=list(marks)))
                else:
                    atomic_write_image(vis[item.image], draw(bgr, item.xy, item.score, label))
            if heat is not None and "heatmaps" in item.extras:
                from .heatmaps import draw_heatmap_panel

                coarse, fine = item.extras["heatmaps"]
                atomic_write_image(heat[item.image], draw_heatmap_panel(bgr, coarse, fine, item.xy, label, item.score))
            if fmt == "csv":
                text = _csv_text(csv_rows(item), header and to_stdout, columns)
                header = False
            elif fmt == "jsonl" or sink is not None:
                text = json.dumps(to_json(item)) + "\n"
            else:
                records.append(to_json(item))
                continue
            if sink is not None:
                sink.write(text)
            else:
                stdout.write(text)
                stdout.flush()
        if n == 0 and todo and not done:
            raise OutputError("no image could be read; nothing written")
    except BaseException:
        if sink is not None:
            sink.close()  # the .part file stays for --resume, unless it holds nothing
            if n == 0 and not done and sink.part.exists():
                sink.part.unlink()
        raise
    if sink is not None:
        sink.finish()
    elif fmt == "json":
        stdout.write(json.dumps(records, indent=1) + "\n")
    elif fmt == "csv" and header:  # streamed nothing (no keypoint found): still print a header
        stdout.write(_csv_text([], columns=columns))
    return {"images": n, "resumed": len(paths) - len(todo), "errors": errors,
            "seconds": time.perf_counter() - start, "out": out, "short": short, "k": k}
