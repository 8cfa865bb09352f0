"""benchmarks/species_parts_study.py (quality log section 42): the within-part between-class
scatter's basis against a loop written from its definition, a known answer, and the projection's
centres orthogonal to the basis."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import species_parts_study as bench  # noqa: E402


def _reference_scatter(x, part, cls, k, min_cells):
    """S = sum_p sum_c n_cp (mu_cp - mu_p)(mu_cp - mu_p)^T over pairs with >= min_cells, mu_p their weighted mean."""
    d = x.shape[1]
    s = torch.zeros(d, d, dtype=torch.float64)
    for p in range(k):
        pairs = [(c, (part == p) & (cls == c)) for c in cls.unique().tolist()]
        pairs = [(c, m) for c, m in pairs if int(m.sum()) >= min_cells]
        if not pairs:
            continue
        n = torch.tensor([float(m.sum()) for _, m in pairs], dtype=torch.float64)
        mus = torch.stack([x[m].double().mean(0) for _, m in pairs])
        mu_p = (n[:, None] * mus).sum(0) / n.sum()
        for ni, mu in zip(n, mus):
            s += ni * torch.outer(mu - mu_p, mu - mu_p)
    return s


def test_nuisance_basis_spans_the_reference_scatter_top_eigenvectors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    part = torch.randint(0, 3, (300,), generator=g)
    cls = torch.randint(0, 4, (300,), generator=g)
    u = bench.nuisance_basis(x, part, cls, 3, 2, min_cells=10)
    ref = _reference_scatter(x, part, cls, 3, 10)
    vals, vecs = torch.linalg.eigh(ref)
    top = vecs[:, -2:].float()
    # the same subspace: projectors agree
    torch.testing.assert_close(u @ u.T, top @ top.T, atol=1e-4, rtol=1e-4)
    assert u.shape == (6, 2)


def test_species_direction_is_found_and_part_direction_kept():
    # two parts told apart along axis 0; within each part, the class shifts the cells along axis 1
    g = torch.Generator().manual_seed(1)
    n = 400
    part = torch.arange(n) % 2
    cls = (torch.arange(n) // 2) % 4
    x = 0.01 * torch.randn(n, 4, generator=g)
    x[:, 0] += torch.where(part == 0, 1.0, -1.0)
    x[:, 1] += cls.float() - 1.5
    u = bench.nuisance_basis(x, part, cls, 2, 1, min_cells=5)
    assert abs(float(u[1, 0])) > 0.99  # the species axis
    assert abs(float(u[0, 0])) < 0.05  # not the part axis
    # a (part, class) pair under min_cells does not count: 3 cells of a fifth class far out on axis 2
    x2 = torch.cat([x, torch.tensor([[1.0, 0.0, 50.0, 0.0]] * 3)])
    part2, cls2 = torch.cat([part, torch.zeros(3, dtype=torch.long)]), torch.cat([cls, torch.full((3,), 4)])
    assert abs(float(bench.nuisance_basis(x2, part2, cls2, 2, 1, min_cells=3)[2, 0])) > 0.99
    assert abs(float(bench.nuisance_basis(x2, part2, cls2, 2, 1, min_cells=5)[1, 0])) > 0.99


def _maps(n: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"features": torch.rand(n, 1280, 4, 4, generator=g).half(),
            "block10@28": torch.rand(n, 112, 8, 8, generator=g).half(),
            "class_id": torch.tensor([1, 1, 2, 2])[:n]}


def test_m_zero_is_the_shipped_fit_and_the_projection_keeps_centres_off_the_basis():
    import mid_level_parts

    d = _maps()
    ours, removed = bench.fit(d, k=3, seed=0, m=0, rounds=1, min_cells=1)
    ref = mid_level_parts.fit(d, bench.VARIANT, 3, 0, location="segment")
    assert removed == 0.0 and ours.location == ref.location == "segment"
    torch.testing.assert_close(ours.projection, ref.projection)
    torch.testing.assert_close(ours.threshold, ref.threshold)
    # m = 2: the centres lie in the complement of the basis computed from the first k-means
    from sklearn.cluster import KMeans

    x, cls = bench.fit_cells(d, bench.VARIANT)
    first = torch.as_tensor(KMeans(3, n_init=3, random_state=0).fit(x.numpy()).labels_).long()
    u = bench.nuisance_basis(x, first, cls, 3, 2, min_cells=1)
    projected, removed = bench.fit(d, k=3, seed=0, m=2, rounds=1, min_cells=1)
    assert 0.0 < removed < 100.0
    assert (projected.projection @ u).abs().max() < 1e-4


def test_agreement_is_one_for_relabelled_copies_and_lower_for_a_different_partition():
    a = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2, 2])
    relabelled = torch.tensor([2, 1, 0])[a]  # the same partition under other part ids
    other = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    agree = bench.agreement(torch.stack([a, relabelled, other]))
    # a and its relabelling agree fully with each other, the third with neither
    from sklearn.metrics import adjusted_rand_score

    cross = adjusted_rand_score(a.numpy(), other.numpy())
    torch.testing.assert_close(agree, torch.tensor([(1 + cross) / 2, (1 + cross) / 2, cross], dtype=torch.float64))
    assert int(agree.argmax()) in (0, 1)


def test_matched_mean_undoes_a_permutation_of_the_centres():
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    ref = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    noisy = F.normalize(ref + 0.05 * torch.randn(5, 8, generator=g), dim=1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = bench.matched_mean([ref, noisy[perm]], ref=0)
    torch.testing.assert_close(out, F.normalize(ref + noisy, dim=1))


def test_size_entropy_known_answers():
    import math

    assert bench.size_entropy(torch.tensor([0, 1, 2, 3]), 4) == math.log(4)
    assert bench.size_entropy(torch.tensor([2, 2, 2]), 4) == 0.0
    torch.testing.assert_close(bench.size_entropy(torch.tensor([0, 0, 0, 1]), 2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
