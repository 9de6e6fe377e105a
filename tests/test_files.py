"""Real image files through the CLI: many files, modes, bit depths, alpha, metadata, bad input (issue 4)."""

from __future__ import annotations

import io
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from cmedit import ConsistencyEditPipeline
from cmedit.cli import main
from cmedit.io.files import ImageReadError, read_image, read_mask
from cmedit.io.tensors import images_to_tensor, masks_to_tensor
from conftest import RESOLUTION, tiny_scheduler, tiny_unet

R = RESOLUTION


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def pixels(seed=0, shape=(R, R, 3)):
    return np.random.RandomState(seed).randint(0, 256, shape, dtype=np.uint8)


def write_mask(path, h=R, w=R):
    mask = np.zeros((h, w), np.uint8)
    mask[2:7, 3:10] = 255
    Image.fromarray(mask).save(path)
    return mask > 127


def test_many_files_globs_skip_existing_and_one_bad_file(tmp_path, model_dir):
    for i in range(3):
        Image.fromarray(pixels(i)).save(tmp_path / f"in{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    keep = ~write_mask(tmp_path / "m.png")
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(pixels(9)).save(out / "in2_inpainted.png")  # exists already: skipped
    result = run("inpaint", "--mask", tmp_path / "m.png", f"{tmp_path}/in*.png", tmp_path / "broken.png",
                 "--model", model_dir, "--steps", 1, "--seed", 0, "-o", f"{out}/")
    assert result.exit_code == 1  # one file failed
    assert "broken.png: cannot read image" in result.stderr
    assert "2 done, 1 skipped, 1 failed" in result.stderr
    for i in range(2):
        written = np.asarray(Image.open(out / f"in{i}_inpainted.png"))
        assert (written[keep] == pixels(i)[keep]).all()
    assert (np.asarray(Image.open(out / "in2_inpainted.png")) == pixels(9)).all()  # not overwritten
    again = run("inpaint", "--mask", tmp_path / "m.png", tmp_path / "in2.png", "--model", model_dir, "--steps", 1,
                "-q", "-o", f"{out}/", "--overwrite")
    assert again.exit_code == 0
    assert not (np.asarray(Image.open(out / "in2_inpainted.png")) == pixels(9)).all()


def test_rgba_transparent_pixels_are_the_mask_and_alpha_is_kept(tmp_path, model_dir):
    rgba = np.dstack([pixels(1), np.full((R, R), 200, np.uint8)])
    rgba[4:9, 4:9, 3] = 0  # the hole
    Image.fromarray(rgba, "RGBA").save(tmp_path / "sticker.png")
    result = run("inpaint", tmp_path / "sticker.png", "--model", model_dir, "--steps", 1, "-q",
                 "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "o.png"))
    hole = rgba[..., 3] == 0
    assert out.shape == (R, R, 4)
    assert (out[~hole] == rgba[~hole]).all()  # colour and alpha kept outside the hole
    assert (out[hole, 3] == 255).all()  # the filled hole is opaque
    result = run("colorize", tmp_path / "sticker.png", "--model", model_dir, "--steps", 1, "-q", "--no-alpha",
                 "-o", tmp_path / "c.png")
    assert result.exit_code == 0 and Image.open(tmp_path / "c.png").mode == "RGB"


def test_rgb_without_mask_or_alpha_is_refused(tmp_path, model_dir):
    Image.fromarray(pixels()).save(tmp_path / "a.png")
    result = run("inpaint", tmp_path / "a.png", "--model", model_dir, "-o", tmp_path / "o.png")
    assert result.exit_code == 1 and "no alpha channel to fill" in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_grey_16bit_input_gives_grey_16bit_output_with_known_pixels_exact(tmp_path, model_dir):
    grey = (np.random.RandomState(2).rand(R, R) * 65535).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    keep = ~write_mask(tmp_path / "m.png")
    result = run("inpaint", "--mask", tmp_path / "m.png", tmp_path / "g16.png", "--model", model_dir, "--steps", 1,
                 "-q", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    out = cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.ndim == 2
    assert np.abs(out[keep].astype(int) - grey[keep]).max() <= 7  # 16-bit: within 1e-4 of full scale
    assert not (out[~keep] == grey[~keep]).all()


def test_rgb_16bit_colorize_keeps_16_bits(tmp_path, model_dir):
    rgb16 = (np.random.RandomState(3).rand(R, R, 3) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])
    result = run("colorize", tmp_path / "c16.png", "--model", model_dir, "--steps", 1, "-q", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    out = cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED)[..., ::-1].astype(np.float64)
    luma = np.array([0.2989, 0.5870, 0.1140])
    assert np.abs((out * luma).sum(-1) - (rgb16 * luma).sum(-1)).max() < 2  # luminance kept at 16-bit precision


def test_modes_exif_icc_cmyk_and_jpeg_quality(tmp_path, model_dir):
    base = pixels(4, (R, R // 2, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate: the file is stored sideways
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(base).save(tmp_path / "rot.jpg", exif=exif, icc_profile=srgb, quality=100)
    assert read_image(tmp_path / "rot.jpg").size == (R, R // 2)  # stored 8 wide x 16 high, shown turned
    Image.fromarray(base).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(base).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(base[..., 0]).convert("LA").save(tmp_path / "la.png")
    for name in ("rot.jpg", "cmyk.jpg", "pal.png", "la.png"):
        result = run("colorize", tmp_path / name, "--model", model_dir, "--steps", 1, "-q",
                     "-o", tmp_path / f"out_{name}")
        assert result.exit_code == 0, (name, result.output)
    assert Image.open(tmp_path / "out_rot.jpg").info.get("icc_profile") == srgb
    assert Image.open(tmp_path / "out_rot.jpg").size == (R, R // 2)
    assert Image.open(tmp_path / "out_la.png").mode == "RGBA"
    small = run("colorize", tmp_path / "pal.png", "--model", model_dir, "--steps", 1, "-q", "--quality", 5,
                "-o", tmp_path / "q5.jpg")
    assert small.exit_code == 0
    assert os.path.getsize(tmp_path / "q5.jpg") < os.path.getsize(tmp_path / "out_rot.jpg")


def test_resize_mask_empty_mask_and_full_mask(tmp_path, model_dir):
    Image.fromarray(pixels()).save(tmp_path / "a.png")
    write_mask(tmp_path / "small_mask.png", 8, 8)
    result = run("inpaint", "--mask", tmp_path / "small_mask.png", "--resize-mask", tmp_path / "a.png",
                 "--model", model_dir, "--steps", 1, "-q", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    Image.fromarray(np.zeros((R, R), np.uint8)).save(tmp_path / "empty.png")
    result = run("inpaint", "--mask", tmp_path / "empty.png", tmp_path / "a.png", "--model", model_dir,
                 "-o", tmp_path / "e.png")
    assert result.exit_code == 1 and "the mask is empty" in result.stderr and not (tmp_path / "e.png").exists()
    Image.fromarray(np.full((R, R), 255, np.uint8)).save(tmp_path / "full.png")
    result = run("inpaint", "--mask", tmp_path / "full.png", tmp_path / "a.png", "--model", model_dir,
                 "--steps", 1, "-o", tmp_path / "f.png")
    assert result.exit_code == 0 and "covers the whole image" in result.stderr


def zero_size_png(path):
    """A PNG whose header says it is 0 pixels wide."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


def corrupt_model(tmp_path):
    """A model folder whose weights file is garbage."""
    folder = tmp_path / "corrupt_model"
    ConsistencyEditPipeline(unet=tiny_unet(), scheduler=tiny_scheduler()).save_pretrained(folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    return folder


@pytest.mark.parametrize("case,message", [
    ("directory", "is a directory"),
    ("truncated", "cannot read image"),
    ("bomb", "more than 100 pixels"),
    ("unwritable", "is not writable"),
    ("many_to_file", "-o must be a folder"),
    ("no_match", "no file matches"),
    ("zero_size", "zero.png: not an image file"),
    ("corrupt_weights", "cannot load model"),
])
def test_bad_files(tmp_path, model_dir, case, message):
    Image.fromarray(pixels()).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "d").mkdir()
    args = {
        "directory": [tmp_path / "d", "-o", tmp_path / "o.png"],
        "truncated": [tmp_path / "t.png", "-o", tmp_path / "o.png"],
        "bomb": [tmp_path / "a.png", "--max-pixels", 100, "-o", tmp_path / "o.png"],
        "unwritable": [tmp_path / "a.png", "-o", tmp_path / "a.png" / "o.png"],  # a file where a folder must be
        "many_to_file": [tmp_path / "a.png", tmp_path / "a.png", "-o", tmp_path / "o.png"],
        "no_match": [f"{tmp_path}/*.tif", "-o", tmp_path / "o.png"],
        "zero_size": [zero_size_png(tmp_path / "zero.png"), "-o", tmp_path / "o.png"],
        "corrupt_weights": [tmp_path / "a.png", "-o", tmp_path / "o.png", "--model", corrupt_model(tmp_path)],
    }[case]
    if "--model" not in args:
        args += ["--model", model_dir]
    result = run("colorize", *args, "--steps", 1, "-q")
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.png").exists()


# --- fuzzing: no input crashes the readers with anything but their one-line error -------------

PNG = io.BytesIO()
Image.fromarray(pixels(5, (6, 5, 3))).save(PNG, format="PNG")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300),
                      st.tuples(st.integers(0, len(PNG.getvalue()) - 1), st.binary(min_size=1, max_size=8)).map(
                          lambda cut: PNG.getvalue()[: cut[0]] + cut[1] + PNG.getvalue()[cut[0] + len(cut[1]):])))
def test_fuzz_file_readers(tmp_path, data):
    path = tmp_path / "fuzz.png"
    path.write_bytes(data)
    for reader in (read_image, read_mask):
        try:
            result = reader(path)
        except ImageReadError as error:
            assert str(path) in str(error) and "\n" not in str(error)
        else:
            assert result is not None


@settings(max_examples=150, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=5),
       dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.bool_, np.int64]),
       scale=st.sampled_from([1.0, 255.0, -1.0, np.nan]))
def test_fuzz_array_inputs(shape, dtype, scale):
    array = np.asarray(np.random.RandomState(0).rand(*shape) * scale)
    array = np.nan_to_num(array, nan=0.0).astype(dtype) if dtype != np.float32 else (array.astype(dtype))
    for convert in (images_to_tensor, masks_to_tensor):
        try:
            tensor = convert(array)
        except (ValueError, TypeError):
            continue
        assert tensor.ndim == 4 and tensor.isfinite().all()


def test_outpaint_extends_canvas_and_keeps_the_original(tmp_path, model_dir):
    image = pixels(6, (R, R + 4, 3))
    Image.fromarray(image).save(tmp_path / "a.png")
    result = run("outpaint", "--left", 3, "--bottom", 5, tmp_path / "a.png", "--model", model_dir, "--steps", 1,
                 "-q", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "o.png"))
    assert out.shape == (R + 5, R + 7, 3)
    assert (out[:R, 3:] == image).all()
    nothing = run("outpaint", tmp_path / "a.png", "--model", model_dir, "-o", tmp_path / "n.png")
    assert nothing.exit_code != 0 and "at least one of --left" in nothing.stderr


def test_outpaint_strength_lets_the_mirrored_border_guide_the_fill(tmp_path, model_dir):
    """At a low --strength the new border stays near the canvas's mirror image of the picture; at 1 it does not
    (Algorithm 4 never looks under the mask). The original pixels are kept either way."""
    import torch

    from cmedit.fullres.canvas import outpaint_canvas

    rows, cols = np.meshgrid(np.linspace(40, 220, R), np.linspace(40, 220, R), indexing="ij")
    image = np.stack([rows, cols, 255 - rows], axis=-1).round().astype(np.uint8)  # smooth: the canvas is resized
    Image.fromarray(image).save(tmp_path / "a.png")
    mirror, mask = outpaint_canvas(torch.from_numpy(image).permute(2, 0, 1)[None].float(), left=4, bottom=6)
    mirror, border = mirror[0].permute(1, 2, 0).numpy(), mask[0, 0].numpy() > 0
    distance = {}
    for strength in (0.05, 1.0):
        out_path = tmp_path / f"s{strength}.png"
        result = run("outpaint", "--left", 4, "--bottom", 6, "--feather", 0, "--strength", strength, tmp_path / "a.png",
                     "--model", model_dir, "--steps", 1, "--seed", 0, "-q", "-o", out_path)
        assert result.exit_code == 0, result.output
        out = np.asarray(Image.open(out_path)).astype(float)
        assert (out[:R, 4:] == image).all()
        distance[strength] = np.abs(out - mirror)[border].mean()
    assert distance[0.05] < 12 and distance[1.0] > 3 * distance[0.05], distance


@pytest.mark.parametrize("feather", [0, 4])
def test_large_image_inpaint_through_cli_keeps_unmasked_pixels(tmp_path, model_dir, feather):
    image = pixels(7, (45, 70, 3))
    Image.fromarray(image).save(tmp_path / "big.png")
    keep = ~write_mask(tmp_path / "m.png", 45, 70)
    result = run("inpaint", "--mask", tmp_path / "m.png", tmp_path / "big.png", "--feather", feather,
                 "--context", 1.0, "--model", model_dir, "--steps", 1, "-q", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "o.png"))
    assert (out[keep] == image[keep]).all() and not (out[~keep] == image[~keep]).all()


@pytest.mark.parametrize("command", [["colorize"], ["inpaint", "--mask", "{tmp}/m.png"],
                                     ["super-resolve", "--factor", "2"]])
def test_same_size_files_are_batched_and_give_the_same_images_as_one_by_one(tmp_path, model_dir, command,
                                                                           monkeypatch):
    shape = (R // 2, R // 2, 3) if command[0] == "super-resolve" else (R, R, 3)
    for i in range(3):
        Image.fromarray(pixels(10 + i, shape)).save(tmp_path / f"f{i}.png")
    write_mask(tmp_path / "m.png")
    args = [a.format(tmp=tmp_path) for a in command]
    batches = []
    original = ConsistencyEditPipeline._edit_bands  # every edit's sampling, whole-image or in crops

    def counting_edit(self, images, *a, **k):
        batches.append(images.shape[0])
        return original(self, images, *a, **k)

    monkeypatch.setattr(ConsistencyEditPipeline, "_edit_bands", counting_edit)
    together = run(*args, *(tmp_path / f"f{i}.png" for i in range(3)), "--model", model_dir, "--steps", 2,
                   "--seed", 4, "--num-samples", 2, "-q", "-o", f"{tmp_path}/together/")
    assert together.exit_code == 0, together.output
    assert batches == [3]  # the three files went through the network together
    for i in range(3):
        alone = run(*args, tmp_path / f"f{i}.png", "--model", model_dir, "--steps", 2, "--seed", 4,
                    "--num-samples", 2, "-q", "-o", f"{tmp_path}/alone/")
        assert alone.exit_code == 0, alone.output
    produced = sorted(p.name for p in (tmp_path / "together").iterdir())
    assert len(produced) == 6 and produced == sorted(p.name for p in (tmp_path / "alone").iterdir())
    for name in produced:
        a = np.asarray(Image.open(tmp_path / "together" / name))
        b = np.asarray(Image.open(tmp_path / "alone" / name))
        assert (np.abs(a.astype(int) - b.astype(int)) <= 1).all(), name  # batch-size float effects at most


def test_a_bad_file_in_a_batch_is_named_and_the_others_are_done(tmp_path, model_dir):
    for i in range(3):
        rgba = np.dstack([pixels(20 + i), np.full((R, R), 255, np.uint8)])
        if i != 1:
            rgba[3:8, 3:8, 3] = 0  # a hole to fill; f1 has none: its mask is empty
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"f{i}.png")
    result = run("inpaint", *(tmp_path / f"f{i}.png" for i in range(3)), "--model", model_dir, "--steps", 1,
                 "-o", f"{tmp_path}/out/")
    assert result.exit_code == 1
    assert "f1.png: the mask is empty" in result.stderr and "2 done, 0 skipped, 1 failed" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f0_inpainted.png", "f2_inpainted.png"]


def test_outputs_get_the_permissions_of_a_plain_new_file(tmp_path):
    """Written atomically through a 0600 temporary file, an output still ends up 0666 less the umask."""
    from cmedit.io.files import write_image

    old = os.umask(0o022)
    try:
        write_image(tmp_path / "out.png", np.zeros((4, 4, 3)))
    finally:
        os.umask(old)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o644
