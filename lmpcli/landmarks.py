"""The field's part-discovery metrics: landmark regression (Kp) and NMI / ARI of keypoint identities.

Kp follows the protocol of Huang & Li (CVPR 2020, ``interpretability-by-parts``,
``src/cub200/eval_interp.py``) as reused by PDiscoNet (ICCV 2023, ``evaluate_cub.py``) and
PDiscoFormer (ECCV 2024):

1. predicted keypoints and annotated landmarks are normalised per axis by the ground-truth box,
   ``((x - bx) / bw, (y - by) / bh)`` (:func:`normalise_to_box`);
2. for each landmark separately, on the fit (train) images where that landmark is visible:
   a ``StandardScaler`` on the inputs (the 2K keypoint coordinates, ordered
   ``x1, y1, x2, y2, ...``) and one on the targets (the landmark's ``x, y``);
3. a keypoint that is absent (NaN) becomes 0 after scaling (PDiscoNet's "inactive part");
4. one ``LinearRegression(fit_intercept=False)`` per landmark, fit on those images;
5. on the test images where the landmark is visible: predict, undo the target scaling, and take
   the L2 distance to the annotation; Kp = mean distance over all visible test pairs x 100
   (percent of the box side). Lower is better.

Places where this module adapts the peers' code (they never need to, since their parts are
soft assignment maps with a centroid on every image):

* absent keypoints are NaN rows; the input scaler ignores them when fitting (scikit-learn's
  ``StandardScaler`` does the same) and they are set to 0 after scaling, as PDiscoNet does for
  its inactive parts (PDiscoNet fits the scaler on the centroids of inactive parts too: theirs
  exist, ours do not);
* the regression is solved for all landmarks at once as a batched minimum-norm least-squares
  problem (``numpy.linalg.pinv``), the solution ``scipy.linalg.lstsq`` gives
  ``LinearRegression``; tests check it against a per-landmark scikit-learn loop written like
  the peers' code;
* the fitted scalers and coefficients are kept (:class:`LandmarkRegressor`) so that they can be
  stored and applied to new images (named landmarks), not only scored;
* zero input keypoints (K = 0) is allowed: the regressor then predicts the mean landmark of the
  fit images, the no-feature baseline.

NMI / ARI, adapted to points (:func:`part_assignment_scores`): PDiscoNet reads the part map
at every visible landmark and scores the resulting (landmark id, part id) pairs with
scikit-learn's ``normalized_mutual_info_score`` / ``adjusted_rand_score``. A keypoint method has
points, not maps, so here each visible landmark takes the id of the nearest predicted keypoint
(one extra id, K, when an image has no keypoint at all). This is that adaptation, not the
published metric: a method's keypoint identities are the order of its output (for LMPNet, the
prominence rank).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

#: Row name of the no-feature baseline (the regressor with no keypoints: the mean landmark).
MEAN_LANDMARK = "mean-landmark"


def _np(a) -> np.ndarray:
    """A float64 numpy copy of a tensor or array."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def normalise_to_box(xy, boxes) -> np.ndarray:
    """Coordinates relative to a box, per axis: ``((x - bx) / bw, (y - by) / bh)``.

    The normalisation of Huang & Li's protocol (``create_centers`` in ``eval_interp.py``).

    Args:
        xy: (N, P, 2) (x, y) pixels; NaN stays NaN.
        boxes: (N, 4) ``(bx, by, bw, bh)`` pixels (CUB ``bounding_boxes.txt`` order), or (N, 2)
            ``(W, H)`` sizes, which normalises by the whole image.

    Returns:
        (N, P, 2) float64; 0..1 inside the box.

    Raises:
        ValueError: a box with a non-positive side, or mismatched shapes.
    """
    xy, boxes = _np(xy), _np(boxes)
    if boxes.ndim != 2 or boxes.shape[1] not in (2, 4) or xy.ndim != 3 or xy.shape[0] != boxes.shape[0]:
        raise ValueError(f"expected xy (N, P, 2) and boxes (N, 4) or (N, 2), got {xy.shape} and {boxes.shape}")
    if boxes.shape[1] == 2:
        boxes = np.concatenate([np.zeros_like(boxes), boxes], axis=1)
    if (boxes[:, 2:] <= 0).any():
        raise ValueError("every box needs a positive width and height")
    return (xy - boxes[:, None, :2]) / boxes[:, None, 2:]


def _scaler_moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of ``sklearn.preprocessing.StandardScaler`` for L fits at once.

    Args:
        values: (L, N, D), NaN for entries a fit does not see (StandardScaler ignores NaN).

    Returns:
        mean (L, D) and scale (L, D): the population standard deviation (ddof 0), replaced by 1
        for (near-)constant or empty columns, as StandardScaler does (mean 0 for empty ones).
    """
    present = ~np.isnan(values)
    count = present.sum(1).astype(np.float64)  # (L, D)
    filled = np.where(present, values, 0.0)
    mean = np.divide(filled.sum(1), count, out=np.zeros_like(count), where=count > 0)
    centred = np.where(present, values - mean[:, None, :], 0.0)
    var = np.divide((centred ** 2).sum(1), count, out=np.zeros_like(count), where=count > 0)
    # StandardScaler's test for constant features (``_is_constant_feature``): a variance within
    # float round-off of zero gives scale 1
    eps = np.finfo(np.float64).eps
    constant = (var <= count * eps * var + (count * mean * eps) ** 2) | (count == 0)
    return mean, np.where(constant, 1.0, np.sqrt(var))


@dataclass
class LandmarkRegressor:
    """Linear maps from K keypoints to L landmarks, one per landmark (Huang & Li's Kp regressor).

    All coordinates are normalised (see :func:`normalise_to_box`). ``D = 2K`` inputs ordered
    ``x1, y1, ..., xK, yK``.

    Attributes:
        in_mean, in_scale: (L, D) input StandardScaler of each landmark's fit.
        out_mean, out_scale: (L, 2) target StandardScaler of each landmark.
        coef: (L, D, 2) coefficients of ``LinearRegression(fit_intercept=False)`` on the scaled
            data (``coef[l].T`` is scikit-learn's ``coef_``).
        names: L landmark names (e.g. CUB's ``parts.txt``: back, beak, belly, ...).
        fit_counts: (L,) images each landmark was fit on.
    """

    in_mean: np.ndarray
    in_scale: np.ndarray
    out_mean: np.ndarray
    out_scale: np.ndarray
    coef: np.ndarray
    names: list[str] = field(default_factory=list)
    fit_counts: np.ndarray | None = None

    @property
    def num_keypoints(self) -> int:
        """K, the keypoints the regressor reads."""
        return self.coef.shape[1] // 2

    def _scaled_inputs(self, keypoints) -> np.ndarray:
        """(N, K, 2) normalised keypoints -> (L, N, D) scaled inputs, absent (NaN) keypoints 0."""
        x = _np(keypoints)
        if x.ndim != 3 or x.shape[1] != self.num_keypoints or x.shape[2] != 2:
            raise ValueError(f"the regressor reads (N, {self.num_keypoints}, 2) keypoints, got {x.shape}")
        x = x.reshape(len(x), -1)
        z = (x[None] - self.in_mean[:, None, :]) / self.in_scale[:, None, :]
        return np.nan_to_num(z, nan=0.0)

    def predict(self, keypoints) -> np.ndarray:
        """Landmarks regressed from keypoints.

        Args:
            keypoints: (N, K, 2) normalised keypoints in the regressor's order; NaN = absent.

        Returns:
            (N, L, 2) float64 normalised landmark positions (every landmark, visible or not).
        """
        z = self._scaled_inputs(keypoints)  # (L, N, D)
        y = z @ self.coef  # (L, N, 2)
        return (y * self.out_scale[:, None, :] + self.out_mean[:, None, :]).transpose(1, 0, 2)


def fit_landmark_regressor(keypoints, landmarks, visible, names: list[str] | None = None) -> LandmarkRegressor:
    """Fit the per-landmark scalers and linear regressions of Huang & Li's Kp protocol.

    Args:
        keypoints: (N, K, 2) normalised predicted keypoints of the fit images, in the method's
            output order (the identity); NaN = absent (0 after scaling). K may be 0: the
            regressor then predicts the mean landmark (the no-feature baseline).
        landmarks: (N, L, 2) normalised annotated landmarks.
        visible: (N, L) bool; each landmark is fit only on the images where it is visible.
        names: L landmark names (default ``landmark1..L``).

    Returns:
        :class:`LandmarkRegressor`.

    Raises:
        ValueError: mismatched shapes, or a landmark visible on no fit image.
    """
    x, y, vis = _np(keypoints), _np(landmarks), np.asarray(_np(visible) > 0)
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0] or vis.shape != y.shape[:2]:
        raise ValueError(f"expected keypoints (N, K, 2), landmarks (N, L, 2), visible (N, L); "
                         f"got {x.shape}, {y.shape}, {vis.shape}")
    n, n_lm = y.shape[:2]
    counts = vis.sum(0)
    if (counts == 0).any():
        missing = [(names or [])[i] if names else f"landmark{i + 1}" for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"landmarks visible on no fit image: {', '.join(missing)}")
    x = x.reshape(n, -1)
    seen = vis.T[:, :, None]  # (L, N, 1): each landmark's fit uses only the images where it is visible
    in_mean, in_scale = _scaler_moments(np.where(seen, x[None], np.nan))  # (L, D)
    t = y.transpose(1, 0, 2)  # (L, N, 2)
    out_mean, out_scale = _scaler_moments(np.where(seen, t, np.nan))  # (L, 2)
    z = np.where(seen, np.nan_to_num((x[None] - in_mean[:, None, :]) / in_scale[:, None, :], nan=0.0), 0.0)
    t = np.where(seen, (t - out_mean[:, None, :]) / out_scale[:, None, :], 0.0)  # rows outside a fit count nothing
    if z.shape[-1] == 0:
        coef = np.zeros((n_lm, 0, 2))
    else:
        coef = np.linalg.pinv(z) @ t  # (L, D, 2): minimum-norm least squares, as scipy.linalg.lstsq
    return LandmarkRegressor(in_mean, in_scale, out_mean, out_scale, coef,
                             list(names) if names else [f"landmark{i + 1}" for i in range(n_lm)], counts)


def landmark_errors(regressor: LandmarkRegressor, keypoints, landmarks, visible) -> np.ndarray:
    """L2 distance of each regressed landmark to its annotation (normalised units).

    Args:
        keypoints: (N, K, 2) normalised keypoints; landmarks: (N, L, 2) normalised; visible: (N, L).

    Returns:
        (N, L) float64 distances, NaN where the landmark is not visible.
    """
    pred = regressor.predict(keypoints)
    d = np.linalg.norm(pred - _np(landmarks), axis=-1)
    return np.where(np.asarray(_np(visible) > 0), d, np.nan)


def keypoint_regression_error(train: tuple, test: tuple) -> float:
    """Kp: Huang & Li's landmark regression error, in percent of the box side (lower is better).

    Args:
        train, test: ``(keypoints (N, K, 2), landmarks (N, L, 2), visible (N, L))`` each, all
            coordinates normalised by the ground-truth box (:func:`normalise_to_box`); the
            regressors are fit on ``train`` and scored on ``test``. K = 0 gives the mean-landmark
            baseline.

    Returns:
        mean L2 distance over the visible test (image, landmark) pairs x 100.

    Raises:
        ValueError: see :func:`fit_landmark_regressor`; no visible test landmark.
    """
    reg = fit_landmark_regressor(*train)
    d = landmark_errors(reg, *test)
    if np.isnan(d).all():
        raise ValueError("no visible landmark in the test images")
    return 100.0 * float(np.nanmean(d))


def nearest_keypoint_ids(keypoints, landmarks, visible) -> tuple[np.ndarray, np.ndarray]:
    """For every visible landmark, its landmark id and the id of the nearest predicted keypoint.

    Args:
        keypoints: (N, K, 2) predicted keypoints (x, y), any coordinates shared with
            ``landmarks`` (``lmp evaluate`` uses pixels of the image); NaN = absent.
        landmarks: (N, L, 2) annotated landmarks; visible: (N, L) bool.

    Returns:
        ``(landmark_ids, keypoint_ids)``, each (V,) int64 over the V visible landmarks in image
        order; the keypoint id is the index ``0..K-1`` in the method's output order (ties: the
        lower index), or K when the image has no keypoint.
    """
    x, y, vis = _np(keypoints), _np(landmarks), np.asarray(_np(visible) > 0)
    d = np.linalg.norm(y[:, :, None, :] - x[:, None, :, :], axis=-1)  # (N, L, K)
    d = np.where(np.isnan(d), np.inf, d)
    k = x.shape[1]
    ids = np.where(np.isfinite(d).any(-1), d.argmin(-1), k) if k else np.zeros(vis.shape, np.int64)
    lm = np.broadcast_to(np.arange(y.shape[1]), vis.shape)
    return lm[vis].astype(np.int64), ids[vis].astype(np.int64)


def part_assignment_scores(keypoints, landmarks, visible) -> tuple[float, float]:
    """NMI and ARI between landmark ids and the ids of their nearest predicted keypoints.

    PDiscoNet's NMI / ARI (``eval_nmi_ari`` in ``evaluate_cub.py``) read the part assignment map
    at each visible landmark; this adapts it to points: each visible landmark takes the id of its
    nearest keypoint (:func:`nearest_keypoint_ids`). Scores are scikit-learn's
    ``normalized_mutual_info_score`` and ``adjusted_rand_score`` (arithmetic NMI) over all
    visible landmarks of all images.

    Args:
        keypoints: (N, K, 2); landmarks: (N, L, 2); visible: (N, L) — as in
            :func:`nearest_keypoint_ids`.

    Returns:
        ``(nmi, ari)`` in percent (higher is better; identities unrelated to the landmarks give
        about 0).

    Raises:
        ValueError: no visible landmark.
    """
    return assignment_scores(*nearest_keypoint_ids(keypoints, landmarks, visible))


def assignment_scores(landmark_ids, part_ids) -> tuple[float, float]:
    """NMI and ARI between landmark ids and the part ids they were assigned, in percent.

    scikit-learn's ``normalized_mutual_info_score`` (arithmetic mean) and
    ``adjusted_rand_score`` over all given landmarks pooled, as PDiscoNet's ``eval_nmi_ari``.

    Args:
        landmark_ids, part_ids: (V,) integer labels, one pair per visible landmark.

    Returns:
        ``(nmi, ari)`` in percent.

    Raises:
        ValueError: no landmark (V = 0) or the two lengths differ.
    """
    truth, pred = np.asarray(landmark_ids).ravel(), np.asarray(part_ids).ravel()
    if truth.size == 0:
        raise ValueError("no visible landmark")
    if truth.shape != pred.shape:
        raise ValueError(f"{truth.size} landmark ids but {pred.size} part ids")
    return 100.0 * normalized_mutual_info_score(truth, pred), 100.0 * adjusted_rand_score(truth, pred)


def part_discovery_metrics(train: tuple, test: tuple, test_pixels: tuple | None = None) -> dict:
    """Kp, NMI and ARI of one method in one call (the row ``lmp evaluate`` reports).

    Args:
        train, test: as in :func:`keypoint_regression_error` (box-normalised).
        test_pixels: ``(keypoints, landmarks, visible)`` of the test images in pixels for the
            nearest-keypoint assignment (None = use ``test``).

    Returns:
        ``{"Kp": float, "NMI": float, "ARI": float}``, percent; NMI/ARI NaN when K = 0.
    """
    kp = keypoint_regression_error(train, test)
    if _np(test[0]).shape[1] == 0:
        return {"Kp": kp, "NMI": float("nan"), "ARI": float("nan")}
    nmi, ari = part_assignment_scores(*(test_pixels or test))
    return {"Kp": kp, "NMI": nmi, "ARI": ari}
