"""General linear operators: PIL's downsampling and scipy's reflect-boundary blur, exactly; adjoint and pseudo-inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import convolve

from cmedit.core.degradations import (PIL_FILTERS, Blur, BoxBlur, Downsample, GaussianBlur, MotionBlur,
                                      gaussian_kernel, load_kernel, motion_kernel)
from cmedit.core.operators import Colorization, Inpainting, SuperResolution


def images(shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("kernel", PIL_FILTERS)
@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_is_pil_resize_in_float_mode(kernel, factor):
    x = np.random.default_rng(factor).random((3, 8 * factor, 5 * factor)).astype(np.float32)
    ours = Downsample(factor, kernel).A(torch.from_numpy(x)[None])[0].numpy()
    resample = getattr(Image.Resampling, kernel.upper())
    pil = np.stack([np.asarray(Image.fromarray(c, mode="F").resize((5, 8), resample)) for c in x])
    assert ours.shape == (3, 8, 5)
    assert np.abs(ours - pil).max() < 1e-4


def test_box_downsample_is_the_block_mean_of_super_resolution():
    x = images((2, 3, 16, 12))
    box = Downsample(4, "box").A(x)
    assert torch.allclose(box, torch.nn.functional.avg_pool2d(x, 4), atol=1e-12)
    # The same known part as the orthogonal operator of Algorithm 4.
    sr = SuperResolution(4)
    assert torch.allclose(Downsample(4, "box").known_part(x), sr.known_part(x), atol=1e-12)


@pytest.mark.parametrize("kernel", [gaussian_kernel(1.3), np.ones((4, 4)), motion_kernel(7, 30),
                                    np.arange(1.0, 7.0).reshape(2, 3)])
def test_blur_is_scipy_convolve_reflect(kernel):
    x = images((1, 3, 20, 20)).numpy()
    op = Blur(kernel)
    reference = np.stack([convolve(c, op.kernel, mode="reflect") for c in x[0]])
    assert np.allclose(op.A(torch.from_numpy(x))[0].numpy(), reference, atol=1e-12)
    assert op.separable == (kernel.shape != (7, 7) and kernel.shape != (2, 3))


OPERATORS = {
    "bicubic x4": (Downsample(4), (32, 24)),
    "lanczos x2": (Downsample(2, "lanczos"), (16, 16)),
    "gaussian": (GaussianBlur(2.0), (24, 20)),
    "box blur": (BoxBlur(5), (16, 16)),
    "motion": (MotionBlur(7, 45), (16, 16)),
    "blur then downsample": (GaussianBlur(1.0) >> Downsample(2), (16, 24)),
}


@pytest.mark.parametrize("name", OPERATORS)
def test_adjoint_and_pseudo_inverse(name):
    op, size = OPERATORS[name]
    x = images((2, 3, *size), seed=1)
    ax = op.A(x)
    m = images(ax.shape, seed=2)
    assert torch.allclose((ax * m).sum(), (x * op.AT(m)).sum(), rtol=1e-10)
    # A A^+ A = A, to within the singular values cut off (rcond of the largest, which is 1 for a blur).
    assert (op.A(op.pinv(ax)) - ax).abs().max() < 10 * op.rcond
    # The regularised pseudo-inverse is (A^T A + eta I)^-1 A^T on the kept directions: check its normal equations.
    eta = 0.3
    z = op.pinv(m, eta)
    residual = op.AT(op.A(z)) + eta * z - op.AT(m)
    kept = op.range_part(residual)  # the cut-off directions are not solved for
    assert kept.abs().max() < 1e-8
    # The projection keeps the measurement and is idempotent; the null-space part of x is untouched.
    y0 = op.pinv(op.A(images(x.shape, seed=3)))
    p = op.project(x, y0)
    assert (op.A(p) - op.A(y0)).abs().max() < 10 * op.rcond
    assert torch.allclose(op.project(p, y0), p, atol=1e-10)


@pytest.mark.parametrize("op", [Inpainting(torch.rand(1, 1, 8, 8) > 0.5), Colorization(), SuperResolution(2)])
def test_noisy_projection_of_orthogonal_operators(op):
    x, y = images((1, 3, 8, 8), seed=4), images((1, 3, 8, 8), seed=5)
    y0 = op.known_part(y)
    # eta -> 0 is the exact projection; eta > 0 moves the known part 1 / (1 + eta) of the way.
    assert torch.allclose(op.project_noisy(x, y0, 1e-12), op.project(x, y0), atol=1e-9)
    half = op.project_noisy(x, y0, 1.0)
    assert torch.allclose(half, (x + op.project(x, y0)) / 2, atol=1e-9)


def test_separable_and_dense_forms_agree():
    kernel = gaussian_kernel(1.5)
    separable = Blur(kernel)
    dense = Blur(kernel + 1e-6 * np.eye(kernel.shape[0]))  # a hair off rank 1
    assert separable.separable and not dense.separable
    x = images((1, 3, 16, 16), seed=6)
    assert torch.allclose(separable.A(x), dense.A(x), atol=1e-5)
    assert torch.allclose(separable.pinv(separable.A(x), 0.01), dense.pinv(dense.A(x), 0.01), atol=1e-3)


def test_bad_kernels_and_factors(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        Blur(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="positive"):
        Blur(-np.ones((3, 3)))
    with pytest.raises(ValueError, match="larger than the image"):
        GaussianBlur(3.0).A(images((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="positive integer"):
        Downsample(2.5)
    with pytest.raises(ValueError, match="does not divide"):
        Downsample(4).A(images((1, 3, 10, 8)))
    with pytest.raises(ValueError, match="kernel must be one of"):
        Downsample(2, "nearest")
    np.save(tmp_path / "k.npy", np.ones((3, 3)) * 2)
    assert np.allclose(load_kernel(tmp_path / "k.npy"), 1 / 9)
    Image.fromarray(np.uint8([[0, 255, 0], [0, 255, 0], [0, 255, 0]])).save(tmp_path / "k.png")
    assert np.allclose(load_kernel(tmp_path / "k.png")[:, 1], 1 / 3)
    (tmp_path / "bad.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a usable kernel"):
        load_kernel(tmp_path / "bad.npy")


@pytest.mark.parametrize("kernel", [motion_kernel(7, 30), np.arange(1.0, 7.0).reshape(2, 3)])
def test_matrix_free_blur_is_scipy_convolve_and_its_adjoint(kernel):
    """Beyond DENSE_LIMIT a non-separable blur is matrix-free: A is scipy's, A^T its exact adjoint."""
    op = Blur(kernel)
    x = images((1, 3, 70, 90), seed=7)
    reference = np.stack([convolve(c, op.kernel, mode="reflect") for c in x[0].numpy()])
    ax = op.A(x)
    assert np.abs(ax[0].numpy() - reference).max() < 1e-12
    m = images(ax.shape, seed=8)
    assert torch.allclose((ax * m).sum(), (x * op.AT(m)).sum(), rtol=1e-12)


def test_conjugate_gradient_back_projection_matches_the_dense_svd():
    """The matrix-free x + A^+_eta (y - A x) (forced at 24x24) against the dense SVD's: Tikhonov at the
    cut-off in place of the truncation, to the solver's tolerance."""
    dense, matrix_free = MotionBlur(7, 30), MotionBlur(7, 30)
    matrix_free.dense_limit = 0
    truth = GaussianBlur(1.0).A(images((1, 3, 24, 24), seed=9)).clamp(-1, 1)
    x = GaussianBlur(1.0).A(images((1, 3, 24, 24), seed=10)) * 0.3 + truth
    y = dense.A(truth)
    # The corrections differ along the directions near the cut-off (eta = 0: 6% here), hardly above it.
    for eta, close in ((0.0, 0.1), (0.01, 0.005)):
        exact, solved = dense.back_project(x, y, eta), matrix_free.back_project(x, y, eta)
        assert ((solved - exact).norm() / (exact - x).norm()) < close
    assert (matrix_free.A(matrix_free.back_project(x, y)) - y).abs().max() < 1e-3
    # The other methods go through the same solver: A A^+ A = A to within the cut-off.
    assert (matrix_free.A(matrix_free.pinv(y)) - y).abs().max() < 10 * matrix_free.rcond
    assert torch.allclose(matrix_free.range_part(x), matrix_free.pinv(matrix_free.A(x)), atol=1e-9)
    fitted = matrix_free.fit_measurement(x * 3, y)
    assert fitted.abs().max() <= 1 and (matrix_free.A(fitted) - y).abs().max() < 0.05
