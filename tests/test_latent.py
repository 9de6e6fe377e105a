"""Latent consistency models: loading by contents, equality with diffusers, edits through the latent wrapper, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from cmedit import load_pipeline  # noqa: E402
from cmedit.latent.pipeline import LatentEditPipeline  # noqa: E402
from cmedit.latent.projection import LatentProjectionScheduler, latent_mask  # noqa: E402
from cmedit.models.loading import ModelLoadError  # noqa: E402

from latent_components import (save_lcm_folder, save_peft_lora, save_sdxl_folder, tiny_components,  # noqa: E402
                               write_image_and_mask)

PROMPT = "a red car"


@pytest.fixture(scope="module")
def lcm_dir(tmp_path_factory):
    # A name that says nothing about the kind: the kind is read from the folder's contents.
    return save_lcm_folder(tmp_path_factory.mktemp("latent"), name="some_model")


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    """A plain SD-like folder (no guidance embedding, PNDM scheduler as SD 1.5 ships): a base for an LCM-LoRA."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    tmp = tmp_path_factory.mktemp("sd")
    components = tiny_components(tmp, lcm=False, seed=1)
    components["scheduler"] = PNDMScheduler.from_config(components["scheduler"].config, steps_offset=1)
    StableDiffusionPipeline(**components, requires_safety_checker=False).save_pretrained(tmp / "base")
    return tmp / "base"


@pytest.fixture(scope="module")
def lcm(lcm_dir):
    pipe = load_pipeline(lcm_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(h=64, w=64, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------- loading


def test_kind_read_from_contents_not_name(lcm, lcm_dir, model_dir, tmp_path):
    assert isinstance(lcm, LatentEditPipeline) and lcm.resolution == 64
    # A pixel model in a folder named like an LCM is still a pixel model.
    import shutil

    disguised = tmp_path / "lcm-dreamshaper"
    shutil.copytree(model_dir, disguised)
    assert not isinstance(load_pipeline(disguised), LatentEditPipeline)
    with pytest.raises(ModelLoadError, match="--lora adds an LCM-LoRA"):
        load_pipeline(disguised, lora="latent-consistency/lcm-lora-sdv1-5")


def test_sd_base_needs_lora_sdxl_loads(sd_dir, tmp_path):
    from cmedit.latent.sdxl import LatentXLEditPipeline

    with pytest.raises(ModelLoadError, match="add an LCM-LoRA with --lora.*lcm-lora-sdv1-5"):
        load_pipeline(sd_dir)
    # SDXL (two text encoders, size conditioning): its own pipeline class, the same methods (tests/test_latent_sdxl.py).
    xl = load_pipeline(save_sdxl_folder(tmp_path, name="model"))
    assert isinstance(xl, LatentXLEditPipeline) and not isinstance(xl, LatentEditPipeline)


def test_single_file_detected_by_keys(lcm_dir, tmp_path):
    from safetensors.torch import save_file

    from cmedit.latent.loading import is_sd_single_file

    sd = tmp_path / "model.safetensors"
    save_file({"first_stage_model.x": torch.zeros(1), "model.diffusion_model.y": torch.zeros(1)}, str(sd))
    other = tmp_path / "other.safetensors"
    save_file({"unet.x": torch.zeros(1)}, str(other))
    assert is_sd_single_file(sd) and not is_sd_single_file(other)
    # The real diffusers single-file loader runs; these two tensors are no model: one clear error.
    with pytest.raises(ModelLoadError, match="cannot load latent model"):
        load_pipeline(sd, config=str(tmp_path))
    with pytest.raises(ModelLoadError, match="cannot load latent model.*CLIPTextModel"):
        load_pipeline(sd, config=str(lcm_dir))  # configs found locally; the weights are missing


# ----------------------------------------------------------------- equality with diffusers


def test_generate_equals_lcm_pipeline(lcm, lcm_dir):
    from diffusers import LatentConsistencyModelPipeline

    ref = LatentConsistencyModelPipeline.from_pretrained(lcm_dir)
    ref.set_progress_bar_config(disable=True)
    expected = ref(PROMPT, num_inference_steps=4, guidance_scale=8.0, num_images_per_prompt=2,
                   generator=_gen(0), output_type="np").images
    ours = lcm.generate(2, prompt=PROMPT, generator=_gen(0), output_type="np").images  # defaults: 4 steps, w=8
    np.testing.assert_array_equal(ours, expected)
    other = lcm.generate(2, prompt="a blue boat", generator=_gen(0), output_type="np").images
    assert np.abs(other - ours).max() > 1e-3  # the prompt matters


def test_img2img_equals_lcm_img2img_pipeline(lcm):
    from diffusers import LatentConsistencyModelImg2ImgPipeline

    ref = LatentConsistencyModelImg2ImgPipeline(**lcm.components)
    ref.set_progress_bar_config(disable=True)
    image = _image()
    expected = ref(PROMPT, image=torch.from_numpy(image).permute(2, 0, 1)[None], strength=0.6, guidance_scale=3.0,
                   num_inference_steps=4, generator=_gen(1), output_type="np").images
    ours = lcm.img2img(image, strength=0.6, prompt=PROMPT, guidance_scale=3.0, generator=_gen(1),
                       output_type="np").images
    np.testing.assert_array_equal(ours, expected)


def test_lora_on_sd_base_equals_sd_pipeline_with_lcm_scheduler(sd_dir, tmp_path):
    """An LCM-LoRA made with peft, loaded by diffusers' load_lora_weights; CFG 1.5 with a negative prompt."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    lora_file = save_peft_lora(sd_dir, StableDiffusionPipeline, tmp_path / "lora")

    pipe = load_pipeline(sd_dir, lora=str(lora_file))
    pipe.set_progress_bar_config(disable=True)
    ref = StableDiffusionPipeline.from_pretrained(sd_dir)
    ref.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    ref.scheduler = LCMScheduler.from_config(ref.scheduler.config)
    ref.set_progress_bar_config(disable=True)
    kwargs = dict(negative_prompt="blurry", guidance_scale=1.5, output_type="np")
    expected = ref(PROMPT, num_inference_steps=4, generator=_gen(2), **kwargs).images
    ours = pipe.generate(prompt=PROMPT, generator=_gen(2), **kwargs).images
    np.testing.assert_array_equal(ours, expected)
    base = StableDiffusionPipeline.from_pretrained(sd_dir)
    base.scheduler = LCMScheduler.from_config(base.scheduler.config)
    base.set_progress_bar_config(disable=True)
    without = base(PROMPT, num_inference_steps=4, generator=_gen(2), **kwargs).images
    assert np.abs(without - ours).max() > 1e-4  # the LoRA was applied

    from click.testing import CliRunner
    from PIL import Image

    from cmedit.cli import main

    result = CliRunner().invoke(main, ["generate", "-m", str(sd_dir), "--lora", str(lora_file), "-p", PROMPT,
                                       "--negative-prompt", "blurry", "--guidance-scale", "1.5", "--seed", "2",
                                       "-q", "-o", str(tmp_path / "cli.png")])
    assert result.exit_code == 0, result.output
    expected_png = pipe.generate(prompt=PROMPT, generator=_gen(2), negative_prompt="blurry",
                                 guidance_scale=1.5).images[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cli.png")), np.asarray(expected_png))


# ----------------------------------------------------------------- the wrapper and edits


def test_latent_mask_covers_every_latent_touching_a_masked_pixel():
    mask = torch.zeros(1, 1, 64, 64)
    mask[0, 0, 17, 40] = 1  # one pixel, in latent (2, 5)
    small = latent_mask(mask, 8, grow=1)[0, 0]
    assert small.shape == (8, 8)
    expected = torch.zeros(8, 8)
    expected[1:4, 4:7] = 1
    torch.testing.assert_close(small, expected)
    assert latent_mask(mask, 8, grow=0)[0, 0].sum() == 1


def test_wrapper_without_projection_is_the_lcm_scheduler_and_projection_holds_known_latents(lcm):
    from cmedit.core.operators import Inpainting

    sched = lcm.scheduler
    latents = torch.randn(1, 4, 8, 8, generator=_gen(0))
    outputs = [torch.randn(1, 4, 8, 8, generator=_gen(i + 1)) for i in range(4)]

    def run(wrapper):
        wrapper.set_timesteps(4)
        x, g = latents, _gen(9)
        for t, out in zip(wrapper.timesteps, outputs):
            x, denoised = wrapper.step(out, t, x, generator=g, return_dict=False)
        return x

    plain = run(LatentProjectionScheduler(sched))
    sched.set_timesteps(4)
    x, g = latents, _gen(9)
    for t, out in zip(sched.timesteps, outputs):
        x = sched.step(out, t, x, generator=g, return_dict=False)[0]
    assert torch.equal(plain, x)
    known = torch.randn(1, 4, 8, 8, generator=_gen(5))
    keep = torch.zeros(1, 1, 8, 8)
    keep[..., :4] = 1  # left half generated
    op = Inpainting(keep)
    projected = run(LatentProjectionScheduler(sched, op, op.known_part(known)))
    assert torch.equal(projected[..., 4:], known[..., 4:])
    assert not torch.equal(projected[..., :4], known[..., :4])  # the generated half is generated


def test_inpaint_outside_mask_byte_identical_inside_changed(lcm):
    image = (_image(62, 50) * 255).round().astype(np.uint8)  # not multiples of 8: resized to 64x48 and back
    mask = np.zeros((62, 50), dtype=bool)
    mask[20:40, 10:30] = True
    out = lcm.inpaint(image, mask, prompt=PROMPT, num_images_per_prompt=2, generator=_gen(0)).images
    for candidate in out:
        result = np.asarray(candidate)
        assert result.shape == image.shape
        np.testing.assert_array_equal(result[~mask], image[~mask])
        assert np.abs(result[mask].astype(int) - image[mask]).mean() > 5


def test_inpaint_full_resolution_crop_pasted_back(lcm):
    image = (_image(100, 150, seed=3) * 255).round().astype(np.uint8)
    mask = np.zeros((100, 150), dtype=bool)
    mask[60:80, 100:120] = True
    result = np.asarray(lcm.inpaint(image, mask, prompt=PROMPT, generator=_gen(0)).images[0])
    assert result.shape == image.shape
    np.testing.assert_array_equal(result[~mask], image[~mask])
    assert np.abs(result[mask].astype(int) - image[mask]).mean() > 5


def test_colorize_and_super_resolve_keep_the_known_components(lcm):
    from cmedit.core.operators import LUMINANCE

    grey = _image(64, 64, seed=4)
    out = lcm.colorize(grey, prompt=PROMPT, generator=_gen(0), output_type="np").images[0]
    lum = lambda x: (x * torch.tensor(LUMINANCE)).sum(-1)  # noqa: E731
    np.testing.assert_allclose(lum(torch.from_numpy(out)), lum(torch.from_numpy(grey)), atol=2e-3)
    assert out.std(axis=-1).mean() > 1e-3  # it has colour
    low = _image(32, 32, seed=5)
    high = lcm.super_resolve(low, factor=2, prompt=PROMPT, generator=_gen(0), output_type="np").images[0]
    assert high.shape == (64, 64, 3)
    np.testing.assert_allclose(high.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)), low, atol=2e-3)


# ----------------------------------------------------------------- command line


def test_cli_on_a_latent_folder(lcm_dir, model_dir, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from cmedit.cli import main

    image = (_image(64, 64, seed=6) * 255).astype(np.uint8)
    _, mask_path = write_image_and_mask(tmp_path, image)
    mask = np.asarray(Image.open(mask_path))
    runner = CliRunner()
    common = ["-m", str(lcm_dir), "--seed", "0", "-q"]
    result = runner.invoke(main, ["inpaint", "--mask", str(tmp_path / "mask.png"), str(tmp_path / "in.png"),
                                  "-o", str(tmp_path / "out.png"), "--prompt", PROMPT, *common])
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "out.png"))
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])
    result = runner.invoke(main, ["generate", "-o", str(tmp_path / "gen.png"), "-p", PROMPT, *common])
    assert result.exit_code == 0, result.output
    expected = load_pipeline(lcm_dir).generate(prompt=PROMPT, generator=_gen(0)).images[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "gen.png")), np.asarray(expected))

    refused = runner.invoke(main, ["colorize", str(tmp_path / "in.png"), "-o", str(tmp_path / "c.png"),
                                   "-m", str(model_dir), "--prompt", "x", "-q"])
    assert refused.exit_code != 0 and "only for latent models" in refused.output
    assert not (tmp_path / "c.png").exists()
    refused = runner.invoke(main, ["inpaint", "--mask", str(tmp_path / "mask.png"), str(tmp_path / "in.png"),
                                   "-o", str(tmp_path / "n.png"), "--negative-prompt", "x", *common])
    assert refused.exit_code != 0 and "Error: " in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "n.png").exists()


def test_tiled_super_resolution_and_outpaint(lcm):
    low = _image(40, 48, seed=7)  # x2 is 80x96, larger than the native 64: tiles
    high = lcm.super_resolve(low, factor=2, prompt=PROMPT, generator=_gen(0), output_type="np").images[0]
    assert high.shape == (80, 96, 3)
    np.testing.assert_allclose(high.reshape(40, 2, 48, 2, 3).mean(axis=(1, 3)), low, atol=2e-3)
    image = (_image(48, 48, seed=8) * 255).round().astype(np.uint8)
    wide = np.asarray(lcm.outpaint(image, right=16, prompt=PROMPT, generator=_gen(0)).images[0])
    assert wide.shape == (48, 64, 3)
    np.testing.assert_array_equal(wide[:, :48], image)
