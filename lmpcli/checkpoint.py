"""Checkpoints: one file holds both networks, the config, class names and training metadata.

The file is a plain dict of tensors, numbers, strings and lists, so it loads with
``torch.load(path, weights_only=True)``. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .model import LMPNetConfig, LMPNetPair
from .outputs import atomic_path
from .parts import CHECKPOINT_KEY as PARTS_KEY
from .parts import PartModelError, part_model_from_checkpoint

FORMAT = "lmpcli.lmpnet"
VERSION = 1
WEIGHTS_NAME = "lmpnet-lite0-cub50.pt"


def _shipped_weights() -> Path:
    """Where the shipped weights are: in the installed package (``lmpcli/_weights``, a wheel or an
    editable install, where it is a link to the repository's ``weights/``), else the source tree's
    ``weights/`` (a checkout whose links were not kept, e.g. on Windows)."""
    here = Path(__file__).resolve().parent
    candidates = (here / "_weights" / WEIGHTS_NAME, here.parent / "weights" / WEIGHTS_NAME)
    for path in candidates:
        if path.is_file() and path.stat().st_size > 1024:  # not a link stored as a text file
            return path
    return candidates[0]


#: The shipped checkpoint, used when no ``--weights`` is given.
DEFAULT_WEIGHTS = _shipped_weights()


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not an lmp checkpoint."""


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)

def save_checkpoint(path, model: LMPNetPair, class_names: list[str], meta: dict | None = None,
                    training_state: dict | None = None, half: bool = False) -> None:
    """Write a checkpoint.

    Args:
        model: the network pair; its config is stored with the keypoint settings it holds under
            ``config["keypoints"]`` (:class:`lmpcli.settings.KeypointSettings`, the defaults of every
            run of this checkpoint).
        class_names: K names, index = label.
        meta: training metadata (command, data, epochs, time, machine, metrics).
        training_state: optimizer/scheduler/epoch for ``--resume`` (omit for shipped weights).
        half: store floating tensors as float16 (halves the file; loads back as float32).
    """
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
           "class_names": list(class_names), "state_dict": state, "meta": meta or {}}
    if training_state is not None:
        obj["training_state"] = training_state
    if getattr(model, "part_model", None) is not None:
        obj[PARTS_KEY] = model.part_model.to_dict()
    atomic_torch_save(obj, path)


def read_checkpoint(path) -> dict:
    """Load the raw checkpoint dict (``weights_only=True``).

    Raises:
        CheckpointError: missing file, unreadable file, or a foreign format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an lmp checkpoint (expected format {FORMAT!r})")
    return obj


def load_model(path=None, device: torch.device | str = "cpu") -> tuple[LMPNetPair, dict]:
    """Rebuild the :class:`LMPNetPair` of a checkpoint (default: the shipped weights), in eval mode.

    A checkpoint written before ``config["keypoints"]`` existed gets the keypoint settings its flat
    config holds (:meth:`lmpcli.model.LMPNetConfig.from_dict`).

    Returns:
        (model on ``device``, checkpoint dict without the state dict). ``model.part_model`` is
        the checkpoint's :class:`lmpcli.parts.PartModel` (key ``"parts"``), or None for
        checkpoints without one.

    Raises:
        CheckpointError: see :func:`read_checkpoint`, weights that do not fit the config, or class
            names that do not match the classifier.
    """
    obj = read_checkpoint(DEFAULT_WEIGHTS if path is None else path)
    config = LMPNetConfig.from_dict(obj["config"])
    names = obj.get("class_names")
    if not isinstance(names, list) or len(names) != config.num_classes:
        count = len(names) if isinstance(names, list) else 0
        raise CheckpointError(f"{path or DEFAULT_WEIGHTS} has {count} class names but its classifier has "
                              f"{config.num_classes} classes; it was not written by lmp train")
    model = LMPNetPair(config, pretrained=False)
    state = {k: v.float() if v.is_floating_point() else v for k, v in obj.pop("state_dict").items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"weights do not match their config: {str(e).splitlines()[0]}") from e
    try:
        model.part_model = part_model_from_checkpoint(obj)
    except PartModelError as e:
        raise CheckpointError(f"{path or DEFAULT_WEIGHTS}: {e}") from e
    return model.to(device).eval(), obj
