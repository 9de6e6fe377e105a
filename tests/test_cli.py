"""The command line through its real entry point (``cmedit.cli:main``, the console script)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cmedit.cli import main
from conftest import RESOLUTION

LUMA = np.array([0.2989, 0.5870, 0.1140])


@pytest.fixture
def files(tmp_path):
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    mask = np.zeros((RESOLUTION, RESOLUTION), dtype=np.uint8)
    mask[3:9, 5:13] = 255
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(image[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(image[:4, :4]).save(tmp_path / "small.png")
    Image.fromarray(mask[:8, :8]).save(tmp_path / "mask8.png")
    (tmp_path / "not_an_image.png").write_text("hello")
    return tmp_path, image, mask


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_clean_failure(result, message: str) -> None:
    """Non-zero exit, no traceback, and exactly one 'Error:' line that says what is wrong.

    (Click prints its usage hint above the error for malformed options; that is the only other text.)
    """
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.output


def test_inpaint_keeps_unmasked_pixels_byte_identical(files, model_dir):
    tmp, image, mask = files
    result = run("inpaint", "--mask", tmp / "mask.png", tmp / "img.png", "--model", model_dir, "--steps", 2,
                 "--seed", 0, "-q", "-o", tmp / "out.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp / "out.png"))
    assert (out[mask < 128] == image[mask < 128]).all()
    assert not (out[mask >= 128] == image[mask >= 128]).all()


def test_colorize_keeps_grey_levels(files, model_dir):
    tmp, image, _ = files
    result = run("colorize", tmp / "gray.png", "--model", model_dir, "--timesteps", "22,0", "--seed", 1,
                 "-q", "-o", tmp / "color.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp / "color.png"), dtype=np.float64)
    assert out.shape == (RESOLUTION, RESOLUTION, 3)
    assert np.abs((out * LUMA).sum(-1) - image[..., 0] * LUMA.sum()).max() <= 0.5 + 1e-6


def test_super_resolve_block_means(files, model_dir):
    tmp, image, _ = files
    result = run("super-resolve", "--factor", 4, "--kernel", "box", tmp / "small.png", "--model", model_dir, "--seed", 2, "-q",
                 "-o", tmp / "big.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp / "big.png"), dtype=np.float64)
    assert out.shape == (16, 16, 3)
    assert np.abs(out.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3)) - image[:4, :4]).max() <= 0.5


def test_generate_and_same_seed_same_output(files, model_dir):
    tmp, _, _ = files
    for folder in ("a", "b"):
        result = run("generate", "-n", 3, "--model", model_dir, "--seed", 5, "--steps", 2, "-o", f"{tmp / folder}/")
        assert result.exit_code == 0, result.output
        assert "wrote" in result.stderr
    names = sorted(p.name for p in (tmp / "a").iterdir())
    assert names == ["0000.png", "0001.png", "0002.png"]
    for name in names:
        assert (np.asarray(Image.open(tmp / "a" / name)) == np.asarray(Image.open(tmp / "b" / name))).all()


def test_num_samples_writes_numbered_candidates(files, model_dir):
    tmp, _, _ = files
    result = run("colorize", tmp / "img.png", "--model", model_dir, "--num-samples", 2, "--steps", 1, "-q",
                 "-o", tmp / "c.png")
    assert result.exit_code == 0, result.output
    assert (tmp / "c_0.png").exists() and (tmp / "c_1.png").exists() and not (tmp / "c.png").exists()


@pytest.mark.parametrize("args,message", [
    (["inpaint", "--mask", "{tmp}/mask.png", "{tmp}/missing.png"], "missing.png: no such file"),
    (["inpaint", "--mask", "{tmp}/mask.png", "{tmp}/not_an_image.png"], "not an image file that can be read"),
    (["inpaint", "--mask", "{tmp}/mask8.png", "{tmp}/img.png"], "is 8x8 but the image is 16x16 (pass --resize-mask"),
    (["super-resolve", "--factor", "3", "{tmp}/small.png"], "factor 3 does not divide the model resolution"),
    (["colorize", "--timesteps", "0,22", "{tmp}/img.png"], "timesteps must be strictly descending"),
    (["colorize", "--timesteps", "45,0", "{tmp}/img.png"], "timesteps must lie in [0, 39]"),
    (["colorize", "--timesteps", "a,b", "{tmp}/img.png"], "comma-separated integers"),
    (["colorize", "{tmp}/img.png", "--model", "{tmp}"], "not a consistency model folder"),
    (["colorize", "{tmp}/img.png", "--model", "{tmp}/nowhere"], "no such model folder"),
    (["colorize", "{tmp}/img.png", "-o", "{tmp}/out.xyz"], "unknown output format"),
    (["generate", "--class-label", "3"], "not class-conditional"),
    (["colorize", "{tmp}/img.png", "--dtype", "float16", "--device", "cpu"], "float16 is not supported"),
    (["colorize", "{tmp}/img.png", "--device", "cuda:99"], "'cuda:99' is not available to this torch build"),
    (["colorize", "{tmp}/img.png", "--device", "nodevice"], "unknown device 'nodevice'"),
])
def test_bad_input_one_line_no_traceback_no_output(files, model_dir, args, message):
    tmp, _, _ = files
    before = sorted(p.name for p in tmp.rglob("*"))
    args = [a.format(tmp=tmp) for a in args]
    if "--model" not in args:
        args += ["--model", str(model_dir)]
    if "-o" not in args:
        args += ["-o", str(tmp / "result.png")]
    result = run(*args, "-q")
    assert_clean_failure(result, message)
    assert sorted(p.name for p in tmp.rglob("*")) == before  # nothing written or overwritten


def test_overwrite_flag_replaces_existing_output(files, model_dir):
    tmp, _, _ = files
    (tmp / "o.png").write_bytes(b"old")
    result = run("colorize", tmp / "img.png", "--model", model_dir, "--steps", 1, "-q", "-o", tmp / "o.png",
                 "--overwrite")
    assert result.exit_code == 0 and Image.open(tmp / "o.png").size == (RESOLUTION, RESOLUTION)


def test_console_script_help_and_version_do_not_import_torch():
    code = ("import sys; from cmedit.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['inpaint', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--mask" in result.stdout and "Examples" in result.stdout
    version = subprocess.run(["cmedit", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "0.1.0" in version.stdout


def test_every_command_has_help_with_an_example():
    for command in ("inpaint", "colorize", "super-resolve", "generate"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.output and "--model" in result.output


def test_channels_last_option_gives_the_same_image(files, model_dir):
    tmp, _, _ = files
    for name, extra in (("plain.png", []), ("nhwc.png", ["--channels-last"])):
        result = run("colorize", tmp / "img.png", "--model", model_dir, "--steps", 1, "--seed", 3, "-q",
                     "-o", tmp / name, *extra)
        assert result.exit_code == 0, result.output
    a = np.asarray(Image.open(tmp / "plain.png"), dtype=int)
    b = np.asarray(Image.open(tmp / "nhwc.png"), dtype=int)
    assert np.abs(a - b).max() <= 1  # the same network, another memory layout


def test_max_batch_option_splits_the_batch_and_keeps_the_images(files, model_dir):
    """--max-batch 1 with two candidates of a 4x super-resolution in tiles: the same images as one batch."""
    tmp, image, _ = files
    Image.fromarray(image[:9, :13]).save(tmp / "wide.png")  # 13x9 low-res: several tiles of 4x4
    for name, extra in (("whole", ["--max-batch", 0]), ("split", ["--max-batch", 1])):
        result = run("super-resolve", tmp / "wide.png", "--model", model_dir, "--steps", 2, "--seed", 1, "-q",
                     "--num-samples", 2, "-o", tmp / f"{name}.png", *extra)
        assert result.exit_code == 0, result.output
    for k in (0, 1):
        a = np.asarray(Image.open(tmp / f"whole_{k}.png"), dtype=int)
        b = np.asarray(Image.open(tmp / f"split_{k}.png"), dtype=int)
        assert a.shape == (36, 52, 3) and np.abs(a - b).max() <= 1
    assert_clean_failure(run("colorize", tmp / "img.png", "--model", model_dir, "--max-batch", -1),
                         "--max-batch")
