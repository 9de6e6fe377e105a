"""Loss and noise-level schedule for Easy Consistency Tuning (ECT; Geng et al. 2024, arXiv 2406.14548).

Recipe (chosen for a CPU budget of a few hours, from scratch):

* Parameterisation (Song et al. 2023, Appendix C; docs/design.md section 1), per-sample sigma
  (``cmedit.core.sampler.consistency_function``, the sampler's own):
  ``f(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x, 250 ln t)`` with the scalings of
  diffusers' ``CMStochasticIterativeScheduler``, so the trained UNet is a drop-in
  for ``ConsistencyModelPipeline``.
* ``t ~ LogNormal(P_mean=-1.1, P_std=2.0)`` clipped to ``[sigma_min, sigma_max]`` (iCT / ECT).
* ``r`` from ECT's sigmoid mapping of the gap (ECT, section on the r/t schedule):
  ``r = max(0, t * (1 - n(t) / q^a))`` with ``n(t) = 1 + k sigmoid(-b t)``, k=8, b=1, q=2.
  Stage ``a = 0`` gives ``r = 0`` for every t (n(t) >= 1): plain denoiser training, the
  EDM-style "diffusion pretraining" that ECT starts from. Each later stage halves
  ``t - r``, so ``r -> t`` (consistency training with a shrinking gap).
* Stage 0 loss: EDM's denoising loss (Karras et al. 2022, weight lambda = 1 / c_out^2): the squared
  error of ``f`` against the clean image, divided by ``c_out(t)^2``. It trains every noise
  level equally, including sigma_max, which one-step sampling uses.
* Stages >= 1 loss (ECT's consistency loss; iCT, Song & Dhariwal 2023, for d and w): ``w(t, r) * d(f(x + t z, t), sg f(x + r z, r))``
  with the SAME z, stop-gradient on the online weights (no separate target EMA, as iCT),
  ``w = 1 / (t - r)`` and the pseudo-Huber metric ``d = sqrt(|a-b|^2 + c^2) - c``,
  ``c = 0.00054 sqrt(dim)`` (iCT).
* Optional teacher (consistency distillation, Song et al. 2023, section 4, with ECT's r(t) mapping): the
  point ``x_r`` on the trajectory through ``x_t = x + t z`` is found by one Heun step of the
  probability-flow ODE ``dx/dt = (x - D(x, t)) / t`` of a pre-trained denoiser ``D`` (an Euler step when
  ``r < sigma_min``, as EDM's last step), instead of consistency training's ``x + r z``. For a data set
  of a single image the ideal denoiser makes the two coincide; in general the teacher's point has no
  sampling noise, which is what lets distillation converge in fewer steps.
Why ECT rather than iCT: iCT needs ~10^5+ large-batch steps from scratch; ECT reaches
usable one/two-step samples after a short denoiser phase plus a few halvings of ``t - r``,
which fits ~10^4 small-batch CPU steps, and every intermediate checkpoint is a valid
consistency-parameterised model (boundary condition holds by construction).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import CMStochasticIterativeScheduler, UNet2DModel

from ..core.sampler import consistency_function


def make_scheduler(num_train_timesteps: int = 40) -> CMStochasticIterativeScheduler:
    """The sampling scheduler saved with the model (sigma 0.002..80, sigma_data 0.5, rho 7)."""
    return CMStochasticIterativeScheduler(
        num_train_timesteps=num_train_timesteps, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0
    )


@dataclass
class ECTSchedule:
    """ECT's r(t) mapping and stage curriculum: stage a = 1 + (step - pretrain) // stage_steps after pretraining."""

    pretrain_steps: int = 3000
    stage_steps: int = 1000
    max_stage: int = 6
    k: float = 8.0
    b: float = 1.0
    q: float = 2.0
    p_mean: float = -1.1
    p_std: float = 2.0

    def stage(self, step: int) -> int:
        """0 during denoiser pretraining, then 1, 2, ... up to max_stage."""
        if step < self.pretrain_steps:
            return 0
        return min(1 + (step - self.pretrain_steps) // self.stage_steps, self.max_stage)

    def r_of_t(self, t: torch.Tensor, step: int) -> torch.Tensor:
        """``r = max(0, t (1 - n(t) / q^a))``, ``n(t) = 1 + k sigmoid(-b t)``; r = 0 in stage 0, r < t always."""
        n = 1 + self.k * torch.sigmoid(-self.b * t)
        return (t * (1 - n / self.q ** self.stage(step))).clamp(min=0)

    def sample_t(self, n: int, generator: torch.Generator, device: torch.device, sigma_min: float, sigma_max: float) -> torch.Tensor:
        """``t ~ LogNormal(p_mean, p_std)`` clipped to [sigma_min, sigma_max] (iCT / ECT)."""
        z = torch.randn(n, generator=generator, device=device)
        return (self.p_mean + self.p_std * z).exp().clamp(sigma_min, sigma_max)


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``D(x, sigma)``: the denoised estimate of a batch ``x`` at per-sample noise levels ``sigma`` (shape ``(B,)``)."""


def unet_denoiser(unet: UNet2DModel, scheduler: CMStochasticIterativeScheduler) -> Denoiser:
    """A trained model used as an EDM denoiser ``D(x, sigma) = f(x, max(sigma, sigma_min))`` (e.g. a teacher)."""
    sigma_min = scheduler.config.sigma_min
    return lambda x, sigma: consistency_function(unet, scheduler, x, sigma.clamp(min=sigma_min))


@torch.no_grad()
def heun_step(
    denoiser: Denoiser, x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, sigma_min: float
) -> torch.Tensor:
    """One step of the probability-flow ODE ``dx/dt = (x - D(x, t)) / t`` from ``t`` to ``r < t`` (per sample).

    Heun's second-order step (Karras et al. 2022, Algorithm 1); Euler where ``r < sigma_min`` (then
    ``r = 0`` gives ``D(x_t, t)``). A batch of Euler steps only (a trajectory's last step, to 0)
    costs one denoiser evaluation, not two.
    """
    t4, r4 = t.view(-1, 1, 1, 1), r.view(-1, 1, 1, 1)
    d = (x_t - denoiser(x_t, t)) / t4
    x_euler = x_t + (r4 - t4) * d
    if not bool((r >= sigma_min).any()):
        return x_euler
    r_eval = r.clamp(min=sigma_min)
    d_r = (x_euler - denoiser(x_euler, r_eval)) / r_eval.view(-1, 1, 1, 1)
    return torch.where((r >= sigma_min).view(-1, 1, 1, 1), x_t + (r4 - t4) * (d + d_r) / 2, x_euler)


def ect_loss(
    unet: UNet2DModel,
    scheduler: CMStochasticIterativeScheduler,
    schedule: ECTSchedule,
    x0: torch.Tensor,
    step: int,
    generator: torch.Generator,
    teacher: Denoiser | None = None,
) -> torch.Tensor:
    """One minibatch loss: EDM denoising in stage 0, ECT consistency loss afterwards (see module docstring).

    With a ``teacher`` the consistency stages distil: ``x_r`` is the teacher's ODE step from ``x_t``.
    """
    cfg = scheduler.config
    t = schedule.sample_t(x0.shape[0], generator, x0.device, cfg.sigma_min, cfg.sigma_max)
    z = torch.randn(x0.shape, generator=generator, device=x0.device)
    x_t = x0 + t.view(-1, 1, 1, 1) * z
    f_t = consistency_function(unet, scheduler, x_t, t)
    if schedule.stage(step) == 0:
        _, c_out = scheduler.get_scalings_for_boundary_condition(t)
        return (((f_t - x0) ** 2).mean(dim=(1, 2, 3)) / c_out.clamp(min=1e-3) ** 2).mean()
    r = schedule.r_of_t(t, step)
    with torch.no_grad():
        r_eval = r.clamp(min=cfg.sigma_min)
        if teacher is None:
            x_r = x0 + r_eval.view(-1, 1, 1, 1) * z
            x_end = x0  # r == 0: the clean image (f(x0, sigma_min) == x0 anyway)
        else:
            x_r = heun_step(teacher, x_t, t, r, cfg.sigma_min)
            x_end = x_r  # r == 0: the teacher's D(x_t, t)
        f_r = consistency_function(unet, scheduler, x_r, r_eval)
        f_r = torch.where((r > 0).view(-1, 1, 1, 1), f_r, x_end)
    c = 0.00054 * math.sqrt(x0[0].numel())
    d = (((f_t - f_r) ** 2).sum(dim=(1, 2, 3)) + c**2).sqrt() - c
    return (d / (t - r)).mean()
