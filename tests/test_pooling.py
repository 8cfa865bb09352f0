import pytest
import torch

from lmpcli.layers import GlobalPool2d, global_pool2d, leaky_max_pool2d, pooling_vector

EPS = 0.1
DENSE = torch.ones(1, 1, 2, 2)
SPARSE = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])


@pytest.mark.parametrize("mode, dense, sparse", [
    ("avg", 1.0, 0.25),  # paper Fig. 3, first column
    ("max", 1.0, 1.0),
    ("lmp", 1 - 3 * EPS, 1.0),  # leaky max: low for dense, high for sparse
])
def test_fig3_dense_sparse_example(mode, dense, sparse):
    assert global_pool2d(DENSE, mode, EPS).item() == pytest.approx(dense)
    assert global_pool2d(SPARSE, mode, EPS).item() == pytest.approx(sparse)
    assert GlobalPool2d(mode, EPS)(torch.cat([DENSE, SPARSE])).flatten().tolist() == pytest.approx([dense, sparse])


def test_lmp_gradient_is_one_at_argmax_and_minus_eps_elsewhere():
    x = torch.tensor([[[[0.2, 0.9, 0.1], [0.3, 0.5, 0.4]]]], requires_grad=True)
    leaky_max_pool2d(x, EPS).sum().backward()
    expected = torch.full_like(x, -EPS)
    expected[0, 0, 0, 1] = 1.0
    assert torch.allclose(x.grad, expected)


def test_lmp_gradient_with_ties_goes_to_one_cell_like_eq3():
    x = torch.ones(1, 1, 2, 2, requires_grad=True)
    leaky_max_pool2d(x, EPS).sum().backward()
    assert sorted(x.grad.flatten().tolist()) == pytest.approx([-EPS, -EPS, -EPS, 1.0])


@pytest.mark.parametrize("mode", ["avg", "max", "lmp"])
def test_pooling_vector_reproduces_pooling(mode):
    x = torch.randn(3, 4, 5, 6)
    w = pooling_vector(x, mode, EPS)
    assert torch.allclose((x.flatten(-2) * w).sum(-1), global_pool2d(x, mode, EPS), atol=1e-5)


@pytest.mark.parametrize("mode", ["avg", "max", "lmp"])
def test_gradcheck_float64(mode):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)  # continuous: no ties
    assert torch.autograd.gradcheck(lambda t: global_pool2d(t, mode, EPS), (x,))


def test_eps_zero_is_max_pooling():
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(leaky_max_pool2d(x, 0.0), global_pool2d(x, "max"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown pooling"):
        GlobalPool2d("median")
    with pytest.raises(ValueError, match="eps"):
        leaky_max_pool2d(DENSE, -1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        global_pool2d(torch.ones(2, 3), "avg")
