"""``LatentEditPipeline``: generation and zero-shot editing with a latent consistency model and a text prompt.

A subclass of diffusers' ``LatentConsistencyModelPipeline`` (the same components: ``vae``,
``text_encoder``, ``tokenizer``, ``unet``, ``scheduler`` an ``LCMScheduler``; it loads and saves the
same folders, takes LoRAs and single files through diffusers' loaders) with the methods of
``cmedit.pipeline.ConsistencyEditPipeline``. Every method samples through
``LatentProjectionScheduler`` (``cmedit.latent.projection``):

- ``generate`` equals ``LatentConsistencyModelPipeline`` (an LCM, embedded guidance) or
  ``StableDiffusionPipeline`` with ``LCMScheduler`` (an LCM-LoRA, classifier-free guidance) bit for bit;
  ``img2img`` equals ``LatentConsistencyModelImg2ImgPipeline``;
- inpainting projects latents onto the VAE encoding of the image outside a grown latent mask,
  and composites in pixel space (every pixel outside the mask byte-identical);
- other operators project in pixel space through the VAE at every step (``ThroughVAE``).

The methods live in ``LatentEditMethods``, which ``cmedit.latent.sdxl.LatentXLEditPipeline``
shares on diffusers' ``StableDiffusionXLPipeline``.

Guidance: a UNet with ``time_cond_proj_dim`` (an LCM such as LCM-Dreamshaper) takes the guidance
scale ``w`` as an embedding of ``w - 1`` (default 8, its model card's); a plain SD UNet with an
LCM-LoRA uses classifier-free guidance when ``guidance_scale > 1`` (default 1: none, the LCM-LoRA card's).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import LatentConsistencyModelPipeline, LCMScheduler
from diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_img2img import retrieve_latents
from diffusers.utils.torch_utils import randn_tensor

from ..core.arguments import EditOptions
from ..core.operators import Colorization, Inpainting, Operator
from ..io.tensors import ImageBatchInput, images_to_tensor, resize
from ..pipeline import ConsistencyEditPipeline, check_output_type
from .projection import LatentProjectionScheduler, ThroughVAE, VAECodec, latent_mask, scale_latents, unscale_latents

logger = logging.getLogger(__name__)

DEFAULT_STEPS = 4  # the LCM and LCM-LoRA model cards' recommendation (2-8 work)
EMBEDDED_GUIDANCE = 8.0  # LCM-Dreamshaper-v7's card: guidance_scale 8 (embedded, no extra UNet pass)
CFG_GUIDANCE = 1.0  # LCM-LoRA cards: guidance 1 (no CFG) to 2


@dataclass
class TextConditioning:
    """The prompt settings of a call; ``None`` fields take the pipeline's defaults (:attr:`LatentEditPipeline.text_defaults`)."""

    prompt: str | list[str] | None = None
    negative_prompt: str | list[str] | None = None
    guidance_scale: float | None = None
    prompt_embeds: torch.Tensor | None = None
    pooled_prompt_embeds: torch.Tensor | None = None  # SDXL: ``text_encoder_2``'s pooled output, with prompt_embeds


class LatentEditMethods:
    """The editing methods shared by ``LatentEditPipeline`` (SD 1.x/2.x) and ``LatentXLEditPipeline`` (SDXL).

    A mixin placed before a diffusers pipeline class; the subclass supplies :meth:`_conditioning`
    (text encoding and any added UNet conditioning) and :meth:`_output`, and may override
    :meth:`_vae_precision` and :meth:`_decode`.
    """

    takes_pooled_embeds = False  # SDXL: prompt_embeds come with pooled_prompt_embeds
    saved_class_name = "LatentConsistencyModelPipeline"  # the diffusers pipeline a saved folder names

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Save as diffusers does, naming :attr:`saved_class_name` so that the folder loads without cmedit."""
        super().save_pretrained(save_directory, **kwargs)
        index_path = Path(save_directory) / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = self.saved_class_name
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    @property
    def resolution(self) -> int:
        """The model's native square resolution in pixels (``unet.sample_size * vae_scale_factor``: 512 for SD 1.5,
        1024 for SDXL)."""
        size = self.unet.config.sample_size
        return (size if isinstance(size, int) else size[0]) * self.vae_scale_factor

    @property
    def embedded_guidance(self) -> bool:
        """True for an LCM UNet that takes the guidance scale as an input (no classifier-free guidance)."""
        return self.unet.config.time_cond_proj_dim is not None

    def _vae_precision(self):
        """A context in which the VAE encodes and decodes (SDXL: float32 for a float16 VAE with ``force_upcast``)."""
        return contextlib.nullcontext()

    def _init_edit_state(self) -> None:
        self.max_batch_size: int | None = None
        # The full-resolution buffers' limit, as ConsistencyEditPipeline.max_pixels (its methods check it).
        from ..fullres.budget import DEFAULT_MAX_PIXELS

        self.max_pixels = DEFAULT_MAX_PIXELS
        self.domain_note: str | None = None  # read by ConsistencyEditPipeline's methods; no note for these models
        # Used when a call gives no prompt / guidance (the CLI sets them from --prompt etc.).
        self.text_defaults = TextConditioning()
        self._call_text: TextConditioning | None = None  # the current call's, for crop/tile helpers

    def _text(self, prompt, negative_prompt, guidance_scale, prompt_embeds,
              pooled_prompt_embeds=None) -> TextConditioning:
        d = self.text_defaults
        text = TextConditioning(
            prompt=prompt if prompt is not None else d.prompt,
            negative_prompt=negative_prompt if negative_prompt is not None else d.negative_prompt,
            guidance_scale=guidance_scale if guidance_scale is not None else d.guidance_scale,
            prompt_embeds=prompt_embeds if prompt_embeds is not None else d.prompt_embeds,
            pooled_prompt_embeds=(pooled_prompt_embeds if pooled_prompt_embeds is not None
                                  else d.pooled_prompt_embeds),
        )
        if text.pooled_prompt_embeds is not None and not self.takes_pooled_embeds:
            raise ValueError("pooled_prompt_embeds are for SDXL models (two text encoders); this model takes "
                             "prompt_embeds only")
        if self.takes_pooled_embeds and (text.prompt_embeds is None) != (text.pooled_prompt_embeds is None):
            raise ValueError("an SDXL model takes prompt_embeds and pooled_prompt_embeds together "
                             "(encode_prompt returns both)")
        if text.guidance_scale is None:
            text.guidance_scale = EMBEDDED_GUIDANCE if self.embedded_guidance else CFG_GUIDANCE
        if text.prompt is None and text.prompt_embeds is None:
            text.prompt = ""
        if text.prompt is not None and text.prompt_embeds is not None:
            raise ValueError("give prompt or prompt_embeds, not both")
        if not text.guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {text.guidance_scale}")
        if text.negative_prompt is not None and not self._cfg(text):
            if self.embedded_guidance:
                raise ValueError("this LCM takes its guidance scale as an input and uses no negative prompt "
                                 "(a negative prompt needs classifier-free guidance: an SD model with an LCM-LoRA)")
            raise ValueError("a negative prompt needs guidance_scale > 1 (classifier-free guidance)")
        return text

    def _cfg(self, text: TextConditioning) -> bool:
        return not self.embedded_guidance and text.guidance_scale > 1

    def _prompt_count(self, text: TextConditioning, batch: int, per_prompt: int) -> tuple:
        """``(prompt, num_images_per_prompt)`` for ``encode_prompt``: one string (or one embedding) for all
        ``batch * per_prompt`` samples, or one per image (``batch`` of them), ``per_prompt`` each."""
        prompt, count = text.prompt, per_prompt
        if isinstance(prompt, str):
            count = batch * per_prompt
        elif prompt is not None and len(prompt) != batch:
            raise ValueError(f"got {len(prompt)} prompts for {batch} images: give one prompt or one per image")
        elif text.prompt_embeds is not None and len(text.prompt_embeds) == 1:
            count = batch * per_prompt
        return prompt, count

    def _guidance_embedding(self, text: TextConditioning, n: int, device, dtype) -> torch.Tensor | None:
        """An LCM's embedded guidance: the embedding of ``w - 1`` for ``n`` samples (None without one)."""
        if not self.embedded_guidance:
            return None
        w = torch.tensor(text.guidance_scale - 1).repeat(n)
        return self.get_guidance_scale_embedding(
            w, embedding_dim=self.unet.config.time_cond_proj_dim).to(device=device, dtype=dtype)

    # ----------------------------------------------------------------- sampling loop

    def _unet(self, x: torch.Tensor, t, cond: dict) -> torch.Tensor:
        """The UNet's prediction for ``x`` at ``t`` (with CFG when on), in chunks of :attr:`max_batch_size`."""
        model_input = torch.cat([x] * 2) if cond["cfg"] else x
        embeds, tcond = cond["encoder_hidden_states"], cond["timestep_cond"]
        added = cond.get("added_cond_kwargs")  # SDXL: pooled text embeddings and size conditioning
        step = self.max_batch_size or len(model_input)
        chunks = [self.unet(model_input[i:i + step], t, encoder_hidden_states=embeds[i:i + step],
                            timestep_cond=None if tcond is None else tcond[i:i + step],
                            added_cond_kwargs=None if added is None else {k: v[i:i + step] for k, v in added.items()},
                            return_dict=False)[0]
                  for i in range(0, len(model_input), step)]
        out = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        if cond["cfg"]:
            uncond, text = out.chunk(2)
            out = uncond + cond["guidance_scale"] * (text - uncond)
        return out

    def _sample(self, wrapper: LatentProjectionScheduler, latents: torch.Tensor, cond: dict, generator) -> torch.Tensor:
        """The LCM loop: one UNet evaluation and one wrapper step per timestep; returns the last denoised latents."""
        denoised = latents
        with self.progress_bar(total=len(wrapper.timesteps)) as bar:
            for t in wrapper.timesteps:
                latents = latents.to(cond["encoder_hidden_states"].dtype)
                model_output = self._unet(wrapper.scale_model_input(latents, t), t, cond)
                latents, denoised = wrapper.step(model_output, t, latents, generator=generator)
                bar.update()
        return denoised.to(cond["encoder_hidden_states"].dtype)

    def _set_timesteps(self, wrapper, num_inference_steps, timesteps, strength, device) -> None:
        if timesteps is not None:
            wrapper.set_timesteps(timesteps=[int(t) for t in timesteps], device=device, strength=strength)
        else:
            steps = DEFAULT_STEPS if num_inference_steps is None else num_inference_steps
            wrapper.set_timesteps(steps, device=device, strength=strength)
        if len(wrapper.timesteps) == 0:
            raise ValueError(f"strength {strength} leaves no timesteps: raise it")

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(unscale_latents(self.vae, latents), return_dict=False)[0]

    def _check_size(self, height: int, width: int) -> None:
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, got {width}x{height}")

    # ----------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(self, batch_size: int = 1, prompt=None, negative_prompt=None, guidance_scale: float | None = None,
                 prompt_embeds: torch.Tensor | None = None, num_inference_steps: int | None = None,
                 timesteps: list[int] | None = None, height: int | None = None, width: int | None = None,
                 generator=None, class_labels=None, output_type: str = "pil", return_dict: bool = True,
                 pooled_prompt_embeds: torch.Tensor | None = None):
        """Sample ``batch_size`` images per prompt; the draws and result of ``LatentConsistencyModelPipeline``
        (SDXL: ``StableDiffusionXLPipeline`` with ``LCMScheduler``).

        ``prompt``: one string or a list (then ``batch_size`` images each). Default 4 steps at the
        native resolution. ``pooled_prompt_embeds``: SDXL, with ``prompt_embeds``.
        """
        self.class_labels_for(class_labels)
        check_output_type(output_type)
        text = self._text(prompt, negative_prompt, guidance_scale, prompt_embeds, pooled_prompt_embeds)
        height = height or self.resolution
        width = width or self.resolution
        self._check_size(height, width)
        n_prompts = len(text.prompt) if isinstance(text.prompt, list) else 1
        if text.prompt_embeds is not None and len(text.prompt_embeds) > 1:
            n_prompts = len(text.prompt_embeds)
        device = self._execution_device
        cond = self._conditioning(text, n_prompts, batch_size, device, (height, width))
        wrapper = LatentProjectionScheduler(self.scheduler)
        self._set_timesteps(wrapper, num_inference_steps, timesteps, 1.0, device)
        latents = self.prepare_latents(n_prompts * batch_size, self.unet.config.in_channels, height, width,
                                       cond["encoder_hidden_states"].dtype, device, generator)
        latents = self._sample(wrapper, latents, cond, generator)
        with self._vae_precision():
            image = self._decode(latents)
        return self._output(image, output_type, return_dict, latents.dtype)

    @torch.inference_mode()
    def img2img(self, image: ImageBatchInput, strength: float = 0.5, *, prompt=None, negative_prompt=None,
                guidance_scale: float | None = None, prompt_embeds=None, num_inference_steps: int | None = None,
                timesteps: list[int] | None = None, num_images_per_prompt: int = 1, generator=None,
                class_labels=None, output_type: str = "pil", return_dict: bool = True, pooled_prompt_embeds=None):
        """An image of the prompt that keeps the layout and colours of ``image`` (SDEdit); as
        ``LatentConsistencyModelImg2ImgPipeline`` (same draws, same result) at sizes that are multiples of 8.

        Other sizes are resized to the nearest multiple of 8 and the result back. ``strength`` is
        ``LCMScheduler.set_timesteps``'s (the first ``strength`` of the distillation grid, then
        ``num_inference_steps`` on it), for SDXL too (docs/latent.md: how it differs from
        ``StableDiffusionXLImg2ImgPipeline``'s).
        """
        self.class_labels_for(class_labels)
        check_output_type(output_type)
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        text = self._text(prompt, negative_prompt, guidance_scale, prompt_embeds, pooled_prompt_embeds)
        y = images_to_tensor(image)
        size = tuple(y.shape[-2:])
        work = self._work_size(size)
        device = self._execution_device
        cond = self._conditioning(text, len(y), num_images_per_prompt, device, work)
        dtype = cond["encoder_hidden_states"].dtype
        wrapper = LatentProjectionScheduler(self.scheduler)
        self._set_timesteps(wrapper, num_inference_steps, timesteps, strength, device)
        y_work = resize(y, work).to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, dim=0)
        # As LatentConsistencyModelImg2ImgPipeline.prepare_latents: a posterior sample, then the noise.
        with self._vae_precision():
            y_work = y_work.to(self.vae.dtype)
            if isinstance(generator, list):
                start = torch.cat([retrieve_latents(self.vae.encode(y_work[i:i + 1]), generator=g)
                                   for i, g in enumerate(generator)])
            else:
                start = retrieve_latents(self.vae.encode(y_work), generator=generator)
        start = scale_latents(self.vae, start.to(dtype))
        noise = randn_tensor(start.shape, generator=generator, device=device, dtype=dtype)
        latents = self._sample(wrapper, wrapper.initial_sample(start, noise), cond, generator)
        with self._vae_precision():
            x = self._decode(latents)
        if work != size:
            x = resize(x.float(), size)
        return self._output(x, output_type, return_dict, dtype)

    # ----------------------------------------------------------------- editing

    def edit(self, image: ImageBatchInput, operator: Operator, *, prompt=None, negative_prompt=None,
             guidance_scale: float | None = None, prompt_embeds=None, num_inference_steps: int | None = None,
             timesteps: list[int] | None = None, strength: float = 1.0, class_labels=None,
             num_images_per_prompt: int = 1, generator=None, output_type: str = "pil", return_dict: bool = True,
             pooled_prompt_embeds=None):
        """Zero-shot edit of ``image`` with ``operator`` (Algorithm 4 in latent space), guided by the prompt.

        ``Inpainting`` operators project latents (:func:`cmedit.latent.projection.latent_mask`); any
        other operator projects in pixel space through the VAE at every step. Other arguments as
        ``ConsistencyEditPipeline.edit`` (default 4 LCM steps; ``timesteps`` are ``LCMScheduler``'s
        discrete timesteps; ``strength`` as ``LCMScheduler.set_timesteps``).
        """
        options = EditOptions(num_inference_steps, timesteps, strength, class_labels, num_images_per_prompt,
                              generator)
        check_output_type(output_type)
        with self._text_for_call(prompt, negative_prompt, guidance_scale, prompt_embeds, pooled_prompt_embeds):
            x = self.edit_tensor(images_to_tensor(image), operator, options)
        return self._output(x, output_type, return_dict)

    @contextlib.contextmanager
    def _text_for_call(self, prompt, negative_prompt, guidance_scale, prompt_embeds, pooled_prompt_embeds=None):
        """Checked prompt settings for the duration of one call (read by :meth:`edit_tensor`, also on crops and tiles)."""
        self._call_text = self._text(prompt, negative_prompt, guidance_scale, prompt_embeds, pooled_prompt_embeds)
        try:
            yield
        finally:
            self._call_text = None

    def _work_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``size`` rounded to the nearest multiples of the VAE's factor (at least one latent)."""
        f = self.vae_scale_factor
        return tuple(max(f, round(s / f) * f) for s in size)

    @torch.inference_mode()
    def edit_tensor(self, y: torch.Tensor, operator: Operator, options: EditOptions) -> torch.Tensor:
        """Algorithm 4 in latent space on ``y`` ``(B, 3, H, W)`` in ``[-1, 1]`` (also called by ``cmedit.fullres``
        on crops and tiles); returns ``(B * K, 3, H, W)`` float32 in ``[-1, 1]`` whose known components equal ``y``'s."""
        if getattr(options, "noise_level", 0):
            raise ValueError("latent models take no noise_level: the known part is injected exactly")
        self.class_labels_for(options.class_labels, len(y), options.generator)
        options.check_batch(len(y))
        text = self._call_text or self._text(None, None, None, None)
        k, batch = options.num_images_per_prompt, len(y)
        y = y.repeat_interleave(k, dim=0)
        size = tuple(y.shape[-2:])
        work = self._work_size(size)
        work_operator = operator.resized(work) if work != size else operator
        operator.check_shape(y.shape)
        work_operator.check_shape((y.shape[0], y.shape[1], *work))

        device = self._execution_device
        cond = self._conditioning(text, batch, k, device, work)
        with self._vae_precision():
            return self._edit_latents(y, operator, work_operator, size, work, cond, options)

    def _edit_latents(self, y, operator, work_operator, size, work, cond, options) -> torch.Tensor:
        """:meth:`edit_tensor` after the conditioning: known part, projection, sampling, final projection."""
        strength, generator, device = options.strength, options.generator, self._execution_device
        dtype = cond["encoder_hidden_states"].dtype
        codec = VAECodec(self.vae)
        # Only the known part reaches the model: resizing y itself would blur unknown content into it.
        y_work = resize(operator.known_part(y), work).to(device=device, dtype=dtype)
        if isinstance(work_operator, Inpainting):
            omega = work_operator.mask(y_work.shape, device, dtype).expand(len(y_work), -1, -1, -1)
            projection = Inpainting(latent_mask(omega, self.vae_scale_factor))
            y0 = projection.known_part(codec.encode(y_work).to(dtype))
        else:
            projection = ThroughVAE(work_operator, codec)
            y0 = y_work
        wrapper = LatentProjectionScheduler(self.scheduler, projection, y0)
        self._set_timesteps(wrapper, options.num_inference_steps, options.timesteps, strength, device)
        if strength < 1:  # SDEdit: the whole input (the unknown part's content too) guides the result
            start = codec.encode(resize(y, work).to(device=device, dtype=dtype)).to(dtype)
        elif isinstance(projection, Inpainting):
            start = y0
        else:
            start = codec.encode(y0).to(dtype)
        noise = randn_tensor(start.shape, generator=generator, device=device, dtype=dtype)
        latents = self._sample(wrapper, wrapper.initial_sample(start, noise), cond, generator)

        # The final projection runs in pixel space, in float32, at the input's size.
        x = self._decode(latents).float().clamp(-1, 1)
        y = y.to(x.device, x.dtype)
        if work != size:
            x = resize(x, size)
        x = operator.project(x, operator.known_part(y))
        return operator.fit_range(x, y)

    def class_labels_for(self, class_labels, batch_size: int = 0, generator=None) -> None:
        """Latent models take text, not class labels: refuse any (``cmedit.fullres`` asks through this too)."""
        if class_labels is not None:
            raise ValueError("latent models are not class-conditional: use a prompt instead of class labels")
        return None

    def _note_domain(self, height: int, width: int) -> None:
        """Latent models have no small native domain to warn about (``ConsistencyEditPipeline`` asks)."""

    _check_result = ConsistencyEditPipeline._check_result  # the up-front buffer check, against max_pixels

    def inpaint(self, image: ImageBatchInput, mask: ImageBatchInput, *, prompt=None, negative_prompt=None,
                guidance_scale: float | None = None, prompt_embeds=None, pooled_prompt_embeds=None, **kwargs):
        """Fill the white pixels of ``mask`` (1 = generate, 0 = keep) with what the prompt describes.

        As ``ConsistencyEditPipeline.inpaint`` (``context``, ``feather``, ``full_resolution``: an image
        larger than the native resolution is inpainted in crops around the masked regions at its own
        scale and pasted back, ``cmedit.fullres.crops``). Every pixel outside the mask is unchanged.
        """
        with self._text_for_call(prompt, negative_prompt, guidance_scale, prompt_embeds, pooled_prompt_embeds):
            return ConsistencyEditPipeline.inpaint(self, image, mask, **kwargs)

    def colorize(self, image: ImageBatchInput, **kwargs):
        """Colorize ``image``; the output keeps its luminance exactly (projection through the VAE each step)."""
        return self.edit(image, Colorization(), **kwargs)

    def super_resolve(self, image: ImageBatchInput, factor: int = 4, colorize: bool = False, *, prompt=None,
                      negative_prompt=None, guidance_scale: float | None = None, prompt_embeds=None,
                      pooled_prompt_embeds=None, **kwargs):
        """Upscale by ``factor``; each output block averages to its input pixel. Inputs whose output would be
        larger than the native resolution are done in overlapping tiles (``cmedit.fullres.tiles``).

        Latent models take the box kernel only (exact block means) and no ``noise_level``: the general
        linear operators' restoration (bicubic, blur, noise) runs on pixel consistency models."""
        kernel = kwargs.pop("kernel", None)
        if kernel not in (None, "box") or kwargs.get("noise_level"):
            raise ValueError("latent models super-resolve with kernel='box' and without noise_level only "
                             "(bicubic, blur and noise restoration need a pixel consistency model)")
        with self._text_for_call(prompt, negative_prompt, guidance_scale, prompt_embeds, pooled_prompt_embeds):
            return ConsistencyEditPipeline.super_resolve(self, image, factor, colorize, kernel="box", **kwargs)

    def outpaint(self, image: ImageBatchInput, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0, *,
                 feather: int = 3, **kwargs):
        """Extend the canvas by the given borders and fill them (inpainting of a mirrored canvas)."""
        from ..fullres.canvas import outpaint_canvas

        canvas, mask = outpaint_canvas(images_to_tensor(image), left, right, top, bottom)
        return self.inpaint((canvas + 1) / 2, mask, feather=feather, full_resolution=True, **kwargs)


class LatentEditPipeline(LatentEditMethods, LatentConsistencyModelPipeline):
    """Generation, inpainting, colorization and super-resolution with a latent consistency model (SD 1.x/2.x)."""

    _optional_components = ["safety_checker", "feature_extractor", "image_encoder"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, safety_checker=None, feature_extractor=None,
                 image_encoder=None, requires_safety_checker: bool = False) -> None:
        if not isinstance(scheduler, LCMScheduler):
            scheduler = LCMScheduler.from_config(scheduler.config)
        super().__init__(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                         safety_checker=safety_checker, feature_extractor=feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)
        self._init_edit_state()

    def _conditioning(self, text: TextConditioning, batch: int, per_prompt: int, device, size=None) -> dict:
        """UNet keyword arguments for ``batch * per_prompt`` samples: text embeddings and guidance embedding.

        ``prompt`` is one string (for all) or one per image (``batch`` of them); as
        ``StableDiffusionPipeline.__call__`` prepares them (``encode_prompt``, CFG order [negative, positive]).
        ``size`` (the image's) is not used by these models.
        """
        prompt, count = self._prompt_count(text, batch, per_prompt)
        cfg = self._cfg(text)
        embeds, negative = self.encode_prompt(prompt, device, count, cfg, text.negative_prompt,
                                              prompt_embeds=text.prompt_embeds)
        if cfg:
            embeds = torch.cat([negative, embeds])
        return {"encoder_hidden_states": embeds, "cfg": cfg, "guidance_scale": text.guidance_scale,
                "timestep_cond": self._guidance_embedding(text, batch * per_prompt, device, embeds.dtype)}

    def _output(self, image: torch.Tensor, output_type: str, return_dict: bool, dtype=None):
        """Safety checker (when the model has one) and diffusers' postprocessing, as its pipelines do."""
        image, nsfw = self.run_safety_checker(image, self._execution_device, dtype or image.dtype)
        if nsfw is not None and any(nsfw):
            logger.warning("the model's safety checker blacked out %d image(s)", sum(bool(v) for v in nsfw))
        return ConsistencyEditPipeline._output(self, image, output_type, return_dict)
