"""Part model: K parts with fixed identities, learned from class labels only (issue 25).

LMPNet's keypoints are ranked by prominence, so a rank names no part across images. The part
model turns the main network's final-conv feature map (B, C, h, w) into K part response maps
(B, K, h, w) whose index is the part's identity on every image. It is fitted on training images
without keypoint labels (the network itself saw only class labels) and stored in the checkpoint
under :data:`CHECKPOINT_KEY` as plain tensors, strings and numbers, so the checkpoint still loads
with ``torch.load(weights_only=True)``.

Fitting methods (docs/quality-log.md section 30 chose between them by measurement):

* ``filters``: spectral clustering of the filters by where their peaks co-occur across images
  (the part-detector route of Xiao et al. 2015 and Simon & Rodner 2015); a part's map is the sum
  of its filters' maps, each divided by that filter's 99th-percentile peak.
* ``kmeans``: spherical k-means of foreground cell descriptors; a part's map is each cell's
  descriptor dotted with the unit centroid.
* ``kmeans-centred``: as ``kmeans``, but each image's foreground descriptors are first centred
  on their own mean, which removes what all cells of one bird share (mostly its species) and
  leaves what tells its parts apart; a cell's response is its cosine with the centroid times
  its channel sum relative to the image's strongest cell (added after a pilot, quality log 30).
* ``nmf``: non-negative matrix factorisation of foreground cell descriptors (Deep Feature
  Factorization, Collins et al. ECCV 2018); a part's map is the image's coefficient map, from
  multiplicative updates with the fitted basis fixed.

``kmeans-centred`` can also read a mid-level map beside the final one (``PartModel.mid_channels``):
the last stride-16 block's output (112 channels on Lite0). With ``maps="final+mid"`` it is
average-pooled onto the final grid (:func:`lmpcli.backbones.mid_level_map`, ``grid="final"``);
with ``maps="final+mid-fine"`` (the default) the final map is bilinearly upsampled onto the
mid-level map's grid instead (``grid="mid"``: 28 x 28 cells of 16 px at 448 px), so parts have
borders twice as fine. Each map's descriptors are centred and normalised on their own and then
concatenated; the foreground cells and the energy weighting still come from the final map (on the
fine grid: 4 x :data:`FOREGROUND_CELLS` cells, the same share of the map). At K = 16 the pooled
mid-level map raised NMI / ARI on the part maps by 8.7 / 7.2 points on the cub50 test split
(quality log section 38, item 5b) and the fine grid by 4.6 / 5.9 more (section 39).

At test time part j is visible when its map's peak reaches ``threshold[j]`` and reported absent
(NaN) otherwise, never invented. A visible part sits at the response-weighted centroid of its
segment, the cells where its map is the largest of the K and reaches its threshold
(``PartModel.location = "segment"``, the default of a new ``kmeans-centred`` fit: Kp -1.8 against
the peak on the cub50 train halves, quality log section 41), or at the 3 x 3 sub-cell centroid of
its map's peak (``"peak"``: the other methods, and part models fitted before section 41).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .choices import MID_MAP_METHODS, PART_LOCATIONS, PART_MAPS, PART_METHODS  # fitting methods, maps, locations
from .layers.selection import _centroid3x3
from .progress import NullProgress, Progress
from .settings import TRAIN_DEFAULTS

#: Checkpoint key holding :meth:`PartModel.to_dict`.
CHECKPOINT_KEY = "parts"
#: Cells per image whose descriptors ``kmeans`` and ``nmf`` fit on: the strongest by channel sum
#: (on the final grid; :func:`foreground_cells` scales it to the fine grid).
FOREGROUND_CELLS = 16
#: Grids a part model's maps can lie on: the final-conv map's, or the mid-level map's (finer).
PART_GRIDS = ("final", "mid")
#: Visible when the peak reaches this fraction of the part's median training peak.
VISIBLE_FRACTION = 0.3
#: Multiplicative updates of the ``nmf`` coefficients at test time.
NMF_ITERATIONS = 30


class PartModelError(ValueError):
    """A part model that cannot be fitted, read or applied (bad K, method or shapes)."""


@dataclass
class PartModel:
    """K parts with fixed identities over a C-channel feature map.

    Attributes:
        method: one of :data:`PART_METHODS`.
        projection: (K, C) float32; part maps are ``projection @ features`` per cell (``filters``,
            ``kmeans``) or the NMF basis H (``nmf``).
        threshold: (K,) peak response at which a part counts as visible.
        scale: (K,) peak response that scores 1 (the 95th percentile of training peaks).
        iterations: multiplicative updates for ``nmf`` (0 for the linear methods).
        meta: plain data about the fit (images, seconds, data folder).
        mid_channels: channels of the mid-level map the model also reads (``kmeans-centred``
            with ``maps="final+mid"`` or ``"final+mid-fine"``); 0: the final-conv map only. The
            maps it is given are then the final map and the mid-level map stacked along channels
            on its :attr:`grid` (:func:`stack_maps`).
        grid: :data:`PART_GRIDS`: ``"final"``, the maps lie on the final-conv map's grid;
            ``"mid"``, on the mid-level map's (``maps="final+mid-fine"``).
        location: :data:`PART_LOCATIONS`: where :meth:`locate` puts a visible part, ``"segment"``
            (:func:`segment_centroids`) or ``"peak"`` (the 3 x 3 centroid around its peak; part
            models stored without this field, written before it existed, read as ``"peak"``).
    """

    method: str
    projection: Tensor
    threshold: Tensor
    scale: Tensor
    iterations: int = 0
    meta: dict | None = None
    mid_channels: int = 0
    grid: str = "final"
    location: str = "peak"

    @property
    def maps(self) -> str:
        """Which maps the model reads, on which grid: ``"final"``, ``"final+mid"`` or
        ``"final+mid-fine"`` (:data:`PART_MAPS`)."""
        return "final" if not self.mid_channels else "final+mid-fine" if self.grid == "mid" else "final+mid"

    @property
    def foreground_cells(self) -> int:
        """Foreground cells per image its descriptors are centred on (:func:`foreground_cells`)."""
        return foreground_cells(self.grid)

    @property
    def k(self) -> int:
        """Number of parts K."""
        return int(self.projection.shape[0])

    def to_dict(self) -> dict:
        """Plain tensors / strings / numbers for the checkpoint (``weights_only`` loadable)."""
        return {"method": self.method, "projection": self.projection.float().contiguous(),
                "threshold": self.threshold.float(), "scale": self.scale.float(),
                "iterations": int(self.iterations), "meta": dict(self.meta or {}), "mid_channels": int(self.mid_channels),
                "grid": str(self.grid), "location": str(self.location)}

    @classmethod
    def from_dict(cls, d: dict) -> PartModel:
        """Inverse of :meth:`to_dict`.

        Raises:
            PartModelError: missing keys or inconsistent shapes.
        """
        try:
            model = cls(str(d["method"]), d["projection"].float(), d["threshold"].float(), d["scale"].float(),
                        int(d.get("iterations", 0)), dict(d.get("meta") or {}), int(d.get("mid_channels", 0)),
                        str(d.get("grid", "final")), str(d.get("location", "peak")))
        except (KeyError, AttributeError, TypeError) as e:
            raise PartModelError(f"not a part model: {e}") from e
        if model.projection.ndim != 2 or model.threshold.shape != (model.k,) or model.scale.shape != (model.k,):
            raise PartModelError("part model tensors have inconsistent shapes")
        if model.mid_channels and (model.method not in MID_MAP_METHODS
                                   or model.mid_channels >= model.projection.shape[1]):
            raise PartModelError(f"a part model reading the mid-level map must be {', '.join(MID_MAP_METHODS)} "
                                 "with fewer mid-level than total channels")
        if model.grid not in PART_GRIDS or (model.grid == "mid" and not model.mid_channels):
            raise PartModelError(f"part model grid {model.grid!r}: one of {', '.join(PART_GRIDS)}, "
                                 "and 'mid' only with a mid-level map")
        if model.location not in PART_LOCATIONS:
            raise PartModelError(f"part model location {model.location!r}: one of {', '.join(PART_LOCATIONS)}")
        return model

    def responses(self, features: Tensor) -> Tensor:
        """Part response maps.

        Args:
            features: (B, C, h, w) final-conv maps of the main network (any float dtype); with
                :attr:`mid_channels`, the final and mid-level maps stacked on :attr:`grid`
                (:func:`stack_maps`).

        Returns:
            (B, K, h, w) float32, non-negative.

        Raises:
            PartModelError: C differs from the fitted one.
        """
        b, c, h, w = features.shape
        if c != self.projection.shape[1]:
            raise PartModelError(f"the part model was fitted on {self.projection.shape[1]}-channel maps, got {c}")
        p = self.projection.to(features.device)
        f = features.float().flatten(2).transpose(1, 2)  # (B, hw, C)
        if self.method == "nmf":
            r = _nmf_coefficients(f.reshape(-1, c), p, self.iterations).reshape(b, h * w, -1)
        elif self.method == "kmeans-centred":
            energy = f[..., : c - self.mid_channels].sum(-1)  # (B, hw) of the final map
            r = (centred_descriptors(f, energy, self.mid_channels, self.foreground_cells) @ p.T).clamp_min(0) \
                * (energy / energy.amax(-1, keepdim=True).clamp_min(1e-12))[..., None]
        else:
            r = (f @ p.T).clamp_min(0)
        return r.transpose(1, 2).reshape(b, -1, h, w)

    def locate(self, features: Tensor, radius: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Where each part is, in feature-map cells.

        Args:
            features: (B, C, h, w) final-conv maps.
            radius: the peak's centroid window is (2 radius + 1) cells square.

        Returns:
            (xy (B, K, 2) float32 cells (x, y): by :attr:`location`, the centroid of the part's
            segment (:func:`segment_centroids`) or the sub-cell centroid of the peak's 3 x 3
            window; NaN where absent; score (B, K) in [0, 1], 0 where absent; visible (B, K)
            bool, the peak reaching :attr:`threshold`; peak (B, K) raw peak response).
        """
        r = self.responses(features)
        w = r.shape[-1]
        peak, idx = r.flatten(2).max(-1)  # (B, K)
        xy = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).float()
        parts = torch.arange(r.shape[1], device=r.device).expand(r.shape[0], -1)  # (B, K)
        xy = _centroid3x3(r, parts, xy, radius)
        if self.location == "segment":
            xy = segment_centroids(r, self.threshold, xy)
        visible = peak >= self.threshold.to(peak.device)
        score = (peak / self.scale.to(peak.device)).clamp(0, 1)
        xy = torch.where(visible[..., None], xy, float("nan"))
        return xy, torch.where(visible, score, 0.0), visible, peak

    def assign(self, features: Tensor, points: Tensor, cell_centre: float = 0.5) -> Tensor:
        """The part at given points: the part-assignment-map protocol of PDiscoNet / PDiscoFormer.

        Their NMI / ARI (``eval_nmi_ari`` in PDiscoNet's ``evaluate_cub.py``) upsample the K + 1
        part maps bilinearly to the input and read the argmax at each landmark's pixel. Here the
        :meth:`responses` are sampled bilinearly at each point (``grid_sample``,
        ``align_corners=False``, border clamped: equal to upsampling and reading the pixel) and the point
        takes the part with the largest response, or background (id K) where no part reaches
        its visibility :attr:`threshold` there (the background map of those models).

        Args:
            features: (B, C, h, w) final-conv maps of the main network.
            points: (B, L, 2) float (x, y) as fractions of the image's width and height (pixels
                of the original image divided by its (W, H); the network input is a square
                resize, so the same fractions hold there); NaN for unknown points.
            cell_centre: where a cell sits, fraction of the stride (as :func:`part_keypoints`).

        Returns:
            (B, L) int64 part id in ``0 .. K`` (K = background), -1 where the point is NaN.

        Raises:
            PartModelError: C differs from the fitted one.
        """
        r = self.responses(features)  # (B, K, h, w)
        pts = points.to(r.device, torch.float32)
        known = ~pts.isnan().any(-1)  # (B, L)
        sampled = sample_maps(r, pts, cell_centre)  # (B, K, L)
        part = sampled.argmax(1)  # (B, L)
        present = (sampled >= self.threshold.to(r.device)[None, :, None]).any(1)
        part = torch.where(present, part, self.k)
        return torch.where(known, part, -1)


def segment_masks(maps: Tensor, threshold: Tensor) -> Tensor:
    """Each part's segment: the cells where its map is the largest of the K (ties to the lower id)
    and reaches its ``threshold``.

    Args:
        maps: (B, K, h, w) part maps. threshold: (K,).

    Returns:
        (B, K, h, w) bool; the K masks of an image are disjoint.
    """
    k = maps.shape[1]
    wins = maps.argmax(1, keepdim=True) == torch.arange(k, device=maps.device)[None, :, None, None]
    return wins & (maps >= threshold.to(maps.device, maps.dtype)[None, :, None, None])


def segment_centroids(maps: Tensor, threshold: Tensor, fallback: Tensor) -> Tensor:
    """Each part's place as the response-weighted centroid of its segment.

    A part's segment (:func:`segment_masks`) is the cells where its map is the largest of the K and
    reaches its ``threshold``; the centroid weighs each of those cells by the part's response
    there. This is where PDiscoNet puts a part (the centroid of an attention map that a softmax
    across the parts has already cut to the part's segment); on k-means part maps it lowers Kp by
    1.8 against the peak's 3 x 3 centroid (quality log section 41, item 3).

    Args:
        maps: (B, K, h, w) non-negative part maps.
        threshold: (K,) response a cell must reach to join its part's segment.
        fallback: (B, K, 2) float32 cells (x, y), used where a segment is empty (the part's
            peak cell is won by another part).

    Returns:
        (B, K, 2) float32 cells (x, y), cell ``i``'s centre at ``i`` (the units of
        :meth:`PartModel.locate`).
    """
    b, k, h, w = maps.shape
    flat = maps.float().flatten(2)  # (B, K, hw)
    mass = flat * segment_masks(maps, threshold).flatten(2)
    ys, xs = torch.meshgrid(torch.arange(h, device=flat.device, dtype=torch.float32),
                            torch.arange(w, device=flat.device, dtype=torch.float32), indexing="ij")
    total = mass.sum(-1)  # (B, K)
    centre = torch.stack([mass @ xs.flatten(), mass @ ys.flatten()], -1) / total.clamp_min(1e-12)[..., None]
    return torch.where(total[..., None] > 0, centre, fallback)


def sample_maps(maps: Tensor, points: Tensor, cell_centre: float = 0.5) -> Tensor:
    """Maps read bilinearly at points: equal to upsampling them to the image and reading the pixel.

    Args:
        maps: (B, K, h, w) float maps on a feature-map grid (cell ``i`` at ``(i + cell_centre)``
            strides).
        points: (B, L, 2) float (x, y) as fractions of the image's width and height; NaN points
            are read at the image centre (callers mask them).
        cell_centre: where a cell sits, fraction of the stride (as :func:`part_keypoints`).

    Returns:
        (B, K, L) values (``grid_sample``, bilinear, ``align_corners=False``, border clamped).
    """
    h, w = maps.shape[-2:]
    pts = points.to(maps.device, maps.dtype)
    offset = pts.new_tensor([(1 - 2 * cell_centre) / w, (1 - 2 * cell_centre) / h])
    grid = (2 * pts.nan_to_num(0.5) - 1 + offset)[:, :, None, :]  # (B, L, 1, 2) in grid_sample's [-1, 1]
    return torch.nn.functional.grid_sample(maps, grid, mode="bilinear", padding_mode="border",
                                           align_corners=False)[..., 0]


def _nmf_coefficients(v: Tensor, h: Tensor, iterations: int) -> Tensor:
    """W >= 0 minimising ||V - W H||_F for fixed H: (N, C), (K, C) -> (N, K) (Lee & Seung updates)."""
    v = v.clamp_min(0)
    hht = h @ h.T
    vht = v @ h.T
    w = torch.linalg.lstsq(hht, vht.T).solution.T.clamp_min(1e-6)  # least-squares start
    for _ in range(iterations):
        w = w * vht / (w @ hht).clamp_min(1e-9)
    return w


@torch.inference_mode()
def extract_features(model, loader, progress: Progress | None = None,
                     with_mid: bool = False) -> Iterator[tuple[dict, Tensor]]:
    """Yield (batch, main-network final-conv maps (B, C, h, w) float32 CPU) for each batch of ``loader``.

    Runs the main network only (the part model does not use the replica), in channels_last
    memory format under :func:`torch.inference_mode`. Batches without images (all unreadable)
    are skipped. With ``with_mid`` the maps are the final and the mid-level map stacked on the
    final grid (:func:`stack_maps`), (B, C + C', h, w).
    """
    for batch, final, mid in _network_maps(model, loader, progress, with_mid):
        yield batch, stack_maps(final, mid).contiguous()


@torch.inference_mode()
def _network_maps(model, loader, progress: Progress | None,
                  with_mid: bool) -> Iterator[tuple[dict, Tensor, Tensor | None]]:
    """:func:`extract_features` before stacking: (batch, final maps (B, C, h, w), mid-level maps
    (B, C', H', W') at their own resolution or None), float32 CPU."""
    progress = progress or NullProgress()
    net = model.main.to(memory_format=torch.channels_last)
    device = next(net.parameters()).device
    for batch in loader:
        images = batch.get("image") if isinstance(batch, dict) else batch[0]
        if images is None:
            progress.advance(len(batch.get("errors", ())))
            continue
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        out = net(images, with_mid=True) if with_mid else net(images)
        progress.advance(len(images) + (len(batch.get("errors", ())) if isinstance(batch, dict) else 0))
        yield batch, out[1].float().contiguous().cpu(), (out[2].float().contiguous().cpu() if with_mid else None)


def foreground_cells(grid: str = "final") -> int:
    """Foreground cells per image on ``grid`` (:data:`PART_GRIDS`): :data:`FOREGROUND_CELLS` on the
    final grid, 4 x as many on the mid-level grid (twice as fine each way: the same share of the map;
    quality log section 39). Read at call time."""
    return FOREGROUND_CELLS * (4 if grid == "mid" else 1)


def _foreground_mean(f: Tensor, energy: Tensor, cells: int | None = None) -> Tensor:
    """(B, hw, C) descriptors, (B, hw) channel sums -> (B, C) mean descriptor of each image's strongest
    cells (None: :data:`FOREGROUND_CELLS`, read at call time)."""
    cells = FOREGROUND_CELLS if cells is None else cells
    top = energy.topk(min(cells, energy.shape[-1]), -1).indices
    return f.gather(1, top[..., None].expand(-1, -1, f.shape[-1])).mean(1)


def centred_cells(f: Tensor, energy: Tensor | None = None, cells: int | None = None) -> Tensor:
    """The cell descriptors ``kmeans-centred`` compares: each image's cells minus the mean of its
    ``cells`` strongest cells (by channel sum), L2-normalised.

    Args:
        f: (B, hw, C) float32 cell descriptors of the final-conv maps.
        energy: (B, hw) channel sums (computed when None).
        cells: foreground cells per image; None: :data:`FOREGROUND_CELLS`.

    Returns:
        (B, hw, C) float32 unit vectors.
    """
    energy = f.sum(-1) if energy is None else energy
    return torch.nn.functional.normalize(f - _foreground_mean(f, energy, cells)[:, None, :], dim=-1)


def centred_descriptors(f: Tensor, energy: Tensor, mid_channels: int = 0, cells: int | None = None) -> Tensor:
    """``kmeans-centred``'s cell descriptors: :func:`centred_cells` of the final map, or with
    ``mid_channels`` the final map's and the mid-level map's, each centred and normalised on its own,
    concatenated and L2-normalised (equal weight).

    Args:
        f: (B, hw, C) float32 cell descriptors; the last ``mid_channels`` are the mid-level map's.
        energy: (B, hw) the final map's channel sums (choose the foreground cells).
        cells: foreground cells per image (None: :data:`FOREGROUND_CELLS`; :func:`foreground_cells`).

    Returns:
        (B, hw, C) float32 unit vectors.
    """
    if not mid_channels:
        return centred_cells(f, energy, cells)
    pieces = (centred_cells(f[..., :-mid_channels], energy, cells), centred_cells(f[..., -mid_channels:], energy, cells))
    return torch.nn.functional.normalize(torch.cat(pieces, -1), dim=-1)


def stack_maps(features: Tensor, mid: Tensor | None, grid: str = "final") -> Tensor:
    """The maps a part model reads: the final maps, or with ``mid`` both stacked along channels.

    Args:
        features: (B, C, h, w) final-conv maps.
        mid: None, or (B, C', H', W') the mid-level map at its own resolution (the network's
            third output; H' = 2h at output stride 32, h at 16).
        grid: :data:`PART_GRIDS`: ``"final"`` pools ``mid`` onto the final grid
            (:func:`lmpcli.backbones.mid_level_map`); ``"mid"`` upsamples ``features`` bilinearly
            onto the mid-level grid (``align_corners=False``: cell centres stay at tile centres).

    Returns:
        (B, C, h, w) without ``mid``; (B, C + C', h, w) on ``"final"``; (B, C + C', H', W') on ``"mid"``;
        ``features``' dtype.

    Raises:
        PartModelError: an unknown ``grid``.
    """
    from .backbones import mid_level_map

    if grid not in PART_GRIDS:
        raise PartModelError(f"unknown part grid {grid!r}; choose one of {', '.join(PART_GRIDS)}")
    if mid is None:
        return features
    mid = mid.to(features.dtype)
    if grid == "final":
        return torch.cat([features, mid_level_map(mid, features)], 1)
    if tuple(features.shape[-2:]) != tuple(mid.shape[-2:]):
        features = torch.nn.functional.interpolate(features, size=tuple(mid.shape[-2:]), mode="bilinear",
                                                   align_corners=False)
    return torch.cat([features, mid], 1)


def calibrate(model: PartModel, features: Tensor, labelled: Tensor | None = None) -> Tensor:
    """Set ``model``'s visibility threshold and score scale from the maps of its fit images, in place:
    visible at :data:`VISIBLE_FRACTION` of the median peak, score 1 at the 95th percentile.

    Args:
        features: (N, C, h, w) final-conv maps (float16 or float32).
        labelled: optional (N, K) bool: part j's statistics over the images where it is labelled
            only (named landmarks; every column needs at least one True). None: all images.

    Returns:
        (N, K) float32 peak responses of the fit images.
    """
    peaks = torch.cat([model.responses(f).flatten(2).amax(-1) for f in _chunks(features)])  # (N, K)
    cols = [peaks[:, j] if labelled is None else peaks[labelled[:, j], j] for j in range(peaks.shape[1])]
    model.threshold = VISIBLE_FRACTION * torch.stack([c.median() for c in cols])
    model.scale = torch.stack([torch.quantile(c, 0.95) for c in cols]).clamp_min(1e-6)
    return peaks


#: Feature-map cells per chunk of :func:`_chunks` (64 images of 14 x 14; 16 of 28 x 28).
CHUNK_CELLS = 64 * 196


def _chunks(features: Tensor | StackedMaps, size: int | None = None) -> Iterator[Tensor]:
    """Slices of ``features`` as float32, ``size`` images at a time (None: :data:`CHUNK_CELLS` cells),
    so the per-cell temporaries of the fit stay the same size on every grid."""
    size = size or max(1, CHUNK_CELLS // (features.shape[-2] * features.shape[-1]))
    for i in range(0, len(features), size):
        yield features[i: i + size].float()


@dataclass
class StackedMaps:
    """The maps of N images for a part model, each kept at its own resolution and stacked on
    ``grid`` one slice at a time (:func:`stack_maps`): on the fine grid the upsampled final map
    would take 4 x the memory of the maps it comes from.

    Attributes:
        final: (N, C, h, w) final-conv maps (float16 or float32).
        mid: (N, C', H', W') mid-level maps at their own resolution.
        grid: :data:`PART_GRIDS`.

    ``maps[i:j]`` is the (j - i, C + C', H, W) float32 stack; ``len``, ``shape`` and ``ndim`` are
    those of the full stack, so :func:`fit_part_model` and :func:`calibrate` take it for a tensor.
    """

    final: Tensor
    mid: Tensor
    grid: str = "final"

    ndim = 4

    def __len__(self) -> int:
        return len(self.final)

    @property
    def shape(self) -> torch.Size:
        hw = self.mid.shape[-2:] if self.grid == "mid" else self.final.shape[-2:]
        return torch.Size((len(self.final), self.final.shape[1] + self.mid.shape[1], *hw))

    def __getitem__(self, rows: slice) -> Tensor:
        if not isinstance(rows, slice):
            raise TypeError("StackedMaps takes slices of images only")
        return stack_maps(self.final[rows].float(), self.mid[rows].float(), self.grid)


def foreground_descriptors(features: Tensor, cells: int = FOREGROUND_CELLS) -> Tensor:
    """(N, C, h, w) maps -> (N * cells, C) float32 descriptors of each image's strongest cells (channel sum)."""
    out = []
    for f in _chunks(features):
        flat = f.flatten(2)  # (n, C, hw)
        top = flat.sum(1).topk(min(cells, flat.shape[-1]), -1).indices  # (n, cells)
        out.append(flat.gather(2, top[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2).reshape(-1, flat.shape[1]))
    return torch.cat(out)


def _fit_filters(features: Tensor, k: int, seed: int, num_filters: int = 128, min_share: float = 0.01) -> Tensor:
    from sklearn.cluster import SpectralClustering

    n, c = features.shape[:2]
    w = features.shape[-1]
    affinity = torch.zeros(c, c, dtype=torch.float64)
    count = torch.zeros(c, dtype=torch.float64)
    peaks = []
    for f in _chunks(features):
        peak, idx = f.flatten(2).max(-1)  # (n, C)
        peaks.append(peak)
        _, sel = peak.topk(min(num_filters, c), -1)  # (n, M)
        cell = idx.gather(1, sel)
        xy = torch.stack([cell % w, torch.div(cell, w, rounding_mode="floor")], -1).float()
        d2 = ((xy[:, :, None] - xy[:, None]) ** 2).sum(-1)  # (n, M, M)
        rows = sel[:, :, None].expand_as(d2)
        cols = sel[:, None, :].expand_as(d2)
        affinity.index_put_((rows.reshape(-1), cols.reshape(-1)), torch.exp(-d2 / 2).double().reshape(-1), accumulate=True)
        count.index_put_((sel.reshape(-1),), torch.ones(sel.numel(), dtype=torch.float64), accumulate=True)
    keep = torch.nonzero(count >= max(1.0, min_share * n)).squeeze(1)
    if len(keep) < k:
        raise PartModelError(f"only {len(keep)} filters fire often enough to form {k} parts")
    a = affinity[keep][:, keep] / torch.sqrt(count[keep][:, None] * count[keep][None])
    labels = SpectralClustering(k, affinity="precomputed", random_state=seed,
                                assign_labels="cluster_qr").fit_predict(a.numpy())
    norm = torch.quantile(torch.cat(peaks), 0.99, dim=0).clamp_min(1e-6)  # (C,)
    proj = torch.zeros(k, c)
    proj[torch.as_tensor(labels), keep] = 1.0 / norm[keep]
    return proj


def _fit_kmeans(features: Tensor, k: int, seed: int) -> Tensor:
    from sklearn.cluster import KMeans

    x = torch.nn.functional.normalize(foreground_descriptors(features), dim=1).numpy()
    centres = KMeans(k, n_init=3, random_state=seed).fit(x).cluster_centers_
    return torch.nn.functional.normalize(torch.as_tensor(centres, dtype=torch.float32), dim=1)


def _fit_kmeans_centred(features: Tensor, k: int, seed: int, mid_channels: int = 0, grid: str = "final") -> Tensor:
    from sklearn.cluster import KMeans

    x = []
    n_cells = foreground_cells(grid)
    for f in _chunks(features):
        flat = f.flatten(2).transpose(1, 2)  # (n, hw, C)
        energy = flat[..., : flat.shape[-1] - mid_channels].sum(-1)
        top = energy.topk(min(n_cells, energy.shape[-1]), -1).indices  # (n, cells)
        cells = flat.gather(1, top[..., None].expand(-1, -1, flat.shape[-1]))  # (n, cells, C)
        # the foreground cells are their own strongest cells: centred on their mean, as every cell is at test time
        desc = centred_descriptors(cells, energy.gather(1, top), mid_channels, n_cells)
        x.append(desc.reshape(-1, flat.shape[-1]))
    x = torch.cat(x)
    x = torch.nn.functional.normalize(x, dim=1, out=x).numpy()  # in place: one copy of the descriptors
    centres = KMeans(k, n_init=3, random_state=seed).fit(x).cluster_centers_
    return torch.nn.functional.normalize(torch.as_tensor(centres, dtype=torch.float32), dim=1)


def _fit_nmf(features: Tensor, k: int, seed: int) -> Tensor:
    from sklearn.decomposition import NMF

    x = foreground_descriptors(features).clamp_min(0).numpy()
    return torch.as_tensor(NMF(k, init="nndsvda", max_iter=300, random_state=seed).fit(x).components_,
                           dtype=torch.float32)


def fit_part_model(features: Tensor | StackedMaps, k: int = 8, method: str = "nmf", seed: int = 0,
                   mid_channels: int = 0, grid: str = "final", location: str | None = None) -> PartModel:
    """Fit K parts to the main network's maps of training images (no keypoint labels).

    Args:
        features: (N, C, h, w) final-conv maps (float16 or float32; N >= 2 images); with
            ``mid_channels``, the final and mid-level maps stacked on ``grid`` (:func:`stack_maps`,
            or a :class:`StackedMaps`).
        k: number of parts, >= 1.
        method: one of :data:`PART_METHODS` (see the module docstring).
        seed: random state of the clustering / factorisation.
        mid_channels: the last ``mid_channels`` of ``features`` are the mid-level map
            (``kmeans-centred`` only; module docstring); 0: the final map only.
        grid: :data:`PART_GRIDS`, the grid ``features`` lie on (``"mid"`` needs ``mid_channels``).
        location: :data:`PART_LOCATIONS` (:attr:`PartModel.location`); None:
            :func:`resolve_part_location`.

    Returns:
        :class:`PartModel` whose thresholds come from these images: visible at
        :data:`VISIBLE_FRACTION` of the median peak, score 1 at the 95th percentile.

    Raises:
        PartModelError: unknown method or location, K < 1, fewer than 2 images, too few active
            filters, ``mid_channels`` with another method than ``kmeans-centred``, or a bad ``grid``.
    """
    location = resolve_part_location(method, location)
    if method not in PART_METHODS:
        raise PartModelError(f"unknown part method {method!r}; choose one of {', '.join(PART_METHODS)}")
    if mid_channels and method not in MID_MAP_METHODS:
        raise PartModelError(f"the mid-level map is read by {', '.join(MID_MAP_METHODS)} only, not {method!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PartModelError(f"the number of parts must be a positive integer, got {k!r}")
    if grid not in PART_GRIDS or (grid == "mid" and not mid_channels):
        raise PartModelError(f"part grid {grid!r}: one of {', '.join(PART_GRIDS)}, and 'mid' only with a mid-level map")
    if features.ndim != 4 or len(features) < 2:
        raise PartModelError("fitting parts needs the (N, C, h, w) maps of at least 2 images")
    if method != "filters" and len(features) * min(foreground_cells(grid), features.shape[-2] * features.shape[-1]) < k:
        raise PartModelError(f"{len(features)} images give fewer foreground cells than {k} parts")
    fit = {"filters": _fit_filters, "kmeans": _fit_kmeans,
           "kmeans-centred": functools.partial(_fit_kmeans_centred, mid_channels=mid_channels, grid=grid),
           "nmf": _fit_nmf}[method]
    proj = fit(features, k, seed)
    model = PartModel(method, proj, torch.zeros(k), torch.ones(k), NMF_ITERATIONS if method == "nmf" else 0,
                      mid_channels=int(mid_channels), grid=grid, location=location)
    calibrate(model, features)
    model.meta = {"images": len(features), "seed": int(seed)}
    return model


def part_keypoints(part_model: PartModel, features: Tensor, image_size: tuple[int, int],
                   cell_centre: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Part locations in network-input pixels.

    Args:
        features: (B, C, h, w) final-conv maps of the main network.
        image_size: (H, W) of the network input, pixels.
        cell_centre: where a cell sits, fraction of the stride (:func:`lmpcli.head.cells_to_pixels`).

    Returns:
        (xy (B, K, 2) float32 (x, y) input pixels, index = part id, NaN where absent;
        score (B, K) in [0, 1]; visible (B, K) bool).
    """
    from .head import cells_to_pixels

    xy, score, visible, _ = part_model.locate(features)
    return cells_to_pixels(xy, features.shape[-2:], image_size, cell_centre), score, visible


def part_model_from_checkpoint(ckpt: dict) -> PartModel | None:
    """The checkpoint's part model, or None for checkpoints without one (older files)."""
    d = ckpt.get(CHECKPOINT_KEY)
    return None if d is None else PartModel.from_dict(d)


#: Default number of parts (``lmp train --parts``, ``lmp fit-parts --k``) and fitting method
#: (docs/quality-log.md sections 30 and 38, item 6).
DEFAULT_PARTS = TRAIN_DEFAULTS["parts"]
DEFAULT_PART_METHOD = "kmeans-centred"
#: Where a new fit of :data:`DEFAULT_PART_METHOD` places a visible part (quality log section 41,
#: item 3); the other methods, whose maps keep responses off their part, place it at the peak.
DEFAULT_PART_LOCATION = PART_LOCATIONS[0]


def resolve_part_location(method: str | None, location: str | None) -> str:
    """``location``, or by default (None) :data:`DEFAULT_PART_LOCATION` for ``kmeans-centred`` (the
    method it was measured on, quality log section 41) and ``"peak"`` for the others. ``method``
    None: :data:`DEFAULT_PART_METHOD`.

    Raises:
        PartModelError: not one of :data:`PART_LOCATIONS`.
    """
    method = DEFAULT_PART_METHOD if method is None else method
    if location is None:
        location = DEFAULT_PART_LOCATION if method == "kmeans-centred" else "peak"
    if location not in PART_LOCATIONS:
        raise PartModelError(f"unknown part location {location!r}; choose one of {', '.join(PART_LOCATIONS)}")
    return str(location)


def resolve_part_maps(method: str | None, maps: str | None) -> str:
    """The maps a part model of ``method`` reads: ``maps``, or by default (None) ``"final+mid-fine"``
    where the method can read the mid-level map (:data:`MID_MAP_METHODS`) and ``"final"`` otherwise
    (quality log sections 38 item 6 and 39). ``method`` None: :data:`DEFAULT_PART_METHOD`.

    Raises:
        PartModelError: ``maps`` not in :data:`PART_MAPS`, or a mid-level ``maps`` with a method
            that cannot read it.
    """
    method = DEFAULT_PART_METHOD if method is None else method
    if maps is None:
        return "final+mid-fine" if method in MID_MAP_METHODS else "final"
    if maps not in PART_MAPS:
        raise PartModelError(f"unknown part maps {maps!r}; choose one of {', '.join(PART_MAPS)}")
    if maps != "final" and method not in MID_MAP_METHODS:
        raise PartModelError(f"--maps {maps} with --method {method}: the mid-level map is read by "
                             f"{', '.join(MID_MAP_METHODS)} only")
    return str(maps)


def fit_parts_from_loader(model, loader, total: int, *, k: int = DEFAULT_PARTS, method: str = DEFAULT_PART_METHOD,
                          seed: int = 0, maps: str | None = None, location: str | None = None,
                          progress: Progress | None = None, on_error=None) -> PartModel:
    """Extract the main network's maps of the images of ``loader`` (no labels) and fit a :class:`PartModel`.

    Args:
        model: :class:`lmpcli.model.LMPNetPair` (put in eval mode here; its device is used).
        loader: batches of (B, 3, S, S) normalised images: dicts with ``image`` (and ``errors``,
            (path, reason) pairs reported to ``on_error``) or ``(images, labels)`` tuples.
        total: images in ``loader``, for the progress bar.
        k, method, seed, location: see :func:`fit_part_model`.
        maps: :data:`PART_MAPS`: ``"final"`` (the final-conv map), ``"final+mid"`` (also the
            mid-level map, on the final grid) or ``"final+mid-fine"`` (both on the mid-level grid);
            the last two ``kmeans-centred`` only; None: :func:`resolve_part_maps`. On the fine
            grid the maps are kept at their own resolutions (:class:`StackedMaps`: about 0.7 MB
            per image in float16 on Lite0 at 448 px).

    Raises:
        PartModelError: fewer than 2 readable images, unknown ``maps``, or see :func:`fit_part_model`.
    """
    import time

    maps = resolve_part_maps(method, maps)
    with_mid, grid = maps != "final", "mid" if maps == "final+mid-fine" else "final"

    progress = progress or NullProgress()
    model.eval()
    start = time.perf_counter()
    progress.start("fit-parts (features)", total)
    chunks, mids = [], []
    try:
        for batch, final, mid in _network_maps(model, loader, progress, with_mid):
            if grid == "mid":  # each map at its own resolution, stacked a slice at a time (StackedMaps)
                chunks.append(final.half())
                mids.append(mid.half())
            else:
                chunks.append(stack_maps(final, mid, grid).half())
            for path, reason in (batch.get("errors", ()) if isinstance(batch, dict) else ()):
                if on_error is not None:
                    on_error(path, reason)
    finally:
        progress.finish()
    if sum(len(c) for c in chunks) < 2:
        raise PartModelError("fitting parts needs at least 2 readable images")
    extract_s = time.perf_counter() - start
    mid_channels = int(model.main.backbone.mid_channels) if with_mid else 0
    features = StackedMaps(torch.cat(chunks), torch.cat(mids), grid) if grid == "mid" else torch.cat(chunks)
    chunks.clear()  # the batches now live in ``features`` only
    mids.clear()
    part_model = fit_part_model(features, k, method, seed, mid_channels, grid, location)
    part_model.meta.update({"extract_seconds": round(extract_s, 1),
                            "fit_seconds": round(time.perf_counter() - start - extract_s, 1)})
    return part_model


def fit_parts(weights, data, out, *, k: int | None = None, method: str | None = None,
              maps: str | None = None, location: str | None = None, split: str = "train", limit: int | None = None, seed: int = 0, batch_size: int = 8,
              workers: int = 2, device: str = "auto", overwrite: bool = False,
              progress: Progress | None = None, on_error=None) -> dict:
    """Fit a part model for an existing checkpoint and write a new checkpoint holding it (``lmp fit-parts``).

    The new file is the input checkpoint's dict, unchanged (network weights bit-identical), plus
    the part model under :data:`CHECKPOINT_KEY` (replacing an earlier one). No keypoint labels
    are read.

    Args:
        weights: input checkpoint (None: the shipped weights).
        data: a CUB-200-2011-layout folder (its ``split`` is used) or image files / folders / globs.
        out: the new checkpoint. Never the input itself, even with ``overwrite``.
        k, method, seed, location: see :func:`fit_part_model`; None: :data:`DEFAULT_PARTS`,
            :data:`DEFAULT_PART_METHOD`, :func:`resolve_part_location`.
        maps: :data:`PART_MAPS` (see :func:`fit_parts_from_loader`); None:
            :func:`resolve_part_maps`.
        limit: use N images spread evenly over the list (every class of a CUB split).
        overwrite: replace an existing ``out`` (never the input).

    Returns:
        ``{"out", "images", "k", "method", "maps", "location", "extract_seconds", "fit_seconds", "seconds"}``.

    Raises:
        OutputError: ``out`` is the input checkpoint, or exists without ``overwrite``.
        CheckpointError, InputError, PartModelError: bad checkpoint, data or settings.
    """
    import time
    from pathlib import Path

    from .checkpoint import DEFAULT_WEIGHTS, load_model, read_checkpoint
    from .data import ImagePathDataset, collate_skip_errors, eval_transform
    from .device import resolve_device
    from .filters import resolve_image_paths
    from .inference import make_loader
    from .outputs import OutputError, check_writable

    start = time.perf_counter()
    k = DEFAULT_PARTS if k is None else k
    method = DEFAULT_PART_METHOD if method is None else method
    source = Path(DEFAULT_WEIGHTS if weights is None else weights)
    if Path(out).resolve() == source.resolve():
        raise OutputError(f"{out} is the input checkpoint; fit-parts never writes over its input, choose another --out")
    check_writable(out, overwrite)
    if method not in PART_METHODS:
        raise PartModelError(f"unknown part method {method!r}; choose one of {', '.join(PART_METHODS)}")
    maps = resolve_part_maps(method, maps)
    location = resolve_part_location(method, location)
    obj = read_checkpoint(source)
    dev = resolve_device(device)
    model, _ = load_model(source, dev)
    paths = resolve_image_paths(data, split, limit)
    cfg = model.config
    loader = make_loader(ImagePathDataset(paths, eval_transform(cfg.image_size, cfg.mean, cfg.std)),
                         batch_size, workers, collate_skip_errors, dev)
    part_model = fit_parts_from_loader(model, loader, len(paths), k=k, method=method, seed=seed, maps=maps,
                                       location=location, progress=progress, on_error=on_error)
    part_model.meta.update({"data": str(data), "split": split})
    write_part_checkpoint(obj, part_model, out)
    return {"out": str(out), "images": part_model.meta["images"], "k": k, "method": method, "maps": maps,
            "location": location,
            "extract_seconds": part_model.meta["extract_seconds"], "fit_seconds": part_model.meta["fit_seconds"],
            "seconds": time.perf_counter() - start}


def write_part_checkpoint(checkpoint: dict, part_model: PartModel, out) -> None:
    """Write ``checkpoint`` (a raw dict from :func:`lmpcli.checkpoint.read_checkpoint`, its tensors
    untouched, so the network weights stay bit-identical) with ``part_model`` under
    :data:`CHECKPOINT_KEY`, atomically. The caller checks that ``out`` may be written."""
    from .checkpoint import atomic_torch_save

    atomic_torch_save({**checkpoint, CHECKPOINT_KEY: part_model.to_dict()}, out)
