"""Algorithm 4 in a VAE's latent space: ``LatentProjectionScheduler`` wraps diffusers' ``LCMScheduler``.

The same idea as ``cmedit.core.projection.MaskedProjectionScheduler`` (Song et al. 2023,
Algorithm 4; design.md, section 5): each step denoises, projects the denoised estimate onto the
known part of ``y``, and only then adds the next level's noise. The projection is any object with
the ``Operator`` interface ``project(x, y0)`` / ``known_part(y)``, acting on latents:

- inpainting: ``Inpainting(latent_mask(mask))`` on the VAE encoding of the image (the known
  latents are copied, the mask grown so that no latent touching a masked pixel counts as known);
- any other linear operator (colorization, super-resolution, ...): ``ThroughVAE(operator, vae)``,
  which decodes the denoised latent, applies the pixel-space projection and encodes the result
  again (one VAE decode and one VAE encode per step on top of the UNet).

With ``projection=None`` the wrapper is the plain ``LCMScheduler``: same draws, same result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import LCMScheduler

from ..core.operators import Operator


def latent_mask(mask: torch.Tensor, scale: int, grow: int = 1) -> torch.Tensor:
    """Pixel mask ``(B, 1, H, W)`` (1 = generate) to latent resolution ``(B, 1, H/scale, W/scale)``.

    A latent is generated if any pixel of its ``scale x scale`` block is masked, and the result is
    dilated by ``grow`` latents: the VAE encoder's receptive field reaches past a block, so a latent
    next to a masked block also carries masked content. ``H`` and ``W`` must be multiples of ``scale``.
    """
    if mask.shape[-1] % scale or mask.shape[-2] % scale:
        raise ValueError(f"mask size {mask.shape[-1]}x{mask.shape[-2]} is not a multiple of {scale}")
    small = F.max_pool2d((mask > 0.5).float(), kernel_size=scale, stride=scale)
    if grow > 0:
        small = F.max_pool2d(small, kernel_size=2 * grow + 1, stride=1, padding=grow)
    return small


def _latent_stats(vae, z: torch.Tensor):
    """The VAE config's per-channel ``latents_mean`` and ``latents_std`` (None when it has none, as SD and SDXL)."""
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    shape = (1, len(mean), 1, 1)
    return (torch.tensor(mean).view(shape).to(z.device, z.dtype), torch.tensor(std).view(shape).to(z.device, z.dtype))


def scale_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """The VAE's latents to the diffusion model's: ``scaling_factor * z``, or ``(z - mean) * scaling_factor / std``
    for a VAE with latent statistics (as diffusers' SD and SDXL img2img pipelines)."""
    stats = _latent_stats(vae, z)
    if stats is None:
        return vae.config.scaling_factor * z
    return (z - stats[0]) * vae.config.scaling_factor / stats[1]


def unscale_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`scale_latents`, before ``vae.decode`` (as diffusers' pipelines)."""
    stats = _latent_stats(vae, z)
    if stats is None:
        return z / vae.config.scaling_factor
    return z * stats[1] / vae.config.scaling_factor + stats[0]


class VAECodec:
    """Pixels ``[-1, 1]`` <-> scaled latents with a diffusers ``AutoencoderKL`` (the posterior's mode, no draws).

    Encodes and decodes in the VAE's dtype (SDXL pipelines put a float16 VAE with ``force_upcast`` in
    float32 for the call, as diffusers does)."""

    def __init__(self, vae) -> None:
        self.vae = vae

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.vae.device, self.vae.dtype)
        return scale_latents(self.vae, self.vae.encode(x).latent_dist.mode())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.vae.device, self.vae.dtype)
        return self.vae.decode(unscale_latents(self.vae, z), return_dict=False)[0].clamp(-1, 1)


class ThroughVAE:
    """A pixel-space ``Operator`` acting on latents: ``P_z(z) = E(P(D(z)))``.

    ``known_part`` takes a pixel image ``y`` and keeps its known pixel part ``y0`` (pixels);
    ``project(z, y0)`` decodes ``z``, projects in pixel space and encodes. ``D`` and ``E`` are not
    inverse to each other, so the known part holds only approximately in the latents; the final
    pixel-space projection of the decoded result makes it exact.
    """

    def __init__(self, operator: Operator, codec: VAECodec) -> None:
        self.operator = operator
        self.codec = codec

    def known_part(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.known_part(y)

    def project(self, z: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        x = self.codec.decode(z).to(y0.dtype)
        return self.codec.encode(self.operator.project(x, y0)).to(z.dtype)


class LatentProjectionScheduler:
    """An ``LCMScheduler`` whose every step projects the denoised latent (Algorithm 4 in latent space).

    Args:
        scheduler: the wrapped ``LCMScheduler``; its schedule, scalings and noise draws are used unchanged.
        projection: an object with ``project(x, y0)`` (``Inpainting`` on latents, ``ThroughVAE``), or None
            for plain sampling.
        y0: the known part the projection restores (latents for ``Inpainting``, pixels for ``ThroughVAE``).
    """

    def __init__(self, scheduler: LCMScheduler, projection: Operator | ThroughVAE | None = None,
                 y0: torch.Tensor | None = None) -> None:
        if not isinstance(scheduler, LCMScheduler):
            raise TypeError(f"expected an LCMScheduler, got {type(scheduler).__name__}")
        if projection is not None and y0 is None:
            raise ValueError("a projection needs the known part y0")
        self.scheduler = scheduler
        self.projection = projection
        self.y0 = y0

    @property
    def config(self):
        return self.scheduler.config

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    @property
    def order(self) -> int:
        return self.scheduler.order

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, timesteps: list[int] | None = None,
                      strength: float = 1.0) -> None:
        """The wrapped scheduler's LCM schedule (``strength < 1`` keeps its first fraction of the distillation grid)."""
        self.scheduler.set_timesteps(num_inference_steps=num_inference_steps, device=device, timesteps=timesteps,
                                     strength=strength)

    def initial_sample(self, start: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(abar_t0) start + sqrt(1 - abar_t0) noise`` at the schedule's first timestep (``add_noise``)."""
        return self.scheduler.add_noise(start, noise, self.timesteps[:1])

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return self.scheduler.scale_model_input(sample, timestep)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``x <- sqrt(abar_next) P(denoised) + sqrt(1 - abar_next) z``; returns ``(prev_sample, P(denoised))``.

        The wrapped ``LCMScheduler.step`` computes ``denoised`` and draws ``z`` exactly as it always
        does; the projection's change to ``denoised`` is then carried into ``prev_sample`` with the
        next level's signal scale, so the noise and the unknown part are those of plain sampling.
        """
        prev_sample, denoised = self.scheduler.step(model_output, timestep, sample, generator=generator,
                                                    return_dict=False)
        if self.projection is None:
            return prev_sample, denoised
        projected = self.projection.project(denoised, self.y0)
        index = self.scheduler.step_index  # already advanced: the index of the next timestep
        if index >= len(self.timesteps):  # the last step adds no noise
            return projected, projected
        alpha_next = self.scheduler.alphas_cumprod[self.timesteps[index]].to(projected.device)
        prev_sample = prev_sample + alpha_next.sqrt().to(projected.dtype) * (projected - denoised)
        return prev_sample, projected

