"""Argument and output-location checks that run before torch is imported, a model loaded or an
image read, so that a bad call fails in well under a second (docs/robustness.md).

Torch-free on purpose: it imports only the standard library, :mod:`lmpcli.data.io` (PIL) and
:mod:`lmpcli.outputs`. Every check raises :class:`UsageError` with a one-line message; the CLI
turns it into exit status 2 ("refused before any work"). The library entry points
(:func:`lmpcli.predict.run_predict`, :func:`lmpcli.train.fit`) call the same checks, so callers
from Python are protected too.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from .choices import BACKENDS, LANDMARK_MODELS, METHODS, MID_MAP_METHODS, NETWORKS, NORMALISATIONS, SPLITS
from .data.io import InputError, expand_inputs
from .outputs import OutputError, check_writable

#: Largest ``--k`` accepted. LMPNet stops early when its proposals run out (at most
#: num_filters x networks per image, each keypoint erasing at least one); a larger k is refused.
MAX_K = 1000

#: Files a training run writes into ``--out``; none is replaced without --resume or --overwrite.
RUN_FILES = ("last.pt", "model.pt", "metrics.csv")

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class UsageError(InputError):
    """A call refused before any work: a bad option value, a missing input, an output that exists or
    would write over an input. Nothing has been written (except output folders being created)."""


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (macOS only); availability of CUDA is checked
    when the model is placed (:func:`lmpcli.device.resolve_device`, exit status 1).

    Raises:
        UsageError: any other name (``meta``, ``xla``, typos), or ``mps`` off macOS.
    """
    if not _DEVICE.match(device):
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if device == "mps" and sys.platform != "darwin":
        raise UsageError("--device mps needs macOS on Apple silicon; use auto, cpu or cuda")
    return device


def check_number(name: str, value: float | int | None, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    """Check that ``value`` (None = not given, accepted) is a finite number within the bounds.

    ``low_open`` / ``high_open`` exclude the bound itself. ``name`` is the option as typed (``--thr``).

    Raises:
        UsageError: NaN, infinite, or out of range, naming the option and the range.
    """
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")
    if integer and value != int(value):
        raise UsageError(f"{name} must be a whole number, got {value}")
    if (low is not None and (value < low or (low_open and value == low))) or (
            high is not None and (value > high or (high_open and value == high))):
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
        raise UsageError(f"{name} must be {' and '.join(b for b in (lo, hi) if b)}, got {value:g}")


def check_keypoint_options(*, settings=None, k: int | None = None, thr: float | None = None,
                           num_filters: int | None = None, iterations: int | None = None, gate: float | None = None,
                           output_stride: int | None = None, image_size: int | None = None,
                           batch_size: int | None = None, workers: int | None = None, device: str | None = None,
                           **unchecked) -> None:
    """The test-time options shared by predict, evaluate and visualize-filters (see their ``--help``).

    ``settings``: a :class:`lmpcli.settings.KeypointSettings` (the record of the keypoint flags); its
    fields are checked as the options of the same names where those are not given. ``unchecked``:
    other settings of the same call (flags such as ``replica`` or ``flip``), ignored.

    Raises:
        UsageError: ``k`` outside 1..:data:`MAX_K`; ``thr`` not > 0 (cells) or NaN; ``num_filters`` < 1;
            ``iterations`` < 0; ``gate`` outside [0, 1]; ``output_stride`` not 16 or 32;
            ``image_size`` not a positive multiple of 32; ``batch_size`` < 1; ``workers`` < 0; bad ``device``.
    """
    if settings is not None:
        k, thr, num_filters, iterations, gate, output_stride, image_size = (
            getattr(settings, name) if value is None else value for name, value in
            (("k", k), ("thr", thr), ("num_filters", num_filters), ("iterations", iterations), ("gate", gate),
             ("output_stride", output_stride), ("image_size", image_size)))
    check_number("--k", k, low=1, high=MAX_K, integer=True)
    check_number("--thr", thr, low=0, low_open=True)
    check_number("--num-filters", num_filters, low=1, integer=True)
    check_number("--iterations", iterations, low=0, integer=True)
    check_number("--gate", gate, low=0, high=1)
    check_number("--batch-size", batch_size, low=1, integer=True)
    check_number("--workers", workers, low=0, integer=True)
    if output_stride is not None and output_stride not in (16, 32):
        raise UsageError(f"output stride must be 16 or 32, got {output_stride}")
    if image_size is not None and (image_size <= 0 or image_size % 32):
        raise UsageError(f"image size must be a positive multiple of 32 pixels, got {image_size}")
    if device is not None:
        check_device(device)


def check_checkpoint_file(path: str | os.PathLike | None) -> None:
    """A ``--weights`` file exists and is a PyTorch file (a zip archive, or a legacy pickle); None = the
    shipped weights. Its content is checked when loaded (``torch.load(weights_only=True)``, exit 1).

    Raises:
        UsageError: missing, a folder, unreadable, or neither zip nor pickle (e.g. a text file).
    """
    if path is None:
        return
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"checkpoint not found: {p}")
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise UsageError(f"cannot read checkpoint {p}: {e.strerror or e}") from e
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise UsageError(f"{p} is not a PyTorch checkpoint (neither a zip archive nor a pickle); "
                         "pass a model.pt written by lmp train")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output_file(out: str | os.PathLike | None, inputs: Iterable[str | os.PathLike], overwrite: bool,
                      option: str = "--out") -> None:
    """An output file can be written and is none of ``inputs``; ``None`` or ``-`` (stdout) pass.

    Creates the output's parent folder (:func:`lmpcli.outputs.check_writable`).

    Raises:
        UsageError: it is a folder or one of the inputs (even with ``overwrite``), it exists without
            ``overwrite``, or its folder cannot be created or written.
    """
    if out is None or str(out) == "-":
        return
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")
    for item in inputs:
        if _same(path, Path(item)):
            raise UsageError(f"{option} {path} is one of the inputs; it would be written over, so choose another file")
    try:
        check_writable(path, overwrite)
    except OutputError as e:
        raise UsageError(str(e)) from e


def output_names(paths: Sequence[str], folder: str | os.PathLike, suffix: str = ".jpg") -> dict[str, Path]:
    """File in ``folder`` for each input path: its stem + ``suffix``, with ``_2``, ``_3``... for repeated
    stems (in input order). The same path listed twice gets one file."""
    folder = Path(folder)
    names: dict[str, Path] = {}
    used: set[str] = set()
    for p in paths:
        if p in names:
            continue
        stem = Path(p).stem
        name, n = f"{stem}{suffix}", 1
        while name in used:
            n += 1
            name = f"{stem}_{n}{suffix}"
        used.add(name)
        names[p] = folder / name
    return names


def check_output_folder(folder: str | os.PathLike | None, paths: Sequence[str], overwrite: bool,
                        option: str = "--vis-dir") -> dict[str, Path] | None:
    """Check a folder of per-image outputs (annotated images, heat-map panels) before any work.

    Refuses a folder that is, or contains, an input image, even with ``overwrite``: its outputs
    would sit beside the user's images and, with ``overwrite``, replace them. Creates the folder and
    probes that it is writable.

    Returns:
        ``{input path: output file}`` (:func:`output_names`), or None when ``folder`` is None.

    Raises:
        UsageError: a file in the way, an input inside the folder, an output that exists without
            ``overwrite``, or a folder that cannot be created or written.
    """
    if folder is None:
        return None
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder} is a file, not a folder")
    for p in paths:
        if _inside(Path(p), folder):
            raise UsageError(f"{option} {folder} holds input images (e.g. {p}); choose a folder outside the inputs "
                             "so that no input is written over")
    names = output_names(paths, folder)
    if not overwrite:
        for target in names.values():
            if target.exists():
                raise UsageError(f"{target} exists; pass --overwrite to replace it")
    try:
        check_writable(folder / ".probe", overwrite=True)  # creates the folder, probes a write
    except OutputError as e:
        raise UsageError(f"{option}: {e}") from e
    return names


def check_predict_call(inputs: Sequence[str], *, out: str | None = "-", vis_dir=None, heatmaps_dir=None,
                       weights=None, overwrite: bool = False, stdin=None, method: str = "lmpnet",
                       backend: str = "auto", landmarks=None, shard: str | tuple[int, int] | None = None,
                       resume: bool = False,
                       **options) -> dict:
    """Every check of ``lmp predict`` that needs no model: inputs, options, checkpoint files, outputs.

    Args:
        inputs: as for :func:`lmpcli.predict.predict_images` (``-`` reads stdin once, here).
        method, backend: names of :data:`lmpcli.choices.METHODS` and :data:`lmpcli.choices.BACKENDS`.
        landmarks: a file of ``lmp fit-landmarks`` (its content is read later), or None.
        shard, resume: ``--shard`` (``"i/N"`` or ``(i, N)``) and ``--resume``; both need a file ``out``.
        options: the keypoint options of :func:`check_keypoint_options`.

    Returns:
        ``{"paths": the expanded input paths, "vis": {path: file} or None, "heatmaps": ... or None}``.

    Raises:
        UsageError: see :func:`check_keypoint_options`, :func:`check_checkpoint_file`,
            :func:`check_output_file`, :func:`check_output_folder`; missing inputs; an unknown
            method or backend; a missing landmarks file; a bad ``shard``; ``shard`` or ``resume``
            without a file ``out``.
    """
    check_keypoint_options(**options)
    if shard is not None:
        from .shards import parse_shard  # torch-free

        try:
            parse_shard(shard)
        except ValueError as e:
            raise UsageError(str(e)) from e
    to_stdout = out in (None, "-")
    if shard is not None and to_stdout:
        raise UsageError("--shard needs --out FILE: every shard writes its own file")
    if resume and to_stdout:
        raise UsageError("--resume needs --out FILE: it continues that file's unfinished .part")
    check_choice("--method", method, METHODS)
    check_choice("--backend", backend, BACKENDS)
    if landmarks is not None and not Path(landmarks).is_file():
        raise UsageError(f"landmarks file not found: {landmarks} (write one with lmp fit-landmarks)")
    weights_list = [] if weights is None else [weights] if isinstance(weights, (str, Path)) else list(weights)
    for w in weights_list:
        check_checkpoint_file(w)
    try:
        paths = expand_inputs(list(inputs), stdin)
    except InputError as e:
        raise UsageError(str(e)) from e
    if heatmaps_dir is not None and method != "occlusion-gbp":
        raise UsageError("--heatmaps needs --method occlusion-gbp (the only method that makes heat maps)")
    if vis_dir is not None and heatmaps_dir is not None and Path(vis_dir).resolve() == Path(heatmaps_dir).resolve():
        raise UsageError("--vis-dir and --heatmaps are the same folder; their files would collide")
    check_output_file(out, [*paths, *weights_list], overwrite)
    vis = check_output_folder(vis_dir, paths, overwrite)
    heat = check_output_folder(heatmaps_dir, paths, overwrite, "--heatmaps")
    if out not in (None, "-"):
        for names in (vis, heat):
            if names and any(Path(out).resolve() == t.resolve() for t in names.values()):
                raise UsageError(f"--out {out} is also the name of an annotated image; choose another file")
    return {"paths": paths, "vis": vis, "heatmaps": heat}


def check_train_out(out: str | os.PathLike, data: str | os.PathLike | None = None, *, resume: bool = False,
                    overwrite: bool = False) -> Path:
    """A training run folder: refuses to replace any of :data:`RUN_FILES` without ``resume`` or
    ``overwrite`` (even when ``last.pt`` is gone), and to write inside the training data.

    Raises:
        UsageError: see above; ``resume`` without ``last.pt``; ``out`` is a file or not writable.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if data is not None and Path(data).exists() and _inside(out, Path(data)):
        raise UsageError(f"--out {out} is inside the training data {data}; choose a folder outside it")
    present = [name for name in RUN_FILES if (out / name).exists()]
    if resume and not (out / "last.pt").exists():
        raise UsageError(f"nothing to resume: {out / 'last.pt'} does not exist")
    if present and not (resume or overwrite):
        raise UsageError(f"{out} already holds a training run ({', '.join(present)}); pass --resume to continue "
                         "it or --overwrite to replace it")
    try:
        check_writable(out / RUN_FILES[0], overwrite=True)
    except OutputError as e:
        raise UsageError(str(e)) from e
    return out


def check_data_folder(data: str | os.PathLike, option: str = "data folder") -> Path:
    """``data`` is an existing folder.

    Raises:
        UsageError: missing or not a folder.
    """
    p = Path(data)
    if not p.is_dir():
        raise UsageError(f"no such {option}: {data}")
    return p


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices``.

    Raises:
        UsageError: naming the option and the choices.
    """
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_evaluate_call(data: str | os.PathLike, *, split: str = "test", out=None, weights=None, alpha: float = 0.1,
                        limit: int | None = None, overwrite: bool = False, methods: Sequence[str] = ("lmpnet",),
                        backend: str = "auto", **options) -> None:
    """Every check of ``lmp evaluate`` that needs no model (``options``: see :func:`check_keypoint_options`).

    Raises:
        UsageError: a missing data folder, an unknown split, method or backend, no method, ``alpha``
            outside (0, 1], ``limit`` < 1, bad keypoint options or checkpoint files, an output that
            exists (without ``overwrite``), cannot be written, or is a file of the data folder.
    """
    root = check_data_folder(data)
    check_choice("--split", split, SPLITS)
    if not methods:
        raise UsageError("--method names no method; use e.g. lmpnet or lmpnet,cam")
    for method in methods:
        check_choice("--method", method, METHODS)
    check_choice("--backend", backend, BACKENDS)
    check_number("--alpha", alpha, low=0, high=1, low_open=True)
    check_number("--limit", limit, low=1, integer=True)
    check_keypoint_options(**options)
    for w in [] if weights is None else [weights] if isinstance(weights, (str, Path)) else weights:
        check_checkpoint_file(w)
    if out is not None and Path(out).exists() and _inside(Path(out), root):
        raise UsageError(f"--out {out} is a file of the data folder {data}; choose another file")
    check_output_file(out, [], overwrite)


def check_train_call(data: str | os.PathLike, out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                     device: str = "auto", **numbers) -> None:
    """Every check of ``lmp train`` that needs no model: the data folder, the run folder
    (:func:`check_train_out`), the device and the numeric options.

    Args:
        numbers: option values by keyword of :func:`lmpcli.train.fit` (``lr``, ``eps``, ``thr``...).

    Raises:
        UsageError: see above; a value out of its range or NaN.
    """
    check_data_folder(data)
    check_device(device)
    ranges = {  # keyword: (low, high, low_open, high_open, integer)
        "image_size": (32, None, False, False, True), "epochs": (1, None, False, False, True),
        "batch_size": (1, None, False, False, True), "lr": (0, None, True, False, False),
        "weight_decay": (0, None, False, False, False), "label_smoothing": (0, 1, False, True, False),
        "eps": (0, None, False, False, False), "num_filters": (1, None, False, False, True),
        "k": (1, MAX_K, False, False, True), "thr": (0, None, True, False, False),
        "iterations": (0, None, False, False, True), "mask_size": (0, 1, True, True, False),
        "gate": (0, 1, False, False, False), "freeze": (0, None, False, False, True),
        "crop_scale": (0, 1, True, False, False), "jitter": (0, None, False, False, False),
        "cutmix": (0, 1, False, False, False), "limit": (1, None, False, False, True),
        "workers": (0, None, False, False, True), "bn_images": (0, None, False, False, True),
    }
    for key, value in numbers.items():
        if key in ranges:
            low, high, lo_open, hi_open, integer = ranges[key]
            check_number("--" + key.replace("_", "-"), value, low=low, high=high, low_open=lo_open,
                         high_open=hi_open, integer=integer)
    if numbers.get("image_size") is not None and numbers["image_size"] % 32:
        raise UsageError(f"image size must be a positive multiple of 32 pixels, got {numbers['image_size']}")
    check_train_out(out, data, resume=resume, overwrite=overwrite)


def check_filters_call(inputs: Sequence[str], *, out, weights=None, overwrite: bool = False, network: str = "main",
                       alpha: float = 0.45, limit: int | None = None, **options) -> None:
    """Every check of ``lmp visualize-filters`` that needs no model (``options``: see
    :func:`check_keypoint_options`).

    Raises:
        UsageError: missing inputs, an unknown ``network``, ``alpha`` outside [0, 1], ``limit`` < 1,
            a bad checkpoint file, or an output that exists (without ``overwrite``), cannot be
            written or is one of the input images.
    """
    check_keypoint_options(**options)
    check_checkpoint_file(weights)
    check_choice("--network", network, NETWORKS)
    check_number("--alpha", alpha, low=0, high=1)
    check_number("--limit", limit, low=1, integer=True)
    try:
        paths = expand_inputs(list(inputs))
    except InputError as e:
        raise UsageError(str(e)) from e
    check_output_file(out, paths, overwrite)


def check_export_call(out, *, weights=None, overwrite: bool = False, network: str = "main", **options) -> None:
    """Every check of ``lmp export`` that needs no model (``options``: see :func:`check_keypoint_options`).

    Raises:
        UsageError: a bad checkpoint file, an unknown ``network``, bad options, or an output that
            exists (without ``overwrite``), cannot be written or is the checkpoint itself.
    """
    check_keypoint_options(**options)
    check_checkpoint_file(weights)
    check_choice("--network", network, NETWORKS)
    check_output_file(out, [] if weights is None else [weights], overwrite)


def check_fit_parts_call(weights: str | os.PathLike, data: Sequence[str], *, out, overwrite: bool = False,
                         device: str = "auto", limit: int | None = None, method: str | None = None,
                         maps: str | None = None) -> None:
    """Every check of ``lmp fit-parts`` that needs no model.

    Raises:
        UsageError: a bad checkpoint file, an unknown device, ``limit`` < 2, missing training images,
            a mid-level ``--maps`` with a ``--method`` that cannot read the mid-level map
            (:data:`lmpcli.choices.MID_MAP_METHODS`; the library checks the same in
            :func:`lmpcli.parts.resolve_part_maps`), or an output that exists (without
            ``overwrite``), cannot be written or is the input checkpoint (even with ``overwrite``).
    """
    if maps not in (None, "final") and method is not None and method not in MID_MAP_METHODS:
        raise UsageError(f"--maps {maps} with --method {method}: the mid-level map is read by "
                         f"{', '.join(MID_MAP_METHODS)} only")
    check_checkpoint_file(weights)
    check_device(device)
    check_number("--limit", limit, low=2, integer=True)
    try:
        expand_inputs(list(data))
    except InputError as e:
        raise UsageError(str(e)) from e
    check_output_file(out, [weights], overwrite)


def check_fit_landmarks_call(data: str | os.PathLike, *, out, weights=None, overwrite: bool = False,
                             split: str = "train", normalisation: str = "image", model: str = "regression",
                             limit: int | None = None, **options) -> None:
    """Every check of ``lmp fit-landmarks`` that needs no model (``options``: see :func:`check_keypoint_options`).

    Raises:
        UsageError: a missing CUB folder or COCO file, an unknown ``split``, ``normalisation`` or ``model``,
            ``limit`` < 1, bad keypoint options or checkpoint file, or an output that exists (without
            ``overwrite``), cannot be written or is the annotation file or the checkpoint.
    """
    if not Path(data).exists():
        raise UsageError(f"no such CUB folder or COCO file: {data}")
    check_choice("--split", split, SPLITS)
    check_choice("--normalisation", normalisation, NORMALISATIONS)
    check_choice("--model", model, LANDMARK_MODELS)
    check_number("--limit", limit, low=1, integer=True)
    check_keypoint_options(**options)
    check_checkpoint_file(weights)
    check_output_file(out, [data] + ([] if weights is None else [weights]), overwrite)


def check_merge_shards_call(out: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Every check of ``lmp merge-shards`` before any shard is read (:func:`lmpcli.shards.check_shard_set`).

    Raises:
        UsageError: no shard files beside ``out``, shards of several counts, a shard missing or
            unfinished, or ``out`` exists (without ``overwrite``) or cannot be written.
    """
    from .shards import check_shard_set  # torch-free

    try:
        check_shard_set(out, overwrite)
    except OutputError as e:
        raise UsageError(str(e)) from e
