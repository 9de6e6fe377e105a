"""Latent consistency models (LCM, LCM-LoRA on Stable Diffusion 1.5 and SDXL) for photo editing with text prompts.

``LatentEditPipeline`` (``cmedit.latent.pipeline``; SDXL: ``LatentXLEditPipeline``, ``cmedit.latent.sdxl``)
has the methods of ``ConsistencyEditPipeline``
(``generate``, ``inpaint``, ``outpaint``, ``colorize``, ``super_resolve``, ``img2img``, ``edit``) and
runs them in a VAE's latent space through ``LatentProjectionScheduler`` (``cmedit.latent.projection``),
the latent counterpart of ``cmedit.core.projection.MaskedProjectionScheduler``. Loading and model
kind detection: ``cmedit.latent.loading``. Needs the ``latent`` extra (``transformers``, ``peft``).
See docs/latent.md.
"""
