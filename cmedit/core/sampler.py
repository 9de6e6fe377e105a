"""The consistency sampler core: the consistency function and multistep sampling (paper, Algorithm 1).

Sigma schedules and the scalings come from diffusers' ``CMStochasticIterativeScheduler``;
this module only runs the loop. Generation passes the plain scheduler; edits pass a
``MaskedProjectionScheduler`` (``cmedit.core.projection``), so both share this one loop.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import CMStochasticIterativeScheduler, UNet2DModel


class NonFiniteOutputError(ValueError):
    """The network returned NaN or infinite values (broken weights, an overflow in half precision)."""


def consistency_function(
    unet: UNet2DModel,
    scheduler: CMStochasticIterativeScheduler,
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    class_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """``f(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` (paper, Appendix C; docs/design.md, section 1).

    ``x``: ``(B, C, H, W)`` noisy image; ``sigma``: its noise level, one for the batch (a float or a 0-d
    tensor) or one per sample (a ``(B,)`` tensor, as in training). Returns the denoised estimate
    (unclipped). ``f(x, sigma_min) = x`` exactly (the boundary condition). The scalings are those of
    the scheduler, computed in float64.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition(sigma)
    c_in = 1 / (sigma**2 + scheduler.config.sigma_data**2) ** 0.5
    c_noise = 1000 * 0.25 * torch.log(sigma + 1e-44)  # scheduler.sigma_to_t
    if sigma.ndim:  # per sample: broadcast over (C, H, W), in x's dtype and on x's device
        c_skip, c_out, c_in = (c.to(x.device, x.dtype).view(-1, 1, 1, 1) for c in (c_skip, c_out, c_in))
        c_noise = c_noise.to(x.device, torch.float32)
    model_output = unet((c_in * x).to(x.dtype), c_noise, class_labels=class_labels, return_dict=False)[0]
    return (c_skip * x + c_out * model_output).to(x.dtype)


def sample(
    unet: UNet2DModel,
    scheduler,
    x: torch.Tensor,
    *,
    class_labels: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    max_batch: int | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling (Algorithm 1; with a projection wrapper, Algorithm 4).

    ``scheduler`` has had ``set_timesteps`` called; ``x`` is the starting sample at its first
    sigma. Each step evaluates the network once; the scheduler's ``step`` denoises and adds the
    next level's noise, drawing one noise tensor per step from ``generator``.
    ``callback(i, t, x)`` is called after every step (e.g. to advance a progress bar).
    ``max_batch``: run the network on at most this many images at a time (it bounds the memory of
    its activations); the scheduler still steps the whole batch, so the random draws and the
    result do not depend on it. A network output with NaN or infinite values raises
    ``NonFiniteOutputError`` (one ``isfinite`` check per step) instead of giving a wrong image.
    """
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    for i, t in enumerate(scheduler.timesteps):
        scaled = scheduler.scale_model_input(x, t)
        model_output = _evaluate(unet, scaled, t, class_labels, max_batch)
        if not torch.isfinite(model_output).all():
            raise NonFiniteOutputError(f"the network's output is not finite (NaN or inf) at step {i + 1} "
                                       f"(timestep {float(t):g}): its weights are broken or overflow in this "
                                       "precision; nothing written")
        x = scheduler.step(model_output, t, x, generator=generator, return_dict=False)[0]
        if callback is not None:
            callback(i, t, x)
    return x


def _evaluate(unet: UNet2DModel, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None,
              max_batch: int | None) -> torch.Tensor:
    """The network's output on ``x`` at timestep ``t``, in chunks of at most ``max_batch`` images."""
    if max_batch is None or len(x) <= max_batch:
        return unet(x, t, class_labels=class_labels, return_dict=False)[0]
    chunks = []
    for start in range(0, len(x), max_batch):
        labels = None if class_labels is None else class_labels[start:start + max_batch]
        chunks.append(unet(x[start:start + max_batch], t, class_labels=labels, return_dict=False)[0])
    return torch.cat(chunks)
