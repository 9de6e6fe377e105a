"""``cmedit deblur`` and the degradation options of super-resolve, inpaint and colorize, through the real CLI."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cmedit.core.degradations import Downsample, GaussianBlur
from conftest import RESOLUTION
from test_cli import assert_clean_failure, run


def smooth(h, w):
    small = np.random.RandomState(0).randint(60, 190, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def as_tensor(array):
    return torch.from_numpy(np.asarray(array, dtype=np.float64) / 255).permute(2, 0, 1)[None]


def test_deblur_and_bicubic_super_resolution_are_consistent(tmp_path, model_dir):
    sharp = smooth(RESOLUTION, RESOLUTION)
    blurred = GaussianBlur(1.0).A(as_tensor(sharp))[0].permute(1, 2, 0).numpy()
    Image.fromarray(np.round(blurred * 255).astype(np.uint8)).save(tmp_path / "blurred.png")
    result = run("deblur", "--blur", "gaussian:1", tmp_path / "blurred.png", "--model", model_dir, "--steps", 2,
                 "--seed", 0, "-q", "-o", tmp_path / "sharp.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "sharp.png"))
    assert out.shape == (RESOLUTION, RESOLUTION, 3)
    reblurred = GaussianBlur(1.0).A(as_tensor(out))
    assert (reblurred - as_tensor(np.round(blurred * 255))).abs().max() < 0.03

    Image.fromarray(sharp).resize((4, 4), Image.Resampling.BICUBIC).save(tmp_path / "small.png")
    result = run("super-resolve", "--factor", 4, tmp_path / "small.png",
                 "--model", model_dir, "--steps", 2, "--seed", 0, "-q", "-o", tmp_path / "big.png")
    assert result.exit_code == 0, result.output
    big = np.asarray(Image.open(tmp_path / "big.png"))
    small = np.asarray(Image.open(tmp_path / "small.png"))
    assert big.shape == (16, 16, 3)
    assert (Downsample(4).A(as_tensor(big)) - as_tensor(small)).abs().max() < 1.5 / 255  # 8-bit rounding


def test_noise_level_on_inpaint_and_colorize(tmp_path, model_dir):
    image = smooth(RESOLUTION, RESOLUTION)
    Image.fromarray(image).save(tmp_path / "img.png")
    mask = np.zeros((RESOLUTION, RESOLUTION), np.uint8)
    mask[4:10, 4:10] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    for command, extra in (("inpaint", ["--mask", tmp_path / "mask.png"]), ("colorize", [])):
        result = run(command, *extra, tmp_path / "img.png", "--noise-level", "auto", "--model", model_dir,
                     "--steps", 1, "--seed", 0, "-q", "-o", tmp_path / f"{command}.png")
        assert result.exit_code == 0, result.output
        assert np.asarray(Image.open(tmp_path / f"{command}.png")).shape == (RESOLUTION, RESOLUTION, 3)


def test_bad_degradation_input_is_one_error_line(tmp_path, model_dir):
    Image.fromarray(smooth(8, 8)).save(tmp_path / "img.png")
    np.save(tmp_path / "zero.npy", np.zeros((3, 3)))
    common = ["--model", model_dir, "--steps", 1, "-q", "-o", tmp_path / "out.png"]
    assert_clean_failure(run("deblur", tmp_path / "img.png", *common), "--blur SPEC or --kernel FILE")
    assert_clean_failure(run("deblur", "--blur", "blur:3", tmp_path / "img.png", *common), "gaussian:SIGMA")
    assert_clean_failure(run("deblur", "--kernel", tmp_path / "zero.npy", tmp_path / "img.png", *common),
                         "sum to a positive number")
    assert_clean_failure(run("deblur", "--blur", "gaussian:3", tmp_path / "img.png", *common), "larger than the image")
    assert_clean_failure(run("super-resolve", "--noise-level", "-0.1", tmp_path / "img.png", *common), "[0, 1]")
    assert_clean_failure(run("super-resolve", "--factor", "2.5", tmp_path / "img.png", *common), "2.5")
    assert_clean_failure(run("super-resolve", "--colorize", "--kernel", "lanczos", tmp_path / "img.png", *common),
                         "--kernel box")
    assert not (tmp_path / "out.png").exists()


def test_eval_degradation_tasks_at_two_noise_levels(tmp_path, model_dir):
    folder = tmp_path / "heldout"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(smooth(16, 16), i, axis=0)).save(folder / f"{i}.png")
    result = run("eval", folder, "--model", model_dir, "--steps", 1, "--seeds", 0, "--tasks",
                 "sr4-bicubic,deblur-gauss", "--noise-level", "0,0.05", "-q")
    assert result.exit_code == 0, result.output
    for row in ("sr4-bicubic (noise 0) | cmedit", "sr4-bicubic (noise 0.05) | bicubic",
                "deblur-gauss (noise 0.05) | wiener", "deblur-gauss (noise 0) | richardson_lucy",
                "deblur-gauss (noise 0) | pseudo_inverse"):
        assert row in result.output
    assert_clean_failure(run("eval", folder, "--noise-level", "0,-1", "-q"), "[0, 1]")
