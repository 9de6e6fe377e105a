"""The masked-projection scheduler wrapper: Algorithm 4 of the Consistency Models paper as a scheduler.

``MaskedProjectionScheduler`` wraps a ``CMStochasticIterativeScheduler`` and keeps
its interface (``set_timesteps``, ``scale_model_input``, ``step``), so generation
and every edit run through the same sampling loop (``cmedit.core.sampler.sample``).
Its ``step`` denoises, clips, applies the projection ``P`` and only then adds the
next level's noise, drawing that noise exactly as the wrapped scheduler would.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import CMStochasticIterativeScheduler
from diffusers.schedulers.scheduling_consistency_models import CMStochasticIterativeSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from .operators import Operator


class MaskedProjectionScheduler:
    """A ``CMStochasticIterativeScheduler`` whose every step projects onto the known part of ``y``.

    Args:
        scheduler: the wrapped scheduler; its config (sigmas, ``sigma_data``, ``s_noise``,
            ``clip_denoised``) and its ``set_timesteps`` are used unchanged.
        operator: the edit's ``A``, ``A^T`` and ``Omega`` (1 = generate, 0 = known).
        y: reference image ``(B, C, H, W)`` in ``[-1, 1]`` on the sampling device and dtype (for a
            general ``cmedit.core.linear.LinearOperator``, ``A^+`` of the measurement).
        eta: 0 (default) projects exactly, ``P(x) = x + A^+(y - A x)``; ``eta > 0`` (a noisy ``y``)
            applies the regularised back-projection ``x + A^+_eta (y - A x)`` instead; a function of
            a step's sigma gives each step its own (``cmedit.core.noise``; design.md, degradations).
        fresh_noise: the part of each step's new noise that is drawn fresh. 1 (default) is Algorithm 4:
            all of it. Below 1, the rest is the denoiser's own noise estimate with its sign reversed,
            ``(denoised - x) / sigma`` before the projection, weighted ``sqrt(1 - fresh_noise^2)`` so
            the level is unchanged (CM4IR's noise injection, Garber & Tirer 2025; docs/design.md,
            section 12).
    """

    def __init__(self, scheduler: CMStochasticIterativeScheduler, operator: Operator, y: torch.Tensor,
                 eta: float | Callable[[float], float] = 0.0, fresh_noise: float = 1.0) -> None:
        if not isinstance(scheduler, CMStochasticIterativeScheduler):
            raise TypeError(f"expected a CMStochasticIterativeScheduler, got {type(scheduler).__name__}")
        operator.check_shape(y.shape)
        self.scheduler = scheduler
        self.operator = operator
        if not callable(eta) and not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = eta if callable(eta) else float(eta)
        if not 0 <= fresh_noise <= 1:
            raise ValueError(f"fresh_noise must be in [0, 1], got {fresh_noise}")
        self.fresh_noise = float(fresh_noise)
        self._etas: list[float] = []
        self._step_sigmas: list[float] = []
        # With noise, leave the last step's estimate unprojected (cmedit.core.noise.FINAL_DENOISE).
        from .noise import FINAL_DENOISE

        self.final_denoise = FINAL_DENOISE
        self.y0 = operator.known_part(y)  # computed once per edit, not per step
        self._step_index: int | None = None
        self._scalings: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def config(self):
        return self.scheduler.config

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    @property
    def sigmas(self) -> torch.Tensor:
        return self.scheduler.sigmas

    @property
    def step_index(self) -> int | None:
        return self._step_index

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Set the sigma schedule exactly as the wrapped scheduler does (docs/design.md, section 2)."""
        self.scheduler.set_timesteps(num_inference_steps=num_inference_steps, device=device, timesteps=timesteps)
        self._scalings = [self._step_scalings(n) for n in range(len(self.timesteps))]
        self._etas = [float(self.eta(float(self.sigmas[n]))) if callable(self.eta) else self.eta
                      for n in range(len(self.timesteps))]
        self._step_sigmas = [float(self.sigmas[n]) for n in range(len(self.timesteps))]  # for the reused noise
        self._step_index = 0

    def _step_scalings(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``index``'s ``sqrt(sigma^2 + sigma_data^2)``, ``c_skip``, ``c_out`` and noise scale.

        Computed once per schedule, not per step, with the same operations as
        ``CMStochasticIterativeScheduler`` so that the values are bit-identical.
        """
        config = self.config
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        c_skip, c_out = self.scheduler.get_scalings_for_boundary_condition(sigma)
        sigma_hat = sigma_next.clamp(min=config.sigma_min, max=config.sigma_max)
        noise_scale = (sigma_hat**2 - config.sigma_min**2) ** 0.5
        return (sigma**2 + config.sigma_data**2) ** 0.5, c_skip, c_out, noise_scale

    def initial_sample(self, noise: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """``x = y0 + sigma_1 z`` (Algorithm 4, first line); ``noise`` is ``z``, drawn by the caller.

        ``start``: begin from this image instead of ``y0`` (an edit that starts part-way down the
        noise grid from the whole input, SDEdit); the projections are the same.
        """
        return (self.y0 if start is None else start) + self.sigmas[0] * noise

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        """``c_in(sigma) x`` with ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` (docs/design.md, section 1)."""
        return sample / self._scalings[self._require_step()][0]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> CMStochasticIterativeSchedulerOutput | tuple:
        """One iteration of Algorithm 4: ``x <- P(clip(f(x, sigma_n))) + sqrt(sigma_{n+1}^2 - sigma_min^2) z``.

        With ``fresh_noise = r < 1``, ``z`` is ``r z + sqrt(1 - r^2) (clip(f(x, sigma_n)) - x) / sigma_n``.
        """
        index = self._require_step()
        config = self.config
        _, c_skip, c_out, noise_scale = self._scalings[index]

        denoised = c_out * model_output + c_skip * sample
        if config.clip_denoised:
            denoised = denoised.clamp(-1, 1)
        estimate = denoised
        eta = self._etas[index]
        if eta and self.final_denoise and index == len(self.timesteps) - 1:
            pass  # noisy y: the last step keeps the network's denoised estimate (CM4IR's last step)
        elif eta:
            denoised = self.operator.project_noisy(denoised, self.y0, eta)
        else:
            denoised = self.operator.project(denoised, self.y0)

        # The same draw as CMStochasticIterativeScheduler.step (docs/design.md, section 5).
        if len(self.timesteps) > 1:
            noise = randn_tensor(
                model_output.shape, dtype=model_output.dtype, device=model_output.device, generator=generator
            )
        else:
            noise = torch.zeros_like(model_output)
        if self.fresh_noise == 1:
            prev_sample = denoised + noise * config.s_noise * noise_scale
        else:  # part of the noise reused, sign reversed (docs/design.md, section 12)
            reused = (estimate - sample) / self._step_sigmas[index]
            mixed = self.fresh_noise * config.s_noise * noise + (1 - self.fresh_noise**2) ** 0.5 * reused
            prev_sample = denoised + noise_scale * mixed

        self._step_index = index + 1
        if not return_dict:
            return (prev_sample,)
        return CMStochasticIterativeSchedulerOutput(prev_sample=prev_sample)

    def _require_step(self) -> int:
        if self._step_index is None:
            raise RuntimeError("call set_timesteps before sampling")
        if self._step_index >= len(self.timesteps):
            raise RuntimeError("all steps of this schedule have been taken; call set_timesteps again")
        return self._step_index
