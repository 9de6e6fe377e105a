"""The library API: known-pixel guarantees, inputs, outputs, saving and loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import ConsistencyModelPipeline, DiffusionPipeline
from PIL import Image

from cmedit import Colorization, ConsistencyEditPipeline, SuperResolution, load_pipeline
from cmedit.models.loading import ModelLoadError
from conftest import RESOLUTION, tiny_scheduler, tiny_unet

LUMA = np.array([0.2989, 0.5870, 0.1140])


def rgb(h=RESOLUTION, w=RESOLUTION, seed=0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def box_mask(h=RESOLUTION, w=RESOLUTION) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[h // 4: h // 2 + 2, w // 5: w // 2 + 3] = 255
    return mask


def seed(n=0):
    return torch.Generator().manual_seed(n)


@pytest.mark.parametrize("size", [(RESOLUTION, RESOLUTION), (37, 23)])
def test_inpaint_keeps_every_pixel_outside_the_mask_byte_identical(pipe, size):
    image, mask = rgb(*size), box_mask(*size)
    out = np.asarray(pipe.inpaint(Image.fromarray(image), Image.fromarray(mask), num_inference_steps=3,
                                  generator=seed()).images[0])
    keep = mask < 128
    assert out.shape == image.shape
    assert (out[keep] == image[keep]).all()
    assert np.abs(out[~keep].astype(int) - image[~keep]).mean() > 10  # the masked area was regenerated


def test_inpaint_batch_with_candidates_and_per_image_masks(pipe):
    images = [rgb(seed=1), rgb(seed=2)]
    masks = [box_mask(), 255 - box_mask()]
    out = pipe.inpaint(images, masks, num_images_per_prompt=3, num_inference_steps=2, generator=seed()).images
    assert len(out) == 6
    for i, result in enumerate(out):
        keep = masks[i // 3] < 128
        assert (np.asarray(result)[keep] == images[i // 3][keep]).all()
    assert not np.array_equal(np.asarray(out[0]), np.asarray(out[1]))  # candidates differ


def test_inpaint_mask_alpha_counts_as_keep(pipe):
    image = rgb()
    mask = np.zeros((RESOLUTION, RESOLUTION, 4), dtype=np.uint8)
    mask[..., :3] = 255  # white everywhere ...
    mask[:8, :, 3] = 255  # ... but opaque only in the top half
    out = np.asarray(pipe.inpaint(image, Image.fromarray(mask, "RGBA"), num_inference_steps=1,
                                  generator=seed()).images[0])
    assert (out[8:] == image[8:]).all() and not (out[:8] == image[:8]).all()


@pytest.mark.parametrize("gray_input", [True, False])
def test_colorize_keeps_luminance(pipe, gray_input):
    image = rgb(seed=3)
    source = Image.fromarray(image).convert("L") if gray_input else Image.fromarray(image)
    # a grey input g has luminance g * sum(LUMA) = 0.9999 g
    grey = np.asarray(source, dtype=np.float64) * LUMA.sum() if gray_input else (image * LUMA).sum(-1)
    out = pipe.colorize(source, num_inference_steps=2, generator=seed(), output_type="np").images[0]
    assert np.abs((out * 255 * LUMA).sum(-1) - grey).max() < 0.01
    out8 = np.asarray(pipe.colorize(source, num_inference_steps=2, generator=seed()).images[0])
    assert np.abs((out8 * LUMA).sum(-1) - grey).max() <= 0.5 + 1e-6  # within 8-bit rounding
    assert out8.std(axis=-1).mean() > 1  # it has colour


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_super_resolve_block_means_give_back_the_input(pipe, factor):
    low = rgb(RESOLUTION // factor, RESOLUTION // factor, seed=4)
    out = pipe.super_resolve(low, factor=factor, kernel="box", num_inference_steps=2, generator=seed(), output_type="np")
    high = out.images[0]
    assert high.shape == (RESOLUTION, RESOLUTION, 3)
    n = RESOLUTION // factor
    means = high.reshape(n, factor, n, factor, 3).mean(axis=(1, 3)) * 255
    assert np.abs(means - low).max() < 0.01
    assert high.reshape(n, factor, n, factor, 3).std(axis=(1, 3)).mean() > 0.01  # not just nearest upsampling


def test_super_resolve_other_size_and_with_colorization(pipe):
    low = rgb(5, 7, seed=5)
    high = pipe.super_resolve(low, factor=4, kernel="box", num_inference_steps=2, generator=seed(),
                              output_type="np").images[0]
    assert high.shape == (20, 28, 3)
    assert np.abs(high.reshape(5, 4, 7, 4, 3).mean(axis=(1, 3)) * 255 - low).max() < 0.01
    both = pipe.super_resolve(low, factor=4, colorize=True, num_inference_steps=2, generator=seed(),
                              output_type="np").images[0]
    lum = (both * LUMA).sum(-1).reshape(5, 4, 7, 4).mean(axis=(1, 3)) * 255
    assert np.abs(lum - (low * LUMA).sum(-1)).max() < 0.01


def test_edit_accepts_a_users_own_operator(pipe):
    class Swap(SuperResolution):
        """A user's operator: 2x2 patch means known, as SuperResolution(2) (subclassing the public class)."""

    image = torch.rand(1, 3, RESOLUTION, RESOLUTION)
    out = pipe.edit(image, Swap(2), num_inference_steps=1, generator=seed(), output_type="pt").images
    pool = torch.nn.functional.avg_pool2d
    assert torch.allclose(pool(out, 2), pool(image, 2), atol=1e-5)


@pytest.mark.parametrize("output_type,kind", [("pil", Image.Image), ("np", np.ndarray), ("pt", torch.Tensor)])
def test_output_types(pipe, output_type, kind):
    images = pipe.colorize(rgb(), num_inference_steps=1, generator=seed(), output_type=output_type).images
    assert isinstance(images if output_type != "pil" else images[0], kind)


def test_edit_same_seed_same_output(pipe):
    run = lambda n: pipe.colorize(rgb(), num_inference_steps=2, generator=seed(n), output_type="np").images  # noqa
    assert (run(1) == run(1)).all() and not (run(1) == run(2)).all()


def test_class_conditional_edit_and_labels(class_pipe):
    out = class_pipe.inpaint(rgb(), box_mask(), class_labels=3, num_inference_steps=2, generator=seed(),
                             output_type="np").images
    assert out.shape == (1, RESOLUTION, RESOLUTION, 3)
    # without labels: drawn reproducibly from the generator's seed, without shifting the noise draws
    a = class_pipe.generate(batch_size=4, generator=seed(7), output_type="np").images
    b = class_pipe.generate(batch_size=4, generator=seed(7), output_type="np").images
    assert (a == b).all()
    with pytest.raises(ValueError, match="class labels must lie"):
        class_pipe.generate(class_labels=10)


def test_bad_library_inputs(pipe):
    with pytest.raises(ValueError, match="mask size"):
        pipe.inpaint(rgb(), box_mask(8, 8))
    with pytest.raises(ValueError, match="does not divide the model resolution"):
        pipe.super_resolve(rgb(4, 4), factor=3)
    with pytest.raises(ValueError, match="descending"):
        pipe.colorize(rgb(), timesteps=[0, 22])
    with pytest.raises(ValueError, match=r"\[0, 39\]"):
        pipe.colorize(rgb(), timesteps=[40, 0])
    with pytest.raises(ValueError, match="between 1 and 40"):
        pipe.generate(num_inference_steps=41)
    with pytest.raises(ValueError, match="not class-conditional"):
        pipe.generate(class_labels=1)
    with pytest.raises(ValueError, match="output_type"):
        pipe.generate(output_type="jpeg")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.colorize(torch.full((3, 8, 8), 2.0))


def test_save_and_load_round_trip_with_diffusers(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    index = json.loads((tmp_path / "model" / "model_index.json").read_text())
    assert index["_class_name"] == "ConsistencyModelPipeline"
    for loaded in (ConsistencyEditPipeline.from_pretrained(tmp_path / "model"),
                   load_pipeline(tmp_path / "model")):
        assert isinstance(loaded, ConsistencyEditPipeline)
        for a, b in zip(loaded.unet.parameters(), pipe.unet.parameters()):
            assert torch.equal(a, b)
    assert isinstance(DiffusionPipeline.from_pretrained(tmp_path / "model"), ConsistencyModelPipeline)


def test_loads_a_diffusers_consistency_model_pipeline_folder(tmp_path):
    ConsistencyModelPipeline(unet=tiny_unet(), scheduler=tiny_scheduler()).save_pretrained(tmp_path / "cm")
    (tmp_path / "cm" / "model_index.json").unlink()  # unet/ + scheduler/ alone are enough for load_pipeline
    loaded = load_pipeline(tmp_path / "cm", dtype=torch.bfloat16)
    assert loaded.unet.dtype == torch.bfloat16
    out = loaded.colorize(rgb(), num_inference_steps=1, generator=seed(), output_type="np").images
    assert np.isfinite(out).all()


def test_load_refuses_what_is_not_a_consistency_model(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_pipeline(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a consistency model folder"):
        load_pipeline(tmp_path / "empty")
    ConsistencyModelPipeline(unet=tiny_unet(), scheduler=tiny_scheduler()).save_pretrained(tmp_path / "ddpm")
    config = tmp_path / "ddpm" / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "DDPMScheduler"}))
    with pytest.raises(ModelLoadError, match="DDPMScheduler"):
        load_pipeline(tmp_path / "ddpm")
    ConsistencyModelPipeline(unet=tiny_unet(), scheduler=tiny_scheduler()).save_pretrained(tmp_path / "bad")
    (tmp_path / "bad" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_pipeline(tmp_path / "bad")


def test_pipeline_moves_with_to(pipe):
    pipe.to(torch.device("cpu"), torch.bfloat16)
    out = pipe.super_resolve(rgb(4, 4), factor=4, num_inference_steps=1, generator=seed(), output_type="np")
    assert out.images.dtype == np.float32 and np.isfinite(out.images).all()
    assert isinstance(Colorization(), Colorization)


def test_whole_image_full_size_steps_in_bands_give_the_same_bits(pipe, monkeypatch, tmp_path):
    """Colorize / img2img on an odd-sized image: bands of 8 lines give the bits of one band (cmedit.fullres.bands)."""
    import cmedit.fullres.bands as bands
    from cmedit.io import files

    rng = np.random.default_rng(3)
    image = rng.random((37, 53, 3)).astype(np.float32)

    def edits() -> list[np.ndarray]:
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        colorized = pipe.colorize(image, num_inference_steps=2, num_images_per_prompt=2, generator=g(),
                                  output_type="np").images
        noisy = pipe.colorize(image, noise_level=0.05, strength=0.6, num_inference_steps=2, generator=g(),
                              output_type="pil").images[0]
        painted = pipe.img2img((image * 255).astype(np.uint8), num_inference_steps=2, generator=g(),
                               output_type="pt").images
        files.write_image(tmp_path / "c.png", colorized[0], image[..., 0], overwrite=True)
        return [colorized, np.asarray(noisy), painted.numpy(), np.asarray(Image.open(tmp_path / "c.png"))]

    whole = edits()
    monkeypatch.setattr(bands, "BAND_PIXELS", 1)  # every band as thin as allowed: 8 rows or columns
    monkeypatch.setattr(files, "ENCODE_BAND_PIXELS", 1)
    banded = edits()
    for a, b in zip(whole, banded):
        assert a.shape == b.shape and np.array_equal(a, b)
    assert bands.band_starts(53, 37) == [0, 8, 16, 24, 32, 40, 53]  # the thin last band joins the one before


def test_full_resolution_buffers_refused_by_the_library_before_any_model_call(pipe, monkeypatch):
    from cmedit.fullres.budget import DEFAULT_MAX_PIXELS, MemoryBudgetError
    from cmedit.fullres.canvas import outpaint_canvas
    from cmedit.fullres.crops import inpaint_regions
    from cmedit.core.arguments import EditOptions

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(pipe.unet, "forward", no_model)
    assert pipe.max_pixels == DEFAULT_MAX_PIXELS
    # 20000 x 32, right half masked: the crop window would be 20000 x 20000 (4.8 GB of float32).
    image, mask = torch.zeros(1, 3, 32, 20000), torch.zeros(1, 1, 32, 20000)
    mask[..., 10000:] = 1
    with pytest.raises(MemoryBudgetError, match="crop window around the masked region of 20000x20000 pixels "
                                                "exceeds the limit of 64,000,000"):
        inpaint_regions(pipe, image, mask, EditOptions(num_inference_steps=1))
    with pytest.raises(MemoryBudgetError, match=f"the outpainted canvas of {10**9 + 16}x16 pixels"):
        outpaint_canvas(torch.zeros(1, 3, 16, 16), right=10**9)
    with pytest.raises(MemoryBudgetError, match="the x16 result of 8000x8000 pixels x 4 candidates"):
        pipe.super_resolve(np.zeros((500, 500, 3), np.float32), factor=16, num_images_per_prompt=4)
    pipe.max_pixels = 1000
    gray = np.zeros((40, 30), np.float32)
    for call in (lambda: pipe.colorize(gray), lambda: pipe.img2img(gray),
                 lambda: pipe.inpaint(gray, np.ones((40, 30)), full_resolution=False),
                 lambda: pipe.inpaint(gray, np.ones((40, 30)))):
        with pytest.raises(MemoryBudgetError, match=r"(the result of 30x40|the crop window around the masked region "
                                                    r"of 40x40) pixels exceeds the limit of 1,000") as error:
            call()
        assert "\n" not in str(error.value)
