"""Properties of the editing operators and the masked projection (docs/design.md, section 3)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cmedit.core.operators import (LUMINANCE, Colorization, Inpainting, PatchOperator, SuperResolution, compose,
                              luminance_basis, patch_mean_basis)


def random_image(shape, seed=0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def operators(size=16):
    mask = torch.zeros(2, 1, size, size)
    mask[0, :, 2:9, 3:7] = 1
    mask[1, :, 10:, :] = 1
    return {
        "inpainting": Inpainting(mask),
        "colorization": Colorization(),
        "sr2": SuperResolution(2),
        "sr4": SuperResolution(4),
        "sr8": SuperResolution(8),
        "color+sr4": compose(Colorization(), SuperResolution(4)),
    }


@pytest.mark.parametrize("name", list(operators()))
def test_A_is_orthogonal(name):
    op = operators()[name]
    x = random_image((2, 3, 16, 16))
    a = op.A(x)
    assert torch.allclose(op.AT(a), x, atol=1e-12)  # A^T A = I
    assert torch.allclose(a.norm(), x.norm(), atol=1e-10)  # A preserves norms
    assert name == "inpainting" or a.shape != x.shape or not torch.allclose(a, x)


@pytest.mark.parametrize("name", list(operators()))
def test_projection_keeps_known_part_and_is_idempotent(name):
    op = operators()[name]
    x, y = random_image((2, 3, 16, 16), 1), random_image((2, 3, 16, 16), 2)
    y0 = op.known_part(y)
    px = op.project(x, y0)
    omega = op.mask(x.shape, x.device, x.dtype)
    assert torch.allclose(op.A(px) * (1 - omega), op.A(y) * (1 - omega), atol=1e-12)  # known from y
    assert torch.allclose(op.A(px) * omega, op.A(x) * omega, atol=1e-12)  # generated from x
    assert torch.allclose(op.project(px, y0), px, atol=1e-12)
    assert torch.allclose(op.project(y, y0), y, atol=1e-12)  # y is a fixed point


def test_luminance_basis_matches_design():
    q = luminance_basis()
    lum = torch.tensor(LUMINANCE, dtype=torch.float64)
    assert torch.allclose(q.T @ q, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(q[:, 0], lum / lum.norm(), atol=1e-12)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_patch_mean_basis_first_column_constant(factor):
    q = patch_mean_basis(factor)
    assert torch.allclose(q.T @ q, torch.eye(factor**2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(q[:, 0], torch.full((factor**2,), 1 / factor, dtype=torch.float64), atol=1e-12)


def test_inpainting_mask_polarity_one_means_generate():
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    op = Inpainting(mask)
    x, y = torch.ones(1, 3, 4, 4), -torch.ones(1, 3, 4, 4)
    out = op.project(x, op.known_part(y))
    assert (out[..., :2, :] == 1).all() and (out[..., 2:, :] == -1).all()


def test_colorization_keeps_luminance_of_reference():
    op = Colorization()
    x, y = random_image((1, 3, 8, 8), 3), random_image((1, 3, 8, 8), 4)
    lum = torch.tensor(LUMINANCE, dtype=torch.float64).view(1, 3, 1, 1)
    out = op.project(x, op.known_part(y))
    assert torch.allclose((out * lum).sum(1), (y * lum).sum(1), atol=1e-12)
    assert not torch.allclose(out, y)


@pytest.mark.parametrize("factor", [2, 4])
def test_super_resolution_keeps_block_means(factor):
    op = SuperResolution(factor)
    x, y = random_image((2, 3, 16, 16), 5), random_image((2, 3, 16, 16), 6)
    out = op.project(x, op.known_part(y))
    pool = torch.nn.functional.avg_pool2d
    assert torch.allclose(pool(out, factor), pool(y, factor), atol=1e-12)
    assert not torch.allclose(out, y)


def test_composition_keeps_only_luminance_block_means():
    op = Colorization() & SuperResolution(4)
    assert isinstance(op, PatchOperator) and op.known.sum() == 1
    x, y = random_image((1, 3, 16, 16), 7), random_image((1, 3, 16, 16), 8)
    lum = torch.tensor(LUMINANCE, dtype=torch.float64).view(1, 3, 1, 1)
    out = op.project(x, op.known_part(y))
    pool = torch.nn.functional.avg_pool2d
    assert torch.allclose(pool((out * lum).sum(1, keepdim=True), 4), pool((y * lum).sum(1, keepdim=True), 4),
                          atol=1e-12)
    # per-channel block means are NOT all known any more: colour within a block is free
    assert not torch.allclose(pool(out, 4), pool(y, 4))


def test_compose_rejects_two_patch_operators():
    with pytest.raises(ValueError):
        compose(SuperResolution(2), SuperResolution(4))


def test_user_operator_must_be_orthogonal():
    with pytest.raises(ValueError, match="orthogonal"):
        PatchOperator(torch.ones(3, 3), torch.tensor([True, False, False]))


def test_shape_checks():
    with pytest.raises(ValueError, match="factor 4 does not divide"):
        SuperResolution(4).check_shape((1, 3, 18, 18))
    with pytest.raises(ValueError, match="mask size"):
        Inpainting(torch.zeros(8, 8)).check_shape((1, 3, 16, 16))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), factor=st.sampled_from([1, 2, 4]), colour=st.booleans())
def test_fit_range_is_in_range_and_keeps_known_part(seed, factor, colour):
    """Moving an out-of-range projection towards y keeps the known components exactly."""
    op = SuperResolution(factor) if factor > 1 else Colorization()
    if colour and factor > 1:
        op = compose(Colorization(), op)
    y = random_image((1, 3, 8, 8), seed)
    x = random_image((1, 3, 8, 8), seed + 1) * 3  # far outside [-1, 1]
    px = op.project(x, op.known_part(y))
    out = op.fit_range(px, y)
    omega = op.mask(out.shape, out.device, out.dtype)
    assert out.min() >= -1 and out.max() <= 1
    assert torch.allclose(op.A(out) * (1 - omega), op.A(y) * (1 - omega), atol=1e-9)
    y_half = y * 0.5
    inside = op.project(y_half + 0.02 * x, op.known_part(y_half))  # within [-0.64, 0.64]
    assert torch.allclose(op.fit_range(inside, y_half), inside, atol=1e-12)  # in range: untouched
