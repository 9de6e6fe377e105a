"""Which kind of model a ``--model`` names, and loading the latent ones.

The kind is read from what the model holds, never from its name:

- a diffusers folder or hub id: its ``model_index.json`` (components) and ``unet/config.json``.
  A ``UNet2DConditionModel`` with a ``vae`` and a ``text_encoder`` is a latent model; with
  ``time_cond_proj_dim`` in its UNet config it is an LCM (guidance embedded), without it a
  Stable Diffusion base that needs an LCM-LoRA (``lora=``) unless its scheduler is already an
  ``LCMScheduler`` (a LoRA fused and saved). A ``text_encoder_2`` or ``tokenizer_2`` in the index,
  or a UNet with ``addition_embed_type`` ``"text_time"`` (pooled text and size conditioning),
  marks SDXL: the same rules, loaded as ``LatentXLEditPipeline`` (``cmedit.latent.sdxl``);
- a single ``.safetensors`` file: an original Stable Diffusion checkpoint holds
  ``first_stage_model.*`` (VAE) and ``model.diffusion_model.*`` (UNet) tensors, an SDXL one also
  ``conditioner.embedders.1.*`` (its second text encoder); it loads through diffusers'
  ``from_single_file`` (which fetches the matching diffusers config from the hub unless ``config=``
  names a local folder).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors",)


class LatentModelError(ValueError):
    """A latent model that cannot be loaded or used; the message is one line."""


def read_model_index(source: str) -> dict | None:
    """``model_index.json`` of a local folder (None if it has none) or of a hub id (may raise ``OSError``)."""
    path = Path(source)
    if path.is_dir():
        index = path / "model_index.json"
        return json.loads(index.read_text()) if index.is_file() else None
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.load_config(source)


def _unet_config(source: str) -> dict:
    path = Path(source) / "unet" / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.load_config(source, subfolder="unet")


def index_kind(index: dict | None) -> str:
    """``"latent"``, ``"sdxl"`` or ``"pixel"`` from a ``model_index.json`` (None: no index, a pixel folder).

    ``"latent"`` may still be SDXL by its UNet (:func:`is_sdxl_unet`)."""
    if not index:
        return "pixel"
    if "text_encoder_2" in index or "tokenizer_2" in index:
        return "sdxl"
    if "vae" in index and "text_encoder" in index and "unet" in index:
        return "latent"
    return "pixel"


def is_sdxl_unet(unet: dict) -> bool:
    """True for a UNet config with SDXL's added conditioning (pooled text embeddings and size ``time_ids``)."""
    return unet.get("addition_embed_type") == "text_time"


def _single_file_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as error:  # safetensors raises its own error types for a corrupt header
        raise LatentModelError(f"{path}: not a readable .safetensors file ({error})") from None


def is_sd_single_file(path: Path) -> bool:
    """True for a ``.safetensors`` file with an original Stable Diffusion (or SDXL) checkpoint's VAE and UNet keys."""
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES or not path.is_file():
        return False
    keys = _single_file_keys(path)
    return any(k.startswith("first_stage_model.") for k in keys) and any(
        k.startswith("model.diffusion_model.") for k in keys)


def is_sdxl_single_file(path: Path) -> bool:
    """True for a single-file SDXL checkpoint: it holds a second text encoder (OpenCLIP ViT-bigG),
    ``conditioner.embedders.1.*``."""
    return any(k.startswith("conditioner.embedders.1.") for k in _single_file_keys(path))


def _require_extra() -> None:
    try:
        import transformers
    except ImportError:
        raise LatentModelError("latent models need transformers: pip install 'cmedit[latent]'") from None
    # Its import-time notes (e.g. no torchvision for image processors cmedit does not use) are noise here.
    transformers.utils.logging.set_verbosity_error()


def _check_lora_source(lora: str) -> None:
    path = Path(lora)
    looks_local = path.suffix.lower() in (".safetensors", ".bin") or lora.startswith((".", "/", "~")) or (
        lora.strip("/").count("/") > 1)
    if looks_local and not path.exists():
        raise LatentModelError(f"{lora}: no such LoRA file or folder")


def load_latent_pipeline(source: str | os.PathLike, *, lora: str | None = None, single_file: bool = False,
                         config: str | None = None, device=None, dtype: torch.dtype | None = None):
    """Load a ``LatentEditPipeline`` (SD 1.x/2.x) or ``LatentXLEditPipeline`` (SDXL) from a diffusers folder,
    a hub id or a single SD/SDXL ``.safetensors`` file.

    ``lora``: a hub id, folder or ``.safetensors`` file of an LCM-LoRA, loaded with diffusers'
    ``load_lora_weights`` (needs ``peft``); the scheduler is ``LCMScheduler`` from the model's
    scheduler config in every case. ``config``: for a single file, a local diffusers folder with
    the matching configs (else diffusers fetches them from the hub).
    """
    _require_extra()
    from diffusers import LCMScheduler

    from .pipeline import LatentEditPipeline
    from .sdxl import LatentXLEditPipeline

    source = str(source)
    if lora is not None:
        _check_lora_source(str(lora))
    if single_file:
        kwargs = {"config": config} if config else {}
        if is_sdxl_single_file(Path(source)):
            pipe = LatentXLEditPipeline.from_single_file(source, **kwargs)
        else:
            pipe = LatentEditPipeline.from_single_file(source, safety_checker=None, **kwargs)
    else:
        index = read_model_index(source)
        unet = _unet_config(source)
        sdxl = index_kind(index) == "sdxl" or is_sdxl_unet(unet)
        if unet.get("in_channels", 4) != 4:
            raise LatentModelError(f"{source}: a UNet with {unet.get('in_channels')} input channels (an inpainting "
                                   "model); cmedit needs a 4-channel text-to-image UNet")
        if sdxl:
            _check_sdxl(source, index, unet)
        scheduler_class = (index.get("scheduler") or [None, None])[1]
        if unet.get("time_cond_proj_dim") is None and lora is None and scheduler_class != "LCMScheduler":
            name, example = ("an SDXL", "lcm-lora-sdxl for SDXL") if sdxl else ("a Stable Diffusion",
                                                                               "lcm-lora-sdv1-5 for SD 1.5")
            raise LatentModelError(f"{source}: {name} model without consistency distillation: add an "
                                   f"LCM-LoRA with --lora (latent-consistency/{example})")
        pipe = (LatentXLEditPipeline if sdxl else LatentEditPipeline).from_pretrained(source)
    if lora is not None:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise LatentModelError("--lora needs peft: pip install 'cmedit[latent]'") from None
        lora_path = Path(lora)
        if lora_path.is_file():
            pipe.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name)
        else:
            pipe.load_lora_weights(lora)
    if not isinstance(pipe.scheduler, LCMScheduler):
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    if device is not None or dtype is not None:
        pipe.to(device=device, dtype=dtype)
    return pipe


def _check_sdxl(source: str, index: dict, unet: dict) -> None:
    """Refuse SDXL-family folders that are not a text-to-image base with both text encoders."""
    if not is_sdxl_unet(unet):
        raise LatentModelError(f"{source}: an SDXL-style folder (text_encoder_2) whose UNet has no SDXL "
                               "conditioning (addition_embed_type 'text_time')")
    if index.get("requires_aesthetics_score"):
        raise LatentModelError(f"{source}: an SDXL refiner (aesthetic-score conditioning); cmedit needs an SDXL "
                               "text-to-image model (LCM-SDXL, or SDXL base with an LCM-LoRA)")
    for name in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "vae"):
        if not (index.get(name) or [None, None])[-1]:
            raise LatentModelError(f"{source}: an SDXL model without {name}; cmedit needs both text encoders")


def enable_memory_savings(pipe) -> None:
    """VAE tiling (images larger than the VAE's tile, 512 px for SD 1.5 and 1024 px for SDXL, are encoded and
    decoded in overlapping tiles) and slicing (a batch one image at a time): bounded memory for large photos.
    Results of images up to a tile are unchanged by tiling; slicing can change the last bits of a
    batch's decode, so the library leaves both off and the command line turns them on."""
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling()
