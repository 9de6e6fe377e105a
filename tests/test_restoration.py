"""Restoration with general linear operators through the pipeline: consistency, tiles, noise, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cmedit.core.arguments import EditOptions
from cmedit.core.degradations import Downsample, GaussianBlur, MotionBlur
from cmedit.core.noise import resolve_noise_level
from cmedit.core.operators import Inpainting, SuperResolution
from cmedit.core.projection import MaskedProjectionScheduler
from conftest import RESOLUTION, tiny_scheduler


def smooth(h, w, seed=0) -> np.ndarray:
    """A smooth uint8 image in [50, 200] (so that restorations need no clipping)."""
    small = np.random.RandomState(seed).randint(50, 200, (max(h // 4, 2), max(w // 4, 2), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float64) / 255).permute(2, 0, 1)[None]


def gen(n=0):
    return torch.Generator().manual_seed(n)


def test_range_null_space_step_equals_algorithm_4_for_box_downsampling():
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    x = torch.randn(2, 3, 16, 16)
    orthogonal = MaskedProjectionScheduler(tiny_scheduler(), SuperResolution(4), y)
    general = MaskedProjectionScheduler(tiny_scheduler(), Downsample(4, "box"), y)
    for wrapper in (orthogonal, general):
        wrapper.set_timesteps(2)
    a = orthogonal.step(x, orthogonal.timesteps[0], torch.zeros_like(x), generator=gen(), return_dict=False)[0]
    b = general.step(x, general.timesteps[0], torch.zeros_like(x), generator=gen(), return_dict=False)[0]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("size", [(RESOLUTION // 4, RESOLUTION // 4), (7, 5)])  # one tile; tiles
def test_bicubic_super_resolution_shrinks_back_to_the_input(pipe, size):
    low = np.asarray(Image.fromarray(smooth(size[0] * 4, size[1] * 4, 1)).resize(size[::-1], Image.Resampling.BICUBIC))
    out = pipe.super_resolve(low, factor=4, num_inference_steps=2, generator=gen(), output_type="pt").images
    assert out.shape == (1, 3, size[0] * 4, size[1] * 4)
    shrunk = Downsample(4, "bicubic").A(out.double())
    assert (shrunk - to_tensor(low)).abs().max() < 1.5 / 255


@pytest.mark.parametrize("blur,size", [(GaussianBlur(1.0), (RESOLUTION, RESOLUTION)), (GaussianBlur(1.0), (20, 28)),
                                       (MotionBlur(5, 30), (RESOLUTION, RESOLUTION))])
def test_deblurred_image_blurs_back_to_the_input(pipe, blur, size):
    blurred = blur.A(to_tensor(smooth(*size, seed=2)))
    image = (blurred[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    out = pipe.deblur(image, blur, num_inference_steps=2, generator=gen(), output_type="pt").images
    assert out.shape == (1, 3, *size)
    # Exact on the kept singular directions; the cut-off ones (below 1% of the largest) hold a little of y.
    assert (blur.A(out.double()) - to_tensor(image)).abs().max() < 0.02
    assert (out.double() - to_tensor(image)).abs().max() > 0.02  # it changed the image


def test_motion_deblur_beyond_the_dense_limit_blurs_back_at_full_size(pipe):
    """A non-separable blur above DENSE_LIMIT pixels (66x66): the tiles, then the matrix-free full-size projection."""
    from scipy.ndimage import convolve

    blur, size = MotionBlur(5, 30), (66, 66)

    def blurred(image: np.ndarray) -> np.ndarray:  # scipy's, the definition of the blur
        return np.stack([convolve(image[..., c], blur.kernel, mode="reflect") for c in range(3)], -1)

    image = (blurred(smooth(*size, seed=5) / 255) * 255).round().astype(np.uint8)
    out = pipe.deblur(image, blur, num_inference_steps=2, generator=gen(), output_type="np").images[0]
    assert out.shape == (*size, 3)
    assert np.abs(blurred(out.astype(np.float64)) - image / 255).max() < 0.01  # the tiles alone: 0.031
    assert np.abs(out - image / 255).max() > 0.02


def test_noise_level_pulls_known_pixels_only_part_way(pipe):
    image = smooth(RESOLUTION, RESOLUTION, 3)
    mask = np.zeros((RESOLUTION, RESOLUTION), np.uint8)
    mask[4:10, 4:10] = 255
    kwargs = dict(num_inference_steps=2, output_type="np")
    exact = pipe.inpaint(image, mask, generator=gen(), **kwargs).images[0]
    noisy = pipe.inpaint(image, mask, noise_level=0.1, generator=gen(), **kwargs).images[0]
    keep = mask == 0
    assert np.abs(exact[keep] * 255 - image[keep]).max() < 0.51
    assert np.abs(noisy[keep] * 255 - image[keep]).max() > 1  # not copied: regularised towards the model


def test_auto_noise_level_estimates_the_noise():
    clean = torch.from_numpy(smooth(64, 64, 4).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    noisy = clean + 2 * 0.05 * torch.randn(clean.shape, generator=gen())
    assert abs(resolve_noise_level("auto", noisy) - 0.05) < 0.01
    assert resolve_noise_level("auto", clean) < 0.01


def test_bad_restoration_inputs(pipe):
    image = smooth(8, 8)
    with pytest.raises(ValueError, match=r"noise level must be in \[0, 1\]"):
        pipe.super_resolve(image, factor=2, noise_level=-0.1)
    with pytest.raises(TypeError, match="integer"):
        pipe.super_resolve(image, factor=2.5)
    with pytest.raises(ValueError, match="larger than the image"):
        pipe.deblur(image, GaussianBlur(3.0))
    with pytest.raises(ValueError, match="sum to a positive"):
        pipe.deblur(image, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="only available with kernel='box'"):
        pipe.super_resolve(image, factor=2, kernel="bicubic", colorize=True)
    with pytest.raises(ValueError, match="model's size"):
        pipe.edit_tensor(torch.zeros(1, 3, 8, 8), Downsample(2), EditOptions())
    assert isinstance(Inpainting(torch.ones(1, 1, 2, 2)), Inpainting)


def test_fresh_noise_mixes_in_the_reversed_noise_estimate():
    """fresh_noise r: the new noise is r z + sqrt(1 - r^2) (denoised - x) / sigma (before the projection)."""
    y = torch.rand(2, 3, 16, 16, generator=gen(1)) * 2 - 1
    x = torch.randn(2, 3, 16, 16, generator=gen(2))
    output = torch.randn(2, 3, 16, 16, generator=gen(3))
    operator = GaussianBlur(1.0)
    steps = {}
    for r in (1.0, 0.3, 0.0):
        wrapper = MaskedProjectionScheduler(tiny_scheduler(), operator, operator.pinv(operator.A(y)), fresh_noise=r)
        wrapper.set_timesteps(timesteps=[20, 10])
        steps[r] = wrapper.step(output, wrapper.timesteps[0], x, generator=gen(4), return_dict=False)[0]
    _, c_skip, c_out, noise_scale = wrapper._scalings[0]
    estimate = (c_out * output + c_skip * x).clamp(-1, 1)
    projected = operator.project(estimate, wrapper.y0)
    z = torch.randn(x.shape, generator=gen(4))
    assert torch.allclose(steps[1.0], projected + noise_scale * z, atol=1e-5)
    reused = (estimate - x) / wrapper.sigmas[0]
    assert torch.allclose(steps[0.0], projected + noise_scale * reused, atol=1e-5)
    assert torch.allclose(steps[0.3], projected + noise_scale * (0.3 * z + 0.91**0.5 * reused), atol=1e-5)
    with pytest.raises(ValueError, match="fresh_noise"):
        MaskedProjectionScheduler(tiny_scheduler(), operator, y, fresh_noise=1.5)


def test_sigma_timesteps_are_the_nearest_distinct_grid_levels():
    from cmedit.core.schedules import grid_sigmas, sigma_timesteps

    config = tiny_scheduler().config
    grid = grid_sigmas(config)
    scheduler = tiny_scheduler()
    scheduler.set_timesteps(40)  # diffusers' own grid, every level
    assert np.allclose(sorted(grid), sorted(scheduler.sigmas[:-1].tolist()), rtol=1e-5)
    timesteps = sigma_timesteps(config, 4, 2.24, 0.18)
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == 4
    levels = [grid[i] for i in timesteps[::-1]]
    for level, target in zip(levels, np.geomspace(2.24, 0.18, 4)):  # nearest in log sigma
        assert min(abs(np.log(g / target)) for g in grid) == pytest.approx(abs(np.log(level / target)))
    # Targets closer together than the grid: the later steps move one level further down.
    assert sigma_timesteps(config, 3, 0.3, 0.29) == [29, 28, 27]
    with pytest.raises(ValueError, match="fewer steps"):
        sigma_timesteps(config, 10, 0.004, 0.002)


def test_restoration_defaults_and_an_explicit_strength(pipe, monkeypatch):
    """Without strength or timesteps a restoration takes its operator's schedule and reused noise; an
    explicit strength=1 (pure noise at sigma_max, Algorithm 4's start) is honoured, not replaced."""
    from cmedit.core.schedules import sigma_timesteps

    seen = []
    original = MaskedProjectionScheduler.set_timesteps

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append((self.timesteps.tolist(), self.fresh_noise))

    monkeypatch.setattr(MaskedProjectionScheduler, "set_timesteps", spy)
    blur = GaussianBlur(1.0)
    image = smooth(RESOLUTION, RESOLUTION, seed=3)
    pipe.deblur(image, blur, generator=gen(), output_type="pt")
    pipe.super_resolve(image[::4, ::4], factor=4, generator=gen(), output_type="pt")
    pipe.deblur(image, blur, strength=1.0, num_inference_steps=2, generator=gen(), output_type="pt")
    config = pipe.scheduler.config
    expected = [sigma_timesteps(config, 4, *blur.default_sigmas),
                sigma_timesteps(config, 4, *Downsample(4, "bicubic").default_sigmas)]
    for (timesteps, fresh), grid in zip(seen[:2], expected):
        reference = tiny_scheduler()
        reference.set_timesteps(timesteps=grid)
        assert timesteps == reference.timesteps.tolist() and fresh == blur.fresh_noise < 1
    reference = tiny_scheduler()
    reference.set_timesteps(2)
    assert seen[2][0] == reference.timesteps.tolist()  # strength 1: the scheduler's own schedule from sigma_max
    with pytest.raises(ValueError, match="num_inference_steps"):  # not taken as "the default number"
        pipe.deblur(image, blur, num_inference_steps=0, generator=gen())


def test_tiled_restoration_takes_a_list_of_one_generator(pipe):
    """The CLI passes one generator per file: a list of one for an image restored in many tiles."""
    image = smooth(RESOLUTION + 9, RESOLUTION + 5, seed=4)
    outs = [pipe.deblur(image, GaussianBlur(1.0), num_inference_steps=2, generator=[gen(5)], output_type="pt").images
            for _ in range(2)]
    assert outs[0].shape == (1, 3, RESOLUTION + 9, RESOLUTION + 5)
    assert torch.equal(outs[0], outs[1])
