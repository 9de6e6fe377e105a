"""``LatentXLEditPipeline``: the editing methods of ``LatentEditPipeline`` on Stable Diffusion XL consistency models.

A subclass of diffusers' ``StableDiffusionXLPipeline`` (components ``vae``, ``text_encoder``
(``CLIPTextModel``), ``text_encoder_2`` (``CLIPTextModelWithProjection``), ``tokenizer``,
``tokenizer_2``, ``unet``, ``scheduler`` an ``LCMScheduler``; it loads and saves the same folders,
takes LoRAs through ``load_lora_weights`` and single files through ``from_single_file``) with the
methods of ``cmedit.latent.pipeline.LatentEditMethods``. Two models fit it:

- an SDXL folder whose UNet is consistency-distilled (``latent-consistency/lcm-sdxl``'s UNet in an SDXL
  base folder): its UNet has ``time_cond_proj_dim`` and takes the guidance scale as an embedding of
  ``w - 1`` (default 8, the card's example), no classifier-free guidance;
- SDXL base with ``latent-consistency/lcm-lora-sdxl``: classifier-free guidance when
  ``guidance_scale > 1`` (default 1: none; the card recommends 1-2).

The UNet's added conditioning is prepared as ``StableDiffusionXLPipeline.__call__`` does: the pooled
output of ``text_encoder_2`` (``text_embeds``) and the size conditioning ``time_ids`` =
``original_size + crops_coords_top_left + target_size`` with both sizes the image's (or crop's or
tile's) size and the crop origin ``(0, 0)``; with CFG and no negative prompt the negative embeddings
are zeros (``force_zeros_for_empty_prompt``). A float16 VAE with ``force_upcast`` (SDXL's VAE
overflows in float16) encodes and decodes in float32, as in diffusers.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers import LCMScheduler, StableDiffusionXLPipeline

from ..pipeline import ConsistencyEditPipeline
from .pipeline import LatentEditMethods, TextConditioning
from .projection import unscale_latents


class LatentXLEditPipeline(LatentEditMethods, StableDiffusionXLPipeline):
    """Generation, inpainting, colorization and super-resolution with an SDXL latent consistency model.

    ``add_watermarker`` is accepted for the folders' sake and ignored: diffusers' invisible watermark
    (applied when the ``invisible-watermark`` package is installed) would change the pixels that
    cmedit's edits keep byte for byte, so cmedit never applies it.
    """

    saved_class_name = "StableDiffusionXLPipeline"

    takes_pooled_embeds = True

    def __init__(self, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler,
                 image_encoder=None, feature_extractor=None, force_zeros_for_empty_prompt: bool = True,
                 add_watermarker: bool | None = None) -> None:
        if not isinstance(scheduler, LCMScheduler):
            scheduler = LCMScheduler.from_config(scheduler.config)
        super().__init__(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                         tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, image_encoder=image_encoder,
                         feature_extractor=feature_extractor,
                         force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=False)
        self._init_edit_state()

    def _conditioning(self, text: TextConditioning, batch: int, per_prompt: int, device, size) -> dict:
        """UNet keyword arguments for ``batch * per_prompt`` samples of ``size`` ``(H, W)`` pixels.

        As ``StableDiffusionXLPipeline.__call__``: ``encode_prompt`` (both text encoders, the
        penultimate hidden states concatenated; the pooled output of ``text_encoder_2``), the size
        conditioning ``(H, W, 0, 0, H, W)``, CFG order [negative, positive].
        """
        prompt, count = self._prompt_count(text, batch, per_prompt)
        cfg = self._cfg(text)
        embeds, negative, pooled, negative_pooled = self.encode_prompt(
            prompt, None, device, count, cfg, text.negative_prompt, prompt_embeds=text.prompt_embeds,
            pooled_prompt_embeds=text.pooled_prompt_embeds)
        if self.text_encoder_2 is None:
            projection_dim = int(pooled.shape[-1])
        else:
            projection_dim = self.text_encoder_2.config.projection_dim
        size = (int(size[0]), int(size[1]))
        time_ids = self._get_add_time_ids(size, (0, 0), size, dtype=embeds.dtype,
                                          text_encoder_projection_dim=projection_dim)
        if cfg:
            embeds = torch.cat([negative, embeds])
            pooled = torch.cat([negative_pooled, pooled])
            time_ids = torch.cat([time_ids, time_ids])
        n = batch * per_prompt
        added = {"text_embeds": pooled.to(device), "time_ids": time_ids.to(device).repeat(n, 1)}
        return {"encoder_hidden_states": embeds.to(device), "cfg": cfg, "guidance_scale": text.guidance_scale,
                "timestep_cond": self._guidance_embedding(text, n, device, embeds.dtype),
                "added_cond_kwargs": added}

    @contextlib.contextmanager
    def _vae_precision(self):
        """float32 for a float16 VAE whose config asks for it (``force_upcast``, SDXL's VAE), as diffusers'
        SDXL pipelines; the VAE is put back afterwards."""
        upcast = self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False)
        if upcast:
            self.vae.to(dtype=torch.float32)
        try:
            yield
        finally:
            if upcast:
                self.vae.to(dtype=torch.float16)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """As ``StableDiffusionXLPipeline``: the latents in the VAE's dtype (float32 when upcast), then unscaled."""
        latents = latents.to(self.vae.dtype)
        return self.vae.decode(unscale_latents(self.vae, latents), return_dict=False)[0]

    def _output(self, image: torch.Tensor, output_type: str, return_dict: bool, dtype=None):
        """diffusers' postprocessing (SDXL pipelines have no safety checker; no watermark, see the class)."""
        return ConsistencyEditPipeline._output(self, image, output_type, return_dict)
