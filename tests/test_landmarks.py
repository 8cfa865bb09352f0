"""Kp (Huang & Li's landmark regression) and NMI / ARI of keypoint identities: known answers and
references written from the definition (a per-landmark scikit-learn loop like the peers' code)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

from lmpcli.landmarks import (
    fit_landmark_regressor,
    keypoint_regression_error,
    nearest_keypoint_ids,
    normalise_to_box,
    part_assignment_scores,
    part_discovery_metrics,
)


def _split(rng, n, k=4, n_lm=6, absent=0.1, hidden=0.25, noise=0.05):
    """Random keypoints, landmarks a noisy affine function of them, random visibility / absence."""
    x = rng.uniform(0, 1, (n, k, 2))
    a = np.random.default_rng(123).normal(size=(n_lm, 2, 2 * k))
    b = np.random.default_rng(321).normal(size=(n_lm, 2))
    y = np.einsum("lcd,nd->nlc", a, x.reshape(n, -1)) + b + noise * rng.normal(size=(n, n_lm, 2))
    vis = rng.uniform(size=(n, n_lm)) > hidden
    x[rng.uniform(size=(n, k)) < absent] = np.nan
    return x, y, vis


def _reference_kp(train, test):
    """Kp written like eval_interp.py / evaluate_cub.py: one scikit-learn fit per landmark."""
    (fx, fy, fv), (ex, ey, ev) = train, test
    fx, ex = fx.reshape(len(fx), -1), ex.reshape(len(ex), -1)
    total, count = 0.0, 0
    for i in range(fy.shape[1]):
        sel_f, sel_e = fv[:, i], ev[:, i]
        sx, sy = StandardScaler().fit(fx[sel_f]), StandardScaler().fit(fy[sel_f, i])
        reg = LinearRegression(fit_intercept=False).fit(np.nan_to_num(sx.transform(fx[sel_f])),
                                                        sy.transform(fy[sel_f, i]))
        pred = sy.inverse_transform(reg.predict(np.nan_to_num(sx.transform(ex[sel_e]))))
        total += np.linalg.norm(pred - ey[sel_e, i], axis=-1).sum()
        count += sel_e.sum()
    return 100 * total / count


def test_kp_matches_per_landmark_sklearn_reference():
    rng = np.random.default_rng(0)
    train, test = _split(rng, 300), _split(rng, 200)
    assert keypoint_regression_error(train, test) == pytest.approx(_reference_kp(train, test), rel=1e-9)


def test_kp_is_zero_for_an_exact_affine_function_and_grows_with_noise():
    rng = np.random.default_rng(1)
    exact = keypoint_regression_error(_split(rng, 200, absent=0, noise=0), _split(rng, 100, absent=0, noise=0))
    assert exact < 1e-8
    noisy = keypoint_regression_error(_split(rng, 200, absent=0, noise=0.1), _split(rng, 100, absent=0, noise=0.1))
    # E|N(0, 0.1 I_2)| = 0.1 * sqrt(pi / 2) = 12.5 % of the box
    assert 11 < noisy < 14.5


def test_no_keypoints_predicts_the_mean_visible_landmark():
    rng = np.random.default_rng(2)
    (_, fy, fv), (_, ey, ev) = _split(rng, 150), _split(rng, 80)
    empty = np.zeros((150, 0, 2)), np.zeros((80, 0, 2))
    kp = keypoint_regression_error((empty[0], fy, fv), (empty[1], ey, ev))
    mean = np.stack([fy[fv[:, i], i].mean(0) for i in range(fy.shape[1])])  # (L, 2)
    d = np.linalg.norm(ey - mean, axis=-1)
    assert kp == pytest.approx(100 * d[ev].mean(), rel=1e-9)
    reg = fit_landmark_regressor(empty[0], fy, fv)
    np.testing.assert_allclose(reg.predict(empty[1])[0], mean, rtol=1e-12)


def test_regressor_keeps_names_counts_and_rejects_a_never_visible_landmark():
    rng = np.random.default_rng(3)
    x, y, v = _split(rng, 50, n_lm=3)
    reg = fit_landmark_regressor(x, y, v, names=["beak", "crown", "tail"])
    assert reg.names == ["beak", "crown", "tail"] and reg.num_keypoints == 4
    np.testing.assert_array_equal(reg.fit_counts, v.sum(0))
    assert reg.predict(x).shape == (50, 3, 2)
    v[:, 1] = False
    with pytest.raises(ValueError, match="crown"):
        fit_landmark_regressor(x, y, v, names=["beak", "crown", "tail"])
    with pytest.raises(ValueError, match="reads"):
        reg.predict(x[:, :2])


def test_normalise_to_box_known_answer():
    xy = np.array([[[10.0, 20.0], [60.0, 120.0], [np.nan, np.nan]]])
    out = normalise_to_box(xy, np.array([[10.0, 20.0, 50.0, 100.0]]))
    np.testing.assert_allclose(out[0, :2], [[0, 0], [1, 1]])
    assert np.isnan(out[0, 2]).all()
    np.testing.assert_allclose(normalise_to_box(xy[:, :2], np.array([[100.0, 200.0]]))[0, 1], [0.6, 0.6])
    with pytest.raises(ValueError, match="positive"):
        normalise_to_box(xy, np.array([[0.0, 0.0, 0.0, 10.0]]))


def _reference_ids(x, y, v):
    """Nearest keypoint of every visible landmark, one (image, landmark) at a time."""
    truth, pred = [], []
    for n in range(len(y)):
        for i in range(y.shape[1]):
            if not v[n, i]:
                continue
            d = [np.hypot(*(y[n, i] - x[n, j])) for j in range(x.shape[1])]
            d = [np.inf if np.isnan(e) else e for e in d]
            truth.append(i)
            pred.append(int(np.argmin(d)) if np.isfinite(min(d, default=np.inf)) else x.shape[1])
    return np.array(truth), np.array(pred)


def test_nearest_keypoint_ids_match_a_loop_and_name_empty_images():
    rng = np.random.default_rng(4)
    x, y, v = _split(rng, 40, k=5)
    x[3] = np.nan  # an image without any keypoint gets the extra id K
    truth, pred = nearest_keypoint_ids(x, y, v)
    ref_t, ref_p = _reference_ids(x, y, v)
    np.testing.assert_array_equal(truth, ref_t)
    np.testing.assert_array_equal(pred, ref_p)
    assert (pred[:v[:3].sum() + v[3].sum()][v[:3].sum():] == 5).all()


def test_nmi_ari_known_answers():
    rng = np.random.default_rng(5)
    n, n_lm = 500, 8
    y = rng.uniform(0, 100, (n, n_lm, 2))
    v = rng.uniform(size=(n, n_lm)) > 0.2
    perm = rng.permutation(n_lm)
    nmi, ari = part_assignment_scores(y[:, perm], y, v)  # a consistent relabelling of the landmarks
    assert nmi == pytest.approx(100) and ari == pytest.approx(100)
    shuffled = np.stack([y[i, rng.permutation(n_lm)] for i in range(n)])  # ids that change per image
    nmi, ari = part_assignment_scores(shuffled, y, v)
    assert nmi < 2 and abs(ari) < 1
    truth, pred = _reference_ids(shuffled, y, v)
    assert nmi == pytest.approx(100 * normalized_mutual_info_score(truth, pred))
    assert ari == pytest.approx(100 * adjusted_rand_score(truth, pred))


def test_part_discovery_metrics_row():
    rng = np.random.default_rng(6)
    train, test = _split(rng, 100), _split(rng, 60)
    row = part_discovery_metrics(train, test)
    assert row["Kp"] == pytest.approx(keypoint_regression_error(train, test))
    assert (row["NMI"], row["ARI"]) == pytest.approx(part_assignment_scores(*test))
    empty = part_discovery_metrics((train[0][:, :0], *train[1:]), (test[0][:, :0], *test[1:]))
    assert np.isnan(empty["NMI"]) and empty["Kp"] > row["Kp"]
