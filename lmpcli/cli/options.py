"""Options shared by several commands, each declared once; the choice Enums; the help panels.

An option used by more than one command is an ``Annotated`` alias here (its flag, help text and
panel). The keypoint settings and the per-method options of ``predict`` and ``evaluate`` are
:class:`OptionGroup`\\ s that :func:`command` adds to a command's signature and hands to it as one
dict, so the two commands do not list them twice. Choices are str Enums built from the library's
tuples (:mod:`lmpcli.choices`), so ``--help`` lists them and click refuses an unknown name (exit
status 2) before torch is imported; :func:`command` passes them on as plain strings.
"""

from __future__ import annotations

import copy
import enum
import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional, get_args

import typer

from .. import choices
from ..settings import METHOD_DEFAULTS, KeypointSettings

# ---------------------------------------------------------------------------------- help panels
IO = "Inputs and outputs"
METHOD = "Method"
KEYPOINTS = "Keypoint settings"
OCCLUSION_GBP = "occlusion-gbp"
CAM = "cam"
PERFORMANCE = "Performance"
SCORING = "Scoring"  # evaluate
GRID = "Grid"  # visualize-filters, visualize-parts
NETWORK = "Network"  # export
LANDMARKS = "Landmarks"  # fit-landmarks
PART_MODEL = "Part model"  # fit-parts
MODEL, OPTIMISATION, AUGMENTATION, AFTER_TRAINING = "Model", "Optimisation", "Augmentation", "After training"  # train


# ---------------------------------------------------------------------------------- choices
def _choice(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A str Enum whose members are ``values`` (name = value, so ``--method occlusion-gbp`` works)."""
    return enum.Enum(name, [(v, v) for v in values], type=str)


Method = _choice("Method", choices.METHODS)
Backbone = _choice("Backbone", choices.BACKBONES)
Pooling = _choice("Pooling", choices.POOLING_MODES)
Split = _choice("Split", choices.SPLITS)
Network = _choice("Network", choices.NETWORKS)
Backend = _choice("Backend", choices.BACKENDS)
Normalize = _choice("Normalize", choices.NORMALIZE_MODES)
PartMethod = _choice("PartMethod", choices.PART_METHODS)
PartMaps = _choice("PartMaps", choices.PART_MAPS)
PartLocation = _choice("PartLocation", choices.PART_LOCATIONS)
Normalisation = _choice("Normalisation", choices.NORMALISATIONS)
LandmarkModel = _choice("LandmarkModel", choices.LANDMARK_MODELS)
ExportFormat = _choice("ExportFormat", choices.EXPORT_FORMATS)


def parse_ids(spec: str | None) -> list[int] | None:
    """``"1-40"`` / ``"1,3,5-7"`` -> list of ints; None or empty stays None (click callback).

    Raises:
        typer.BadParameter: not a list of ids and ranges (click: exit status 2).
    """
    if not spec:
        return None
    ids: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            ids.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise typer.BadParameter(f"cannot parse {spec!r}; use e.g. 1-40 or 1,2,5") from None
    return ids


# ---------------------------------------------------------------------------------- inputs and outputs
Images = Annotated[List[str], typer.Argument(
    metavar="IMAGES", show_default=False,
    help="Image files, folders (recursive), globs, or - to read paths from stdin.")]
DataImages = Annotated[List[str], typer.Argument(
    metavar="DATA", show_default=False,
    help="CUB-200-2011-layout folder (its --split is used) or image files, folders (recursive), globs.")]
Weights = Annotated[Optional[Path], typer.Option(
    metavar="FILE", rich_help_panel=IO, help="Checkpoint (default: the shipped weights).")]
WeightsList = Annotated[Optional[List[Path]], typer.Option(
    "--weights", metavar="FILE", rich_help_panel=IO,
    help="Checkpoint (default: the shipped weights). Repeat it for an LMPNet ensemble: every checkpoint's "
         "proposals are fused before one clustering and the logits averaged.")]
SplitOpt = Annotated[Split, typer.Option("--split", rich_help_panel=IO, help="CUB folders: the split used.")]
Classes = Annotated[Optional[str], typer.Option(
    metavar="IDS", callback=parse_ids, rich_help_panel=IO, help="Only these CUB class ids, e.g. 1-10 or 1,2,5.")]
Limit = Annotated[Optional[int], typer.Option(
    min=1, metavar="N", rich_help_panel=IO, help="Only N images, spread evenly over the split (every class).")]
ImageOut = Annotated[Path, typer.Option("--out", "-o", metavar="FILE", rich_help_panel=IO,
                                        help="Output image (.png or .jpg).")]
Overwrite = Annotated[bool, typer.Option(rich_help_panel=IO, help="Replace existing output files.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=IO, help="No progress bar or summary.")]

# ---------------------------------------------------------------------------------- performance
BatchSize = Annotated[int, typer.Option(min=1, metavar="N", rich_help_panel=PERFORMANCE, help="Images per batch.")]
Device = Annotated[str, typer.Option(
    metavar="DEVICE", rich_help_panel=PERFORMANCE, help="auto (CUDA when present), cpu, cuda, cuda:N or mps.")]
BackendOpt = Annotated[Backend, typer.Option(
    "--backend", rich_help_panel=PERFORMANCE,
    help="Network runtime: auto is ONNX Runtime on the CPU and torch on CUDA. ONNX graphs are exported once "
         "per checkpoint and cached in LMP_CACHE_DIR (default ~/.cache/lmp/onnx).")]
Workers = Annotated[Optional[int], typer.Option(
    min=0, metavar="N", rich_help_panel=PERFORMANCE,
    help="Image-decoding processes; 0 decodes in the main process; unset: the CPU cores, at most 8.")]

# ---------------------------------------------------------------------------------- keypoint settings
K = Annotated[Optional[int], typer.Option(
    min=1, metavar="N", rich_help_panel=KEYPOINTS,
    help="Keypoints per image (default: the checkpoint's, 5 for the shipped weights).")]
Thr = Annotated[Optional[float], typer.Option(
    metavar="CELLS", rich_help_panel=KEYPOINTS,
    help="LMPNet: clustering erase radius in cells of the feature maps the networks run at, used as given "
         "(Algorithm 1; default: the checkpoint's, 1.2 cells of 14x14 for the shipped weights, rescaled with "
         "--output-stride and --image-size).")]
NumFilters = Annotated[Optional[int], typer.Option(
    metavar="N", rich_help_panel=KEYPOINTS,
    help="LMPNet: filters kept per image and network (Sec. 3.2; default: the checkpoint's).")]
Iterations = Annotated[Optional[int], typer.Option(
    metavar="N", rich_help_panel=KEYPOINTS,
    help="LMPNet: clustering iterations per keypoint (Algorithm 1; default: the checkpoint's).")]
Replica = Annotated[Optional[bool], typer.Option(
    "--replica/--no-replica", show_default=False, rich_help_panel=KEYPOINTS,
    help="LMPNet: fuse the replica network's proposals (Sec. 3.3; default: the checkpoint's, on when it has one).")]
Subcell = Annotated[Optional[bool], typer.Option(
    "--subcell/--no-subcell", show_default=False, rich_help_panel=KEYPOINTS,
    help="LMPNet: proposal peaks between cells (default: the checkpoint's).")]
Refine = Annotated[Optional[bool], typer.Option(
    "--refine/--no-refine", show_default=False, rich_help_panel=KEYPOINTS,
    help="LMPNet: each keypoint at its cluster's centroid (default: the checkpoint's).")]
Gate = Annotated[Optional[float], typer.Option(
    min=0.0, max=1.0, metavar="FRACTION", rich_help_panel=KEYPOINTS,
    help="LMPNet: drop proposals where the channel-mean map is below this fraction of its peak (object gate; "
         "0 = off; default: the checkpoint's).")]
Flip = Annotated[Optional[bool], typer.Option(
    "--flip/--no-flip", show_default=False, rich_help_panel=KEYPOINTS,
    help="Test-time flip: LMPNet fuses the proposals of the mirrored image; parts average their maps over the "
         "image and its mirror (twice the forward passes; default: the checkpoint's, off).")]
OutputStride = Annotated[Optional[int], typer.Option(
    metavar="16|32", rich_help_panel=KEYPOINTS,
    help="16: feature maps twice as fine from the same weights (EfficientNet-Lite; the checkpoint's --thr is "
         "doubled to keep its radius in pixels). Default: 32, as trained.")]
ImageSize = Annotated[Optional[int], typer.Option(
    "--image-size", min=32, metavar="PIXELS", rich_help_panel=KEYPOINTS,
    help="Network input side at test time, a multiple of 32 (512 -> 16x16 feature maps); the checkpoint's "
         "--thr is rescaled to keep the erased disk the same fraction of the image. Default: the checkpoint's.")]

# ---------------------------------------------------------------------------------- per-method options
OccluderSize = Annotated[int, typer.Option(
    metavar="PIXELS", rich_help_panel=OCCLUSION_GBP, help="Occluder side, pixels of the occlusion input.")]
OccluderStride = Annotated[int, typer.Option(
    metavar="PIXELS", rich_help_panel=OCCLUSION_GBP, help="Occluder stride, pixels.")]
ChunkSize = Annotated[int, typer.Option(
    metavar="N", rich_help_panel=OCCLUSION_GBP, help="Occluded copies per forward pass (a memory knob).")]
OcclusionInputSize = Annotated[Optional[int], typer.Option(
    metavar="PIXELS", rich_help_panel=OCCLUSION_GBP,
    help="Run occlusion at this input side (e.g. 112) to save time (default: the network's).")]
CoarseWeight = Annotated[float, typer.Option(
    metavar="W", rich_help_panel=OCCLUSION_GBP, help="Weight of the occlusion map in the fusion.")]
FineWeight = Annotated[float, typer.Option(
    metavar="W", rich_help_panel=OCCLUSION_GBP, help="Weight of the guided-backprop map in the fusion.")]
NmsRadius = Annotated[int, typer.Option(
    metavar="PIXELS", rich_help_panel=OCCLUSION_GBP, help="Non-maximum suppression radius, pixels.")]
KeepFraction = Annotated[float, typer.Option(
    metavar="FRACTION", rich_help_panel=OCCLUSION_GBP, help="Keep this top share of peaks by confidence.")]
CamNmsRadius = Annotated[int, typer.Option(
    metavar="CELLS", rich_help_panel=CAM, help="Non-maximum suppression radius, feature-map cells.")]


def in_panel(alias: Any, panel: str) -> Any:
    """The option ``alias`` shown in another help panel (same flag, type and help)."""
    base, info = get_args(alias)
    info = copy.copy(info)
    info.rich_help_panel = panel
    return Annotated[base, info]


# ---------------------------------------------------------------------------------- option groups
class OptionGroup:
    """Options that several commands share, declared once: ``name=(Annotated alias, default)``.

    :func:`command` adds them to a command's signature (after its own parameters) and passes
    their values to the command as one dict, or as ``build(**values)`` when ``build`` is given
    (the keypoint settings arrive as one :class:`lmpcli.settings.KeypointSettings`).
    """

    def __init__(self, build: Callable[..., Any] | None = None, **options: tuple[Any, Any]) -> None:
        self.build = build
        self.options = options


#: The test-time keypoint settings of ``predict`` and ``evaluate``: the fields of
#: :class:`lmpcli.settings.KeypointSettings`, built once from the flags (an unset flag, None, is the
#: checkpoint's value) and passed on as ``settings``.
KEYPOINT_SETTINGS = OptionGroup(
    build=KeypointSettings,
    k=(K, None), thr=(Thr, None), num_filters=(NumFilters, None), iterations=(Iterations, None),
    replica=(Replica, None), subcell=(Subcell, None), refine=(Refine, None), gate=(Gate, None), flip=(Flip, None),
    output_stride=(OutputStride, None), image_size=(ImageSize, None),
)

#: Which images of a CUB folder are used (evaluate, visualize-filters, visualize-parts).
SELECTION = OptionGroup(split=(SplitOpt, "test"), classes=(Classes, None))

#: Batching, device, runtime and decoding of the commands that run the networks on many images
#: (keywords of :func:`lmpcli.predict.run_predict`, :func:`lmpcli.evaluate.evaluate`,
#: :func:`lmpcli.filters.visualize_filters`).
PERFORMANCE_OPTIONS = OptionGroup(batch_size=(BatchSize, 8), device=(Device, "auto"), backend=(BackendOpt, "auto"),
                                  workers=(Workers, None))

#: Constructor keywords of the methods that take options: {method: {option: keyword}}.
METHOD_KEYWORDS = {
    "occlusion-gbp": {"occluder_size": "occluder_size", "occluder_stride": "occluder_stride",
                      "chunk_size": "chunk_size", "occlusion_input_size": "input_size",
                      "coarse_weight": "coarse_weight", "fine_weight": "fine_weight", "nms_radius": "nms_radius",
                      "keep_fraction": "keep_fraction"},
    "cam": {"cam_nms_radius": "nms_radius"},
}

#: The per-method options of ``predict`` and ``evaluate`` (:data:`METHOD_KEYWORDS`), with the
#: methods' own defaults (:data:`lmpcli.settings.METHOD_DEFAULTS`).
_METHOD_ALIASES = dict(occluder_size=OccluderSize, occluder_stride=OccluderStride, chunk_size=ChunkSize,
                       occlusion_input_size=OcclusionInputSize, coarse_weight=CoarseWeight, fine_weight=FineWeight,
                       nms_radius=NmsRadius, keep_fraction=KeepFraction, cam_nms_radius=CamNmsRadius)
METHOD_OPTIONS = OptionGroup(**{option: (_METHOD_ALIASES[option], METHOD_DEFAULTS[method][keyword])
                                for method, keywords in METHOD_KEYWORDS.items() for option, keyword in keywords.items()})


def method_keywords(methods: list[str], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method: constructor keywords}`` for those of ``methods`` that take options.

    Args:
        methods: method names (:data:`lmpcli.choices.METHODS`).
        values: the :data:`METHOD_OPTIONS` values by option name.
    """
    return {m: {kw: values[opt] for opt, kw in METHOD_KEYWORDS[m].items()} for m in methods if m in METHOD_KEYWORDS}


def command(**groups: OptionGroup) -> Callable[[Callable], Callable]:
    """Decorator for a command function: puts ``groups`` in its signature and passes choices as str.

    The function declares one placeholder parameter per group name (``keypoint: dict = None``):
    the group's options take its place in the signature (and so in ``--help``), and the function
    receives their values as one dict (option name -> value). Every Enum choice arrives as its
    plain value.
    """

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        params = []
        for name, p in sig.parameters.items():
            params += [p] if name not in groups else [
                inspect.Parameter(option, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=alias, default=default)
                for option, (alias, default) in groups[name].options.items()]

        @functools.wraps(fn)
        def run(**kwargs: Any) -> Any:
            kwargs = {name: v.value if isinstance(v, enum.Enum) else v for name, v in kwargs.items()}
            packed = {g: {name: kwargs.pop(name) for name in group.options} for g, group in groups.items()}
            packed = {g: groups[g].build(**values) if groups[g].build else values for g, values in packed.items()}
            return fn(**kwargs, **packed)

        run.__signature__ = sig.replace(parameters=params)
        return run

    return decorate
