"""Edits that start part-way down the noise grid (``strength``, SDEdit) and ``img2img``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from cmedit import Inpainting
from cmedit.cli import main
from cmedit.core.schedules import strength_timesteps
from conftest import RESOLUTION, sample_by_hand, tiny_scheduler


def image_batch(seed: int, size: int = RESOLUTION, batch: int = 2) -> torch.Tensor:
    """Random images in [0, 1], as the pipeline takes them."""
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------- the schedule


@pytest.mark.parametrize("num_train_timesteps", [18, 40, 151])
def test_strength_one_is_the_schedulers_own_schedule(num_train_timesteps):
    for steps in range(1, num_train_timesteps + 1):
        ours, theirs = tiny_scheduler(num_train_timesteps), tiny_scheduler(num_train_timesteps)
        ours.set_timesteps(timesteps=strength_timesteps(num_train_timesteps, steps, 1.0))
        theirs.set_timesteps(steps)
        assert torch.equal(ours.sigmas, theirs.sigmas), steps


@pytest.mark.parametrize("strength", [0.9, 0.5, 0.3, 0.15])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_strength_sets_the_first_level_and_the_rest_follow_evenly(strength, steps):
    timesteps = strength_timesteps(40, steps, strength)
    start = round((1 - strength) * 39)
    assert len(timesteps) == steps and timesteps[-1] == start
    assert all(a > b for a, b in zip(timesteps, timesteps[1:])) and timesteps[0] <= 39
    assert len({a - b for a, b in zip(timesteps, timesteps[1:])}) <= 1  # evenly spaced
    scheduler = tiny_scheduler()
    scheduler.set_timesteps(timesteps=timesteps)
    full = tiny_scheduler()
    full.set_timesteps(40)
    assert math.isclose(float(scheduler.sigmas[0]), float(full.sigmas[start]), rel_tol=1e-6)
    # A lower strength never starts higher.
    assert strength_timesteps(40, steps, strength / 2)[-1] >= start


@pytest.mark.parametrize("strength, message", [(0.0, "in (0, 1]"), (1.5, "in (0, 1]"), (float("nan"), "in (0, 1]"),
                                               (-0.2, "in (0, 1]"), (0.02, "fewer than 4 steps")])
def test_bad_strength_is_refused(strength, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        strength_timesteps(40, 4, strength)


def test_strength_and_timesteps_together_are_refused(pipe):
    with pytest.raises(ValueError, match="strength or timesteps"):
        pipe.img2img(image_batch(0), strength=0.5, timesteps=[30, 20])


# ----------------------------------------------------------------- the edits


def test_strength_one_is_algorithm_4_unchanged(pipe):
    mask = torch.zeros(1, 1, RESOLUTION, RESOLUTION)
    mask[..., 3:11, 5:12] = 1
    y = image_batch(1)
    plain = pipe.edit(y, Inpainting(mask), num_inference_steps=3, generator=seeded(), output_type="pt").images
    same = pipe.edit(y, Inpainting(mask), num_inference_steps=3, strength=1.0, generator=seeded(),
                     output_type="pt").images
    assert torch.equal(plain, same)


def test_img2img_is_sdedit_with_the_documented_draw_order(pipe):
    """By hand: z first, x = y + sigma_1 z, then denoise, clip and re-noise with one draw per step."""
    y = image_batch(3)
    ours = pipe.img2img(y, strength=0.6, num_inference_steps=3, generator=seeded(9), output_type="pt").images

    scheduler = tiny_scheduler()
    scheduler.set_timesteps(timesteps=strength_timesteps(40, 3, 0.6))
    assert float(scheduler.sigmas[0]) < 10  # well below sigma_max = 80: the image survives the noise
    g = seeded(9)
    x = y * 2 - 1
    x = x + scheduler.sigmas[0] * randn_tensor(x.shape, generator=g)
    x = sample_by_hand(pipe.unet, scheduler, x, g)  # nothing known: no projection
    assert torch.allclose(ours * 2 - 1, x.clamp(-1, 1), atol=1e-5)


def test_img2img_keeps_more_of_the_image_at_lower_strength(pipe):
    y = image_batch(4, batch=4)
    distance = {strength: (pipe.img2img(y, strength=strength, num_inference_steps=1, generator=seeded(),
                                        output_type="pt").images - y).abs().mean().item()
                for strength in (0.05, 0.2, 1.0)}
    assert distance[0.05] < 0.05  # sigma 0.006: f is nearly the identity there
    assert distance[0.05] < distance[0.2] < distance[1.0]
    # At strength 1 the image is ignored: another image gives the same sample.
    other = pipe.img2img(image_batch(5, batch=4), strength=1.0, num_inference_steps=2, generator=seeded(),
                         output_type="pt").images
    again = pipe.img2img(y, strength=1.0, num_inference_steps=2, generator=seeded(), output_type="pt").images
    assert torch.allclose(other, again, atol=1e-5)


def test_img2img_returns_the_inputs_size(pipe):
    y = image_batch(6, size=24, batch=1)
    out = pipe.img2img(y, strength=0.4, num_inference_steps=2, generator=seeded(), output_type="pt").images
    assert out.shape == y.shape and 0 <= out.min() and out.max() <= 1


def masked_pair(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two images that differ only inside a mask, and the mask (1 = fill)."""
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4:size // 2, size // 3:size * 2 // 3] = 1
    a = image_batch(7, size=size, batch=1)
    b = torch.where(mask > 0, image_batch(8, size=size, batch=1), a)
    return a, b, mask


@pytest.mark.parametrize("size", [RESOLUTION, 3 * RESOLUTION])  # whole image; region crops at full resolution
def test_inpaint_strength_lets_the_masked_content_guide_the_fill(pipe, size):
    a, b, mask = masked_pair(size)
    keep = mask[0, 0] == 0

    def fill(image, strength):
        out = pipe.inpaint(image, mask, strength=strength, num_inference_steps=2, feather=0, generator=seeded(),
                           output_type="pt").images
        assert torch.allclose(out[..., keep], image[..., keep], atol=1e-5)  # the kept pixels stay
        return out

    # Algorithm 4 never looks under the mask; from part-way down, the content there shows through.
    assert torch.allclose(fill(a, 1.0), fill(b, 1.0), atol=1e-5)
    low_a, low_b = fill(a, 0.2), fill(b, 0.2)
    inside = mask[0, 0] > 0
    assert (low_a - low_b)[..., inside].abs().mean() > 0.1
    assert (low_a - a)[..., inside].abs().mean() < (fill(a, 1.0) - a)[..., inside].abs().mean()


def test_super_resolution_with_strength_keeps_block_means_whole_and_tiled(pipe):
    for size in (RESOLUTION // 4, RESOLUTION // 2):  # one tile; several tiles
        low = image_batch(9, size=size, batch=1)
        out = pipe.super_resolve(low, factor=4, kernel="box", strength=0.5, num_inference_steps=2, generator=seeded(),
                                 output_type="pt").images
        means = torch.nn.functional.avg_pool2d(out, 4)
        assert out.shape[-1] == 4 * size and torch.allclose(means, low, atol=1e-4)


def test_class_conditional_img2img(class_pipe):
    out = class_pipe.img2img(image_batch(10), strength=0.5, class_labels=[1, 2], num_inference_steps=2,
                             generator=seeded(), output_type="pt").images
    other = class_pipe.img2img(image_batch(10), strength=0.5, class_labels=[3, 4], num_inference_steps=2,
                               generator=seeded(), output_type="pt").images
    assert out.shape == (2, 3, RESOLUTION, RESOLUTION) and not torch.allclose(out, other)


# ----------------------------------------------------------------- the command line


@pytest.fixture
def painting(tmp_path):
    image = np.full((RESOLUTION, RESOLUTION, 3), 255, dtype=np.uint8)
    image[4:12, 4:12] = (250, 200, 60)
    image[6:8, 6:8] = (40, 30, 20)
    Image.fromarray(image).save(tmp_path / "strokes.png")
    mask = np.zeros((RESOLUTION, RESOLUTION), dtype=np.uint8)
    mask[3:9, 5:13] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path, image, mask


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_img2img_writes_a_reproducible_image_near_its_input(painting, model_dir):
    tmp, image, _ = painting
    outputs = []
    for name, strength in (("a", 0.05), ("b", 0.05), ("c", 0.8)):
        result = run("img2img", tmp / "strokes.png", "--strength", strength, "--model", model_dir, "--steps", 1,
                     "--seed", 0, "-q", "-o", tmp / f"{name}.png")
        assert result.exit_code == 0, result.output
        outputs.append(np.asarray(Image.open(tmp / f"{name}.png")).astype(int))
    a, b, c = outputs
    assert a.shape == image.shape and (a == b).all()
    near, far = np.abs(a - image).mean(), np.abs(c - image).mean()
    assert near < 12 and far > 4 * near, (near, far)


def test_cli_inpaint_strength_keeps_unmasked_pixels(painting, model_dir):
    tmp, image, mask = painting
    result = run("inpaint", "--mask", tmp / "mask.png", tmp / "strokes.png", "--strength", 0.4, "--model", model_dir,
                 "--steps", 2, "--seed", 0, "-q", "-o", tmp / "out.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp / "out.png"))
    assert (out[mask == 0] == image[mask == 0]).all()


@pytest.mark.parametrize("args, message", [
    (["img2img", "{tmp}/strokes.png", "--strength", "0"], "not in the range"),
    (["img2img", "{tmp}/strokes.png", "--strength", "1.2"], "not in the range"),
    (["img2img", "{tmp}/strokes.png", "--strength", "0.5", "--timesteps", "30,20"], "not both"),
    (["img2img", "{tmp}/strokes.png", "--strength", "0.02", "--steps", "4"], "fewer than 4 steps"),
    (["colorize", "{tmp}/strokes.png", "--strength", "0.5", "--timesteps", "30,20"], "not both"),
    (["super-resolve", "{tmp}/strokes.png", "--strength", "-1"], "not in the range"),
])
def test_cli_bad_strength_one_line_no_output(painting, model_dir, args, message):
    tmp, _, _ = painting
    before = sorted(p.name for p in tmp.iterdir())
    result = CliRunner().invoke(main, [a.format(tmp=tmp) for a in args]
                                + ["--model", str(model_dir), "-q", "-o", str(tmp / "result.png")])
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp.iterdir()) == before
