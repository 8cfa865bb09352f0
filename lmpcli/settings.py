"""One record of the test-time keypoint settings of LMPNet, and the one place they are resolved.

A checkpoint stores its :class:`KeypointSettings` (``config["keypoints"]``; a checkpoint written
before that record existed gets the values its flat config held, see
:func:`settings_from_config`). A run asks for some settings (the CLI builds one record from its
flags, None = the checkpoint's), :func:`resolve_settings` fills in the rest from the checkpoint and
rescales the erase radius to the feature-map grid the networks run at, once, without changing the
checkpoint's record. This follows timm's ``PretrainedCfg`` / ``resolve_pretrained_cfg``: defaults
stored with the model, an overlay from the caller, one pure function that merges them.

Variants of a run (evaluate's extra rows, benchmark sweeps) are ``dataclasses.replace(base,
**delta)``. This module imports no torch (the CLI builds records before loading anything).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from types import MappingProxyType


@dataclass(frozen=True)
class KeypointSettings:
    """Test-time settings of LMPNet's keypoint branch (Secs. 3.2-3.4 and our extensions).

    Every field may be None: "the checkpoint's" in a request (:func:`resolve_settings` fills it);
    a resolved record and a checkpoint's stored record have every field set except ``members``.
    The values a new checkpoint stores unless told otherwise are :data:`DEFAULTS`.

    Attributes:
        k: keypoints per image (ranked; paper 5).
        thr: clustering erase radius (Algorithm 1), in feature-map cells. In a checkpoint's
            record: cells of the grid it was trained on (``image_size / output_stride`` cells a
            side; 14x14 for the shipped weights). In a request: cells of the grid the networks
            run at; None there means the checkpoint's radius rescaled to keep its size relative
            to the image (x 2 at output stride 16, x ``image_size / trained size`` for another
            input size; :func:`resolve_settings`). Paper: 3 on 14x14; ours 1.2, a 5-cell disk
            (docs/quality-log.md, sections 15 and 17).
        num_filters: filters kept per image and network by filter selection (Sec. 3.2).
        iterations: re-weighting iterations per keypoint of learnable clustering (Algorithm 1).
        subcell: refine proposal peaks to sub-cell precision (3x3 centroid; an extension, quality
            log section 18; the replica's mask-out uses cell peaks either way).
        refine: place each keypoint at its cluster's vote-weighted centroid (an extension).
        gate: object gate, an extension: drop proposals where the main network's channel-mean
            map is below this fraction (in [0, 1]) of its peak; 0 = off, as in the paper.
        replica: fuse the replica network's proposals (Sec. 3.3) when the checkpoint has one.
        flip: test-time flip, an extension: also fuse the proposals of the mirrored image (twice
            the forward passes; docs/quality-log.md section 19); the ``parts`` method averages the
            maps its part model reads over the image and its mirror (section 44 item 2).
        output_stride: 32 (as trained: 448 px -> 14x14 maps) or 16 (twice as fine maps from the
            same weights; EfficientNet-Lite only; quality log section 15).
        image_size: square network input side, pixels, a positive multiple of 32 (quality log
            sections 21-22).
        members: ensemble members fused (an extension, quality log section 27): the first
            ``members`` checkpoints given; None = all of them. Never stored from a checkpoint.
    """

    k: int | None = None
    thr: float | None = None
    num_filters: int | None = None
    iterations: int | None = None
    subcell: bool | None = None
    refine: bool | None = None
    gate: float | None = None
    replica: bool | None = None
    flip: bool | None = None
    output_stride: int | None = None
    image_size: int | None = None
    members: int | None = None

    def to_dict(self) -> dict:
        """Plain dict of every field (a checkpoint's ``config["keypoints"]``, a report's ``config``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "KeypointSettings":
        """Record from a dict; keys that are not fields are ignored (older or newer files)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: v for key, v in d.items() if key in known})

    def given(self) -> dict:
        """The fields that are set (not None), as a dict: the overlay of a request."""
        return {key: v for key, v in asdict(self).items() if v is not None}


#: What a new checkpoint stores unless told otherwise (``lmp train``; the shipped weights hold these).
#: The input size, output stride and replica of a stored record are the checkpoint's own.
DEFAULTS = KeypointSettings(k=5, thr=1.2, num_filters=128, iterations=3, subcell=True, refine=True, gate=0.0,
                            flip=False)

#: Defaults of ``lmp train`` / :func:`lmpcli.train.fit` (and of the architecture fields of
#: :class:`lmpcli.model.LMPNetConfig`), written once here, torch-free, so that ``--help`` shows
#: them before torch loads. Why each value: docs/cli.md and docs/quality-log.md (e.g. weight decay
#: 1: section 23; part model K = 8: section 30).
TRAIN_DEFAULTS = MappingProxyType({
    "backbone": "efficientnet-lite0",
    "image_size": 448,
    "pooling": "lmp",
    "eps": 0.1,
    "mask_size": 0.15,
    "replica": True,
    "freeze": 12,
    "pretrained": True,
    "epochs": 4,
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 1.0,
    "label_smoothing": 0.1,
    "seed": 0,
    "crop_scale": 0.25,
    "jitter": 0.2,
    "cutmix": 0.0,
    "workers": 2,
    "bn_images": 0,
    "parts": 16,
})

#: Defaults of the per-method options ``lmp predict`` / ``lmp evaluate`` offer: constructor keywords
#: of :class:`lmpcli.methods.OcclusionGBPMethod` (Shan et al.; pixels of the occlusion input, whose
#: side is ``input_size``, None = the network's) and :class:`lmpcli.methods.CAMMethod` (NMS radius
#: in feature-map cells). Written once here, torch-free, so that ``--help`` shows them before torch
#: loads; the constructors take their defaults from this table.
METHOD_DEFAULTS = {
    "occlusion-gbp": {"occluder_size": 160, "occluder_stride": 96, "chunk_size": 32, "input_size": None,
                      "coarse_weight": 0.5, "fine_weight": 0.5, "nms_radius": 16, "keep_fraction": 0.4},
    "cam": {"nms_radius": 1},
}

#: Fields a stored record has in the flat config of checkpoints written before this record existed.
LEGACY_CONFIG_KEYS = ("k", "thr", "num_filters", "iterations", "subcell", "refine", "gate")


def stored_settings(settings: KeypointSettings | None, *, image_size: int, output_stride: int,
                    replica: bool) -> KeypointSettings:
    """A checkpoint's complete record: ``settings``' fields, :data:`DEFAULTS` where unset, and the
    grid (``image_size`` px, ``output_stride``) and ``replica`` of the network as trained where unset.
    ``members`` stays None (every checkpoint given)."""
    filled = {**DEFAULTS.given(), "image_size": image_size, "output_stride": output_stride, "replica": replica,
              **(settings.given() if settings is not None else {})}
    filled.pop("members", None)
    return KeypointSettings(**filled)


def settings_from_config(config: dict) -> KeypointSettings | None:
    """The record of a checkpoint's config dict: ``config["keypoints"]``, or, for a checkpoint
    written before it existed, the values its flat config held (:data:`LEGACY_CONFIG_KEYS`);
    None when neither is there (then :func:`stored_settings` uses :data:`DEFAULTS`)."""
    if isinstance(config.get("keypoints"), dict):
        return KeypointSettings.from_dict(config["keypoints"])
    legacy = {key: config[key] for key in LEGACY_CONFIG_KEYS if key in config}
    return KeypointSettings(**legacy) if legacy else None


def resolve_settings(requested: KeypointSettings | None, stored: KeypointSettings) -> KeypointSettings:
    """Merge a request onto a checkpoint's record; the only place the erase radius is rescaled.

    Pure: neither argument is changed (both are frozen). Unset (None) fields of ``requested``
    take ``stored``'s value; ``thr`` unset takes ``stored.thr`` x ``stored.output_stride /
    output_stride`` x ``image_size / stored.image_size``, so the erased disk keeps its size
    relative to the image (1.2 cells of 14x14 -> 2.4 cells of 28x28 at output stride 16; -> 1.37
    cells of 16x16 at 512 px). A ``thr`` that is given is used as given, in cells of the grid the
    networks run at (it overrides the rescaling).

    Args:
        requested: the caller's settings (None = all the checkpoint's).
        stored: the checkpoint's complete record (:func:`stored_settings`).

    Returns:
        A record with every field set except ``members`` (None = every checkpoint given).

    Raises:
        ValueError: ``stored`` lacks a field; ``output_stride`` not 16 or 32; ``image_size`` not a
            positive multiple of 32; ``k`` < 1, ``thr`` <= 0, ``num_filters`` < 1,
            ``iterations`` < 0, ``gate`` outside [0, 1], ``members`` < 1.
    """
    missing = [key for key, v in asdict(stored).items() if v is None and key != "members"]
    if missing:
        raise ValueError(f"stored keypoint settings lack {', '.join(missing)}")
    merged = replace(stored, **(requested.given() if requested is not None else {}))
    if requested is None or requested.thr is None:
        # in this order, the order the radius was rescaled in before this record existed: equal to the bit
        merged = replace(merged, thr=stored.thr * (stored.output_stride / merged.output_stride)
                         * (merged.image_size / stored.image_size))
    check_settings(merged)
    return merged


def check_settings(s: KeypointSettings) -> None:
    """Refuse values no run can use (None fields are not checked).

    Raises:
        ValueError: one line naming the first bad setting.
    """
    def bad(name: str, rule: str, value) -> None:
        raise ValueError(f"{name} must be {rule}, got {value!r}")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if s.k is not None and not (is_int(s.k) and s.k >= 1):
        bad("k", "an integer >= 1", s.k)
    if s.thr is not None and not s.thr > 0:
        bad("thr", "> 0 cells", s.thr)
    if s.num_filters is not None and not (is_int(s.num_filters) and s.num_filters >= 1):
        bad("num_filters", "an integer >= 1", s.num_filters)
    if s.iterations is not None and not (is_int(s.iterations) and s.iterations >= 0):
        bad("iterations", "an integer >= 0", s.iterations)
    if s.gate is not None and not 0 <= s.gate <= 1:
        bad("gate", "in [0, 1]", s.gate)
    if s.output_stride is not None and s.output_stride not in (16, 32):
        bad("output stride", "16 or 32", s.output_stride)
    if s.image_size is not None and not (is_int(s.image_size) and s.image_size >= 32 and s.image_size % 32 == 0):
        bad("image size", "a positive multiple of 32 pixels", s.image_size)
    if s.members is not None and not (is_int(s.members) and s.members >= 1):
        bad("members", "an integer >= 1", s.members)
