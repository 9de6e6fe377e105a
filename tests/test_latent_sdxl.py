"""SDXL latent consistency models: loading by contents, equality with diffusers' SDXL pipelines, edits, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from cmedit import load_pipeline  # noqa: E402
from cmedit.latent.sdxl import LatentXLEditPipeline  # noqa: E402
from cmedit.models.loading import ModelLoadError  # noqa: E402

from latent_components import save_peft_lora, save_sdxl_folder, write_image_and_mask  # noqa: E402

PROMPT = "a red car"
STEPS = 2


@pytest.fixture(scope="module")
def xl_dir(tmp_path_factory):
    """An LCM-SDXL-like folder (distilled UNet with a guidance embedding); the name says nothing of the kind."""
    return save_sdxl_folder(tmp_path_factory.mktemp("xl"), name="some_model")


@pytest.fixture(scope="module")
def xl_base_dir(tmp_path_factory):
    """An SDXL-base-like folder (no guidance embedding, EulerDiscreteScheduler as SDXL base ships)."""
    from diffusers import EulerDiscreteScheduler

    return save_sdxl_folder(tmp_path_factory.mktemp("xlbase"), name="base", lcm=False, seed=1,
                            scheduler=EulerDiscreteScheduler)


@pytest.fixture(scope="module")
def xl(xl_dir):
    pipe = load_pipeline(xl_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def lora_file(xl_base_dir, tmp_path_factory):
    """An LCM-LoRA-shaped adapter on the base UNet made with peft, saved as diffusers saves SDXL LoRAs."""
    from diffusers import StableDiffusionXLPipeline

    return save_peft_lora(xl_base_dir, StableDiffusionXLPipeline, tmp_path_factory.mktemp("lora"))


def _image(h=64, w=64, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _reference(cls, folder, lora=None):
    """diffusers' own SDXL pipeline on the folder, as the LCM-SDXL and LCM-LoRA-SDXL cards set it up."""
    from diffusers import LCMScheduler

    ref = cls.from_pretrained(folder)
    if lora is not None:
        ref.load_lora_weights(str(lora.parent), weight_name=lora.name)
    ref.scheduler = LCMScheduler.from_config(ref.scheduler.config)
    ref.set_progress_bar_config(disable=True)
    return ref


# ----------------------------------------------------------------- loading


def test_sdxl_loads_by_contents(xl, xl_dir, xl_base_dir, tmp_path):
    assert isinstance(xl, LatentXLEditPipeline) and xl.resolution == 64 and xl.embedded_guidance
    assert xl.watermark is None
    with pytest.raises(ModelLoadError, match="SDXL model without consistency distillation.*lcm-lora-sdxl"):
        load_pipeline(xl_base_dir)
    # The UNet's SDXL conditioning alone marks the kind (an index that names no second text encoder).
    import shutil

    unnamed = tmp_path / "unnamed"
    shutil.copytree(xl_dir, unnamed)
    index = json.loads((unnamed / "model_index.json").read_text())
    del index["tokenizer_2"], index["text_encoder_2"]
    (unnamed / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="SDXL model without text_encoder_2"):
        load_pipeline(unnamed)
    index = json.loads((xl_dir / "model_index.json").read_text())
    (unnamed / "model_index.json").write_text(json.dumps({**index, "requires_aesthetics_score": True}))
    with pytest.raises(ModelLoadError, match="refiner"):
        load_pipeline(unnamed)


def test_sdxl_single_file_detected_and_loaded_through_diffusers(xl_dir, tmp_path):
    from safetensors.torch import save_file

    from cmedit.latent.loading import is_sd_single_file, is_sdxl_single_file

    path = tmp_path / "xl.safetensors"
    save_file({"first_stage_model.x": torch.zeros(1), "model.diffusion_model.y": torch.zeros(1),
               "conditioner.embedders.1.model.z": torch.zeros(1)}, str(path))
    sd = tmp_path / "sd.safetensors"
    save_file({"first_stage_model.x": torch.zeros(1), "model.diffusion_model.y": torch.zeros(1)}, str(sd))
    assert is_sd_single_file(path) and is_sdxl_single_file(path) and not is_sdxl_single_file(sd)
    # diffusers' StableDiffusionXLPipeline.from_single_file runs with the local configs; three tensors are
    # no model: one clear line naming an SDXL component.
    with pytest.raises(ModelLoadError, match="cannot load latent model.*CLIPTextModel"):
        load_pipeline(path, config=str(xl_dir))


# ----------------------------------------------------------------- equality with diffusers


def test_generate_equals_sdxl_pipeline_with_lcm_scheduler(xl, xl_dir):
    from diffusers import StableDiffusionXLPipeline

    ref = _reference(StableDiffusionXLPipeline, xl_dir)
    expected = ref(PROMPT, num_inference_steps=STEPS, guidance_scale=8.0, num_images_per_prompt=2,
                   generator=_gen(0), output_type="np").images
    ours = xl.generate(2, prompt=PROMPT, num_inference_steps=STEPS, generator=_gen(0), output_type="np").images
    np.testing.assert_array_equal(ours, expected)  # default guidance 8, embedded (the LCM-SDXL card's)
    other = xl.generate(2, prompt="a blue boat", num_inference_steps=STEPS, generator=_gen(0),
                        output_type="np").images
    assert np.abs(other - ours).max() > 1e-3  # the prompt matters

    # prompt_embeds take pooled_prompt_embeds with them, as encode_prompt returns both.
    embeds, _, pooled, _ = xl.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    again = xl.generate(2, prompt_embeds=embeds, pooled_prompt_embeds=pooled, num_inference_steps=STEPS,
                        generator=_gen(0), output_type="np").images
    np.testing.assert_array_equal(again, ours)
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        xl.generate(prompt_embeds=embeds)


def test_lora_on_sdxl_base_equals_sdxl_pipeline_with_lcm_scheduler(xl_base_dir, lora_file):
    """LCM-LoRA-SDXL's use: SDXL base + load_lora_weights + LCMScheduler; CFG 1.5 with and without a negative
    prompt, and guidance 1 (no CFG)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = load_pipeline(xl_base_dir, lora=str(lora_file))
    pipe.set_progress_bar_config(disable=True)
    assert not pipe.embedded_guidance
    ref = _reference(StableDiffusionXLPipeline, xl_base_dir, lora_file)
    for negative in ("blurry", None):  # None: zero negative embeddings (force_zeros_for_empty_prompt)
        kwargs = dict(negative_prompt=negative, guidance_scale=1.5, num_inference_steps=STEPS, output_type="np")
        expected = ref(PROMPT, generator=_gen(2), **kwargs).images
        ours = pipe.generate(prompt=PROMPT, generator=_gen(2), **kwargs).images
        np.testing.assert_array_equal(ours, expected)
    without = _reference(StableDiffusionXLPipeline, xl_base_dir)(PROMPT, generator=_gen(2), **kwargs).images
    assert np.abs(without - ours).max() > 1e-4  # the LoRA was applied
    # Default guidance 1 (the LCM-LoRA card's "1 disables CFG"): one UNet pass, as diffusers' guidance_scale=1.
    expected = ref(PROMPT, guidance_scale=1.0, num_inference_steps=STEPS, generator=_gen(4), output_type="np").images
    ours = pipe.generate(prompt=PROMPT, num_inference_steps=STEPS, generator=_gen(4), output_type="np").images
    np.testing.assert_array_equal(ours, expected)


def test_img2img_equals_sdxl_img2img_on_the_same_schedule(xl):
    """The same job: the input encoded (a posterior sample), noised to timestep 499, then LCM steps 499, 259."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    ref = StableDiffusionXLImg2ImgPipeline(**xl.components)
    ref.set_progress_bar_config(disable=True)
    image = _image()
    kwargs = dict(strength=1.0, timesteps=[499, 259], guidance_scale=3.0, output_type="np")
    expected = ref(PROMPT, image=torch.from_numpy(image).permute(2, 0, 1)[None], generator=_gen(1), **kwargs).images
    ours = xl.img2img(image, prompt=PROMPT, generator=_gen(1), **kwargs).images
    np.testing.assert_array_equal(ours, expected)


# ----------------------------------------------------------------- edits


def test_sdxl_edits_keep_the_known_part(xl):
    image = (_image(62, 50) * 255).round().astype(np.uint8)  # resized to 64x48 (size conditioning 64x48) and back
    mask = np.zeros((62, 50), dtype=bool)
    mask[20:40, 10:30] = True
    out = xl.inpaint(image, mask, prompt=PROMPT, num_inference_steps=STEPS, num_images_per_prompt=2,
                     generator=_gen(0)).images
    for candidate in out:
        result = np.asarray(candidate)
        assert result.shape == image.shape
        np.testing.assert_array_equal(result[~mask], image[~mask])
        assert np.abs(result[mask].astype(int) - image[mask]).mean() > 5
    low = _image(40, 48, seed=5)  # x2 is 80x96, larger than the native 64: tiles, each with its own size ids
    high = xl.super_resolve(low, factor=2, prompt=PROMPT, num_inference_steps=STEPS, generator=_gen(0),
                            output_type="np").images[0]
    np.testing.assert_allclose(high.reshape(40, 2, 48, 2, 3).mean(axis=(1, 3)), low, atol=2e-3)
    wide = np.asarray(xl.outpaint(image[:48, :48], right=16, prompt=PROMPT, num_inference_steps=STEPS,
                                  generator=_gen(0)).images[0])
    assert wide.shape == (48, 64, 3)
    np.testing.assert_array_equal(wide[:, :48], image[:48, :48])


def test_float16_equals_diffusers_with_the_vae_upcast(xl_dir):
    """float16 (on the CPU here): SDXL's VAE (``force_upcast``) encodes and decodes in float32 as in diffusers'
    SDXL pipelines, and is float16 again after the call."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    pipe = load_pipeline(xl_dir, dtype=torch.float16)
    pipe.set_progress_bar_config(disable=True)
    ref = StableDiffusionXLPipeline.from_pretrained(xl_dir, torch_dtype=torch.float16)
    ref.set_progress_bar_config(disable=True)
    expected = ref(PROMPT, num_inference_steps=STEPS, guidance_scale=8.0, generator=_gen(0), output_type="np").images
    ours = pipe.generate(prompt=PROMPT, num_inference_steps=STEPS, generator=_gen(0), output_type="np").images
    np.testing.assert_array_equal(ours, expected)
    assert pipe.vae.dtype == torch.float16
    image = _image()
    ref = StableDiffusionXLImg2ImgPipeline(**pipe.components)
    ref.set_progress_bar_config(disable=True)
    kwargs = dict(strength=1.0, timesteps=[499, 259], guidance_scale=3.0, output_type="np")
    expected = ref(PROMPT, image=torch.from_numpy(image).permute(2, 0, 1)[None], generator=_gen(1), **kwargs).images
    ours = pipe.img2img(image, prompt=PROMPT, generator=_gen(1), **kwargs).images
    np.testing.assert_array_equal(ours, expected)
    assert pipe.vae.dtype == torch.float16


# ----------------------------------------------------------------- command line


def test_cli_on_an_sdxl_folder_and_base_with_lora(xl_dir, xl_base_dir, lora_file, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from cmedit.cli import main

    image = (_image(64, 64, seed=6) * 255).astype(np.uint8)
    _, mask_path = write_image_and_mask(tmp_path, image)
    mask = np.asarray(Image.open(mask_path))
    runner = CliRunner()
    common = ["-m", str(xl_dir), "--seed", "0", "-q", "--steps", str(STEPS)]
    result = runner.invoke(main, ["inpaint", "--mask", str(tmp_path / "mask.png"), str(tmp_path / "in.png"),
                                  "-o", str(tmp_path / "out.png"), "--prompt", PROMPT, *common])
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "out.png"))
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])

    result = runner.invoke(main, ["generate", "-m", str(xl_base_dir), "--lora", str(lora_file), "-p", PROMPT,
                                  "--negative-prompt", "blurry", "--guidance-scale", "1.5", "--seed", "2",
                                  "--steps", str(STEPS), "-q", "-o", str(tmp_path / "gen.png")])
    assert result.exit_code == 0, result.output
    pipe = load_pipeline(xl_base_dir, lora=str(lora_file))
    expected = pipe.generate(prompt=PROMPT, negative_prompt="blurry", guidance_scale=1.5, num_inference_steps=STEPS,
                             generator=_gen(2)).images[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "gen.png")), np.asarray(expected))

    refused = runner.invoke(main, ["generate", "-m", str(xl_base_dir), "-p", PROMPT, "-q",
                                   "-o", str(tmp_path / "no.png")])
    assert refused.exit_code != 0 and "lcm-lora-sdxl" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "no.png").exists()
