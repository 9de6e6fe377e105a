"""Tiny random Stable Diffusion / LCM components built in code (no network), for the latent tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

# A byte-level BPE vocabulary: the 256 byte symbols and their end-of-word forms, plus CLIP's specials.
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def write_tokenizer_files(folder: Path) -> Path:
    """Write a tiny CLIP tokenizer (vocab.json, merges.txt) with no merges; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    # GPT-2's byte-to-symbol table (printable bytes stand for themselves, the others are shifted past 255).
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    symbols = [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]
    vocab = {}
    for symbol in symbols + [s + "</w>" for s in symbols] + list(_SPECIALS):
        vocab.setdefault(symbol, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def tiny_components(tmp: Path, *, lcm: bool = True, in_channels: int = 4, seed: int = 0) -> dict:
    """UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer, LCMScheduler, all tiny and random.

    ``lcm=True``: the UNet takes the guidance embedding (``time_cond_proj_dim``) as an LCM does;
    ``lcm=False``: a plain SD-like UNet (a base for an LCM-LoRA).
    """
    from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        time_cond_proj_dim=8 if lcm else None,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=1000, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=16,
    )).eval()
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer_files(tmp / "tokenizer_files"), model_max_length=77)
    text_encoder.resize_token_embeddings(len(tokenizer))
    text_encoder.config.eos_token_id = tokenizer.eos_token_id
    text_encoder.config.bos_token_id = tokenizer.bos_token_id
    text_encoder.config.pad_token_id = tokenizer.pad_token_id
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                safety_checker=None, feature_extractor=None)


def save_lcm_folder(tmp: Path, name: str = "lcm", **kwargs) -> Path:
    """A tiny LCM saved as diffusers saves ``LatentConsistencyModelPipeline`` (``model_index.json`` + components)."""
    from diffusers import LatentConsistencyModelPipeline

    folder = tmp / name
    components = tiny_components(tmp, **kwargs)
    LatentConsistencyModelPipeline(**components, requires_safety_checker=False).save_pretrained(folder)
    return folder


def tiny_sdxl_components(tmp: Path, *, lcm: bool = True, seed: int = 0) -> dict:
    """Tiny random SDXL components, shaped as diffusers' own SDXL tests build them.

    Two text encoders (``CLIPTextModel`` and ``CLIPTextModelWithProjection``, hidden size 16 each: the
    UNet's cross-attention width is 32), a UNet with SDXL's added conditioning
    (``addition_embed_type="text_time"``: six size ids of ``addition_time_embed_dim`` 8 and the
    16-wide pooled text embedding, ``projection_class_embeddings_input_dim`` 6 * 8 + 16 = 64), the
    VAE of :func:`tiny_components` with ``force_upcast``. ``lcm=True``: the UNet takes the guidance
    embedding (``time_cond_proj_dim``) as LCM-SDXL's does; ``lcm=False``: an SDXL-base-like UNet.
    """
    from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, cross_attention_dim=32, attention_head_dim=2, use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=64,
        time_cond_proj_dim=8 if lcm else None,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, sample_size=64, force_upcast=True, scaling_factor=0.13025,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ).eval()
    files = write_tokenizer_files(tmp / "tokenizer_files")
    tokenizer = CLIPTokenizer.from_pretrained(files, model_max_length=77)
    tokenizer_2 = CLIPTokenizer.from_pretrained(files, model_max_length=77)
    config = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    text_encoder = CLIPTextModel(CLIPTextConfig(**config)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config)).eval()
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                tokenizer_2=tokenizer_2, scheduler=scheduler)


def save_sdxl_folder(tmp: Path, name: str = "sdxl", scheduler=None, **kwargs) -> Path:
    """Tiny SDXL components saved as diffusers saves ``StableDiffusionXLPipeline`` (``scheduler``: a scheduler
    class to save instead of ``LCMScheduler``, e.g. ``EulerDiscreteScheduler`` as SDXL base ships)."""
    from diffusers import StableDiffusionXLPipeline

    folder = tmp / name
    components = tiny_sdxl_components(tmp, **kwargs)
    if scheduler is not None:
        components["scheduler"] = scheduler.from_config(components["scheduler"].config)
    StableDiffusionXLPipeline(**components).save_pretrained(folder)
    return folder


def save_peft_lora(base_dir: Path, pipeline_class, folder: Path) -> Path:
    """An LCM-LoRA-shaped adapter on ``base_dir``'s UNet made with peft, saved as diffusers saves LoRAs
    (``pipeline_class.save_lora_weights``); returns the ``.safetensors`` file."""
    from diffusers import UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    torch.manual_seed(3)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    pipeline_class.save_lora_weights(folder, unet_lora_layers=layers)
    return Path(folder) / "pytorch_lora_weights.safetensors"


def write_image_and_mask(folder: Path, image: np.ndarray) -> tuple[Path, Path]:
    """``image`` (uint8) as ``in.png`` and a mask with a white rectangle as ``mask.png`` in ``folder``."""
    from PIL import Image

    Image.fromarray(image).save(folder / "in.png")
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    mask[8:24, 8:40] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return folder / "in.png", folder / "mask.png"
