"""Meters: per-batch updates, one summary at the end (after torchvision's classification reference).

torchvision's ``evaluate`` feeds every batch into meters (``MetricLogger`` / ``SmoothedValue``),
gathers them across processes and reads the summary; this module does the same for keypoints:

* :class:`KeypointMeter`: one method's keypoints against the ground truth: greedy PCK per
  rank (Guo & Farrell, Sec. 4.2, Table 2), part recall overall and per part group
  (:data:`lmpcli.data.PART_GROUPS`), where each keypoint rank lands (its nearest visible part
  within the radius, :func:`lmpcli.metrics.nearest_part`), accuracy and seconds;
* :class:`PartAssignmentMeter`: NMI / ARI of a part model's assignment maps at the landmarks
  (PDiscoNet's protocol);
* :class:`EntropyMeter`: the mean entropy of normalised feature maps (Sec. 4.1, Fig. 6) over all
  filters, over the maps that fire and over the top-m filters, and the share of dead maps.

Both keep what the summary needs (per-image records, or sums), ``state_dict()`` it for a
torchrun gather, and rebuild from several states with ``from_states`` (joined in the order
given: rank order, which is image order when every rank scores one contiguous block;
:func:`gather_meters`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import PART_GROUPS
from .distributed import DistContext, all_gather_objects
from .landmarks import assignment_scores
from .metrics import feature_map_entropy, nearest_part, part_recall

_RECORDS = ("xy", "nearest", "recall", "visible", "correct")


class KeypointMeter:
    """One method's keypoint scores over many batches (Sec. 4.2: greedy PCK, part recall).

    Keeps per-image records (cheap: (N, k) and (N, P) tensors) so that ranks can be joined
    image by image and every summary is computed once at the end, over all images.

    Args:
        alpha: PCK radius as a fraction of the shorter image side (``min(W, H)``), as in
            :func:`lmpcli.metrics.greedy_pck`.
        groups: ``{group name: 1-based CUB part ids}`` for per-group recall and landing
            (default :data:`lmpcli.data.PART_GROUPS`).
    """

    def __init__(self, alpha: float = 0.1, groups: Mapping[str, Sequence[int]] = PART_GROUPS):
        self.alpha = alpha
        self.groups = dict(groups)
        self.records: dict[str, list[Tensor]] = {key: [] for key in _RECORDS}
        self.seconds = 0.0

    def update(self, xy: Tensor, keypoints: Tensor, visible: Tensor, sizes: Tensor, *,
               logits: Tensor | None = None, labels: Tensor | None = None, seconds: float = 0.0) -> None:
        """Add one batch.

        Args:
            xy: (B, k, 2) float predicted keypoints, (x, y) pixels of the original image; NaN rows
                (keypoint not found) count as misses.
            keypoints: (B, P, 2) ground-truth parts, same convention. visible: (B, P) bool.
            sizes: (B, 2) image (W, H) in pixels.
            logits: (B, num_classes) class scores, or None for a method that runs no network
                (then the row has no accuracy and no speed).
            labels: (B,) int64 true class indices in the logits' order (-1: a class the network
                does not know, always wrong); needed with ``logits``.
            seconds: time the method spent on this batch.
        """
        self.records["xy"].append(xy)
        self.records["nearest"].append(nearest_part(xy, keypoints, visible, sizes, self.alpha))
        self.records["recall"].append(part_recall(xy, keypoints, visible, sizes, self.alpha))
        self.records["visible"].append(visible)
        if logits is not None:
            self.records["correct"].append(logits.argmax(-1) == labels)
        self.seconds += seconds

    @property
    def images(self) -> int:
        """Number of images added."""
        return sum(len(n) for n in self.records["nearest"])

    def xy(self) -> Tensor:
        """(N, k, 2) every image's keypoints, in the order added."""
        return torch.cat(self.records["xy"])

    def hits(self) -> Tensor:
        """(N, k) bool: greedy PCK correctness of every image's keypoints (:func:`lmpcli.metrics.greedy_pck`)."""
        return torch.cat(self.records["nearest"]) >= 0

    def compute(self) -> dict:
        """The summary row, percentages.

        Returns:
            ``{"KP1".."KPk": greedy PCK@alpha of rank r (% of images whose r-th keypoint has a
            visible part within the radius), "avg": over all ranks, "recall": % of visible parts
            with a keypoint within the radius, "recall_<group>": the same per part group,
            "acc": % correct classes, "images_per_s": images / seconds}``; ``acc`` and
            ``images_per_s`` are NaN when no batch had logits (a method without a network).

        Raises:
            ValueError: no image was added.
        """
        if not self.records["nearest"]:
            raise ValueError("no images to summarise")
        pck = self.hits().float()
        hit, vis = torch.cat(self.records["recall"]), torch.cat(self.records["visible"])
        row = {f"KP{r + 1}": 100 * pck[:, r].mean().item() for r in range(pck.shape[1])}
        row["avg"] = 100 * pck.mean().item()
        row["recall"] = 100 * hit.sum().item() / max(vis.sum().item(), 1)
        for group, parts in self.groups.items():
            cols = [p - 1 for p in parts if p - 1 < vis.shape[1]]
            row[f"recall_{group}"] = 100 * hit[:, cols].sum().item() / max(vis[:, cols].sum().item(), 1)
        ran_network = bool(self.records["correct"])
        row["acc"] = 100 * torch.cat(self.records["correct"]).float().mean().item() if ran_network else float("nan")
        row["images_per_s"] = self.images / max(self.seconds, 1e-9) if ran_network else float("nan")
        return row

    def landing(self) -> list[dict]:
        """Where each keypoint rank lands: one row per rank, % of images per part group.

        Returns:
            ``[{"rank": r, <group>: %, ..., "miss": %}]``: the share of images whose keypoint of
            rank r has its nearest visible part within the radius in that group; a row's groups
            sum to its greedy PCK (``KPr`` of :meth:`compute`) and ``miss`` is the rest.
        """
        nearest = torch.cat(self.records["nearest"])  # (N, k) part index 0..P-1, -1 = miss
        names = list(self.groups)
        group_of = torch.full((nearest.max().clamp_min(0).item() + 2,), len(names))  # index 0: miss
        for g, parts in enumerate(self.groups.values()):
            group_of[[p for p in parts if p < len(group_of)]] = g  # part p (1-based) sits at index p
        share = 100 * F.one_hot(group_of[nearest + 1], len(names) + 1).float().mean(0)  # (k, groups + miss)
        return [{"rank": r + 1, **dict(zip([*names, "miss"], share[r].tolist()))} for r in range(share.shape[0])]

    def state_dict(self) -> dict:
        """Settings and records, picklable (for :func:`lmpcli.distributed.all_gather_objects`)."""
        return {"alpha": self.alpha, "groups": self.groups, "records": self.records, "seconds": self.seconds}

    @classmethod
    def from_states(cls, states: Sequence[dict]) -> KeypointMeter:
        """One meter holding every state's images, in the order of ``states``; seconds added."""
        meter = cls(states[0]["alpha"], states[0]["groups"])
        for state in states:
            for key in _RECORDS:
                meter.records[key] += state["records"][key]
            meter.seconds += state["seconds"]
        return meter


class EntropyMeter:
    """Mean entropy of normalised feature maps (Guo & Farrell, Sec. 4.1, Fig. 6).

    "we take the normalized final conv-layer feature maps and compute their average entropy:
    sparser feature maps have smaller entropy". Every (image, filter) map is normalised to a
    distribution over its h*w cells (:func:`lmpcli.metrics.feature_map_entropy`; an all-zero
    map counts as uniform) and its entropy (nats) averaged: over all filters, over the maps that
    fire (peak > 0), and over the ``top_m`` filters per image with the highest peak (the ones
    filter selection, Sec. 3.2, keeps).

    Args:
        top_m: filters per image for the top-m mean (clipped to C); None or 0: not computed.
    """

    _SUMS = ("all", "active", "top", "n_all", "n_active", "n_top", "images")

    def __init__(self, top_m: int | None = None):
        self.top_m = int(top_m) if top_m else None
        self.sums = dict.fromkeys(self._SUMS, 0)
        self.filters = 0
        self.map_size = (0, 0)

    def update(self, features: Tensor) -> None:
        """Add one batch of (B, C, h, w) feature maps (any float dtype; negatives clipped to 0)."""
        features = features.float()
        b, c, h, w = features.shape
        self.filters, self.map_size = c, (h, w)
        entropy = feature_map_entropy(features)  # (B, C)
        peak = features.flatten(-2).amax(-1)  # (B, C)
        active = peak > 0
        s = self.sums
        s["all"] += float(entropy.double().sum())
        s["n_all"] += entropy.numel()
        s["active"] += float(entropy[active].double().sum())
        s["n_active"] += int(active.sum())
        if self.top_m:
            top = peak.topk(min(self.top_m, c), dim=-1).indices
            s["top"] += float(entropy.gather(-1, top).double().sum())
            s["n_top"] += top.numel()
        s["images"] += b

    @property
    def images(self) -> int:
        """Number of images added."""
        return self.sums["images"]

    def compute(self) -> dict:
        """The means, in nats.

        Returns:
            ``{"all_filters": mean over every (image, filter) map, "active_filters": mean over
            the maps with a positive peak (NaN if none fires), "top<m>_filters": mean over the
            top-m filters per image (only with ``top_m``), "uniform_map": log(h*w), the entropy
            of a uniform map (the maximum), "dead_fraction": share of maps that never fire}``.

        Raises:
            ValueError: no feature map was added.
        """
        s = self.sums
        if s["n_all"] == 0:
            raise ValueError("no feature maps to compute the entropy of")
        out = {"all_filters": s["all"] / s["n_all"],
               "active_filters": s["active"] / s["n_active"] if s["n_active"] else float("nan")}
        if self.top_m:
            out[f"top{self.top_m}_filters"] = s["top"] / max(s["n_top"], 1)
        out["uniform_map"] = math.log(self.map_size[0] * self.map_size[1])
        out["dead_fraction"] = 1 - s["n_active"] / s["n_all"]
        return out

    def state_dict(self) -> dict:
        """Settings and sums, picklable."""
        return {"top_m": self.top_m, "sums": self.sums, "filters": self.filters, "map_size": self.map_size}

    @classmethod
    def from_states(cls, states: Sequence[dict]) -> EntropyMeter:
        """One meter with every state's sums added (a state of no images leaves the map size)."""
        meter = cls(states[0]["top_m"])
        for state in states:
            for key in cls._SUMS:
                meter.sums[key] += state["sums"][key]
            if state["sums"]["images"]:
                meter.filters, meter.map_size = state["filters"], tuple(state["map_size"])
        return meter


#: Columns :class:`PartAssignmentMeter` adds to a method's row (percent).
MAP_COLUMNS = ("NMI_map", "ARI_map")


class PartAssignmentMeter:
    """NMI / ARI of a part model's maps as PDiscoNet and PDiscoFormer compute them.

    Each visible ground-truth landmark takes the part of the part-assignment map at its location
    (:meth:`lmpcli.parts.PartModel.assign`: argmax over the K parts, background K where none
    reaches its threshold); NMI and ARI compare those part ids with the landmark ids over all
    visible landmarks of all images (:func:`lmpcli.landmarks.assignment_scores`). Unlike the
    nearest-keypoint adaptation of :func:`lmpcli.landmarks.part_assignment_scores`, this needs
    the maps, so only part models have it.
    """

    def __init__(self) -> None:
        self.landmarks: list[Tensor] = []
        self.parts: list[Tensor] = []

    def update(self, parts: Tensor, visible: Tensor) -> None:
        """Add one batch: ``parts`` (B, L) int64 part id per landmark (from ``PartModel.assign``),
        ``visible`` (B, L) bool."""
        visible = visible.bool().cpu()
        ids = torch.arange(visible.shape[1]).expand_as(visible)
        self.landmarks.append(ids[visible])
        self.parts.append(parts.cpu()[visible])

    def compute(self) -> dict:
        """``{"NMI_map": .., "ARI_map": ..}`` in percent.

        Raises:
            ValueError: no visible landmark was added.
        """
        truth = torch.cat(self.landmarks) if self.landmarks else torch.zeros(0, dtype=torch.int64)
        pred = torch.cat(self.parts) if self.parts else torch.zeros(0, dtype=torch.int64)
        return dict(zip(MAP_COLUMNS, assignment_scores(truth.numpy(), pred.numpy())))

    def state_dict(self) -> dict:
        """The pooled labels, picklable."""
        return {"landmarks": self.landmarks, "parts": self.parts}

    @classmethod
    def from_states(cls, states: Sequence[dict]) -> PartAssignmentMeter:
        """One meter holding every state's labels, in the order given."""
        meter = cls()
        for state in states:
            meter.landmarks += state["landmarks"]
            meter.parts += state["parts"]
        return meter


def gather_meters(meters: Sequence[KeypointMeter | EntropyMeter | PartAssignmentMeter], images: int, bounds: tuple[int, int],
                  total: int, ctx: DistContext) -> list:
    """Every rank's meters, joined in rank order, which is image order (torchrun).

    Each rank scored the block ``bounds`` (``[start, stop)``, :func:`lmpcli.shards.shard_bounds`)
    of the ``total`` images, ``images`` of them, and passes its meters in the same order as the
    other ranks; the blocks are checked to tile ``range(total)`` with every image scored once.

    Returns:
        the meters over all ranks' images, in the order and of the types of ``meters``.

    Raises:
        RuntimeError: a rank's block is out of place or it scored another number of images.
    """
    parts = all_gather_objects({"meters": [m.state_dict() for m in meters], "n": images, "bounds": bounds}, ctx)
    expected = 0
    for rank, part in enumerate(parts):
        start, stop = part["bounds"]
        if start != expected or part["n"] != stop - start:
            raise RuntimeError(f"rank {rank} scored {part['n']} images of block {start}-{stop}, expected from {expected}")
        expected = stop
    if expected != total:
        raise RuntimeError(f"the ranks scored {expected} of {total} images")
    return [type(m).from_states([part["meters"][i] for part in parts]) for i, m in enumerate(meters)]


__all__ = ["MAP_COLUMNS", "EntropyMeter", "KeypointMeter", "PartAssignmentMeter", "gather_meters"]
