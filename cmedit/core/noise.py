"""Noisy measurements: the noise level and the regularisation of the back-projection it sets.

``noise_level`` is the standard deviation ``sigma_y`` of additive Gaussian noise on the measurement, in
``[0, 1]`` pixel units (0.05 is about 13 of 255 levels; CM4IR's and DDRM's ``sigma_y`` are in the same
units). Images are sampled on ``[-1, 1]``, where the noise has standard deviation ``2 sigma_y``.

With noise, each step's exact projection would copy the noise into the known part. The sampler
instead moves the denoised estimate towards the measurement by the regularised pseudo-inverse
``x + A^+_eta (y - A x)`` with ``eta = ZETA (2 sigma_y)^2`` (CM4IR's back-projection; design.md,
degradations): along a singular direction with singular value ``s`` it moves the fraction
``s^2 / (s^2 + eta)`` of the way, so well-measured directions follow ``y`` and poorly measured ones
(where the noise dominates) keep the model's estimate.
"""

from __future__ import annotations

import numpy as np

# eta = ZETA * (2 sigma_y)^2, chosen by measurement on held-out images (BENCHMARKS.md, degradations).
ZETA = 1.0


def check_noise_level(noise_level: float) -> float:
    """``noise_level`` as a float in ``[0, 1]``; ``ValueError`` otherwise (also for NaN)."""
    try:
        value = float(noise_level)
    except (TypeError, ValueError):
        raise ValueError(f"noise level must be a number in [0, 1] or 'auto', got {noise_level!r}") from None
    if not 0 <= value <= 1:
        raise ValueError(f"noise level must be in [0, 1] (pixel units), got {noise_level!r}")
    return value


def estimate_noise_level(images: np.ndarray) -> float:
    """``sigma_y`` of ``images`` ``(B, C, H, W)`` in ``[-1, 1]``, by ``skimage.restoration.estimate_sigma``.

    The wavelet (MAD) estimate per image and channel, averaged, in ``[0, 1]`` pixel units.
    """
    try:
        import pywt  # noqa: F401  (estimate_sigma's wavelets)
        from skimage.restoration import estimate_sigma
    except ImportError:
        raise ValueError("noise level 'auto' needs scikit-image and PyWavelets (pip install 'cmedit[eval]')") from None
    images = (np.asarray(images, dtype=np.float64) + 1) / 2
    sigmas = [estimate_sigma(image, channel_axis=0, average_sigmas=True) for image in images]
    return float(np.clip(np.mean(sigmas), 0, 1))


def resolve_noise_level(noise_level: float | str, images) -> float:
    """A number as :func:`check_noise_level`; ``"auto"``: :func:`estimate_noise_level` of ``images``."""
    if isinstance(noise_level, str) and noise_level.strip().lower() == "auto":
        import torch

        array = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        return estimate_noise_level(array)
    return check_noise_level(noise_level)


# With noise, whether the last step returns the network's estimate unprojected (measured).
FINAL_DENOISE = False
# How eta follows the step (set by measurement): "constant" (CM4IR's) or "posterior" (below).
SCHEDULE = "posterior"


def step_eta(noise_level: float, sigma_data: float = 0.5, zeta: float | None = None,
             schedule: str | None = None):
    """``eta`` per step, as a function of the step's sigma (or a constant).

    ``"posterior"``: the measurement's noise variance over the variance left in the denoiser's estimate,
    ``eta(sigma) = zeta (2 sigma_y)^2 / v(sigma)`` with ``v = sigma_data^2 sigma^2 / (sigma_data^2 + sigma^2)``
    (the posterior variance under a Gaussian prior of variance ``sigma_data^2``): early, uncertain
    estimates follow ``y``; late, sharp ones keep more of themselves against the noise.
    """
    schedule = SCHEDULE if schedule is None else schedule
    base = noise_eta(noise_level, zeta)
    if not base or schedule == "constant":
        return base
    if schedule != "posterior":
        raise ValueError(f"unknown eta schedule {schedule!r}")
    return lambda sigma: base * (sigma_data**2 + sigma**2) / (sigma_data**2 * sigma**2)


def noise_eta(noise_level: float, zeta: float | None = None) -> float:
    """The back-projection's ``eta = zeta (2 sigma_y)^2`` on ``[-1, 1]`` images (0 without noise; default ``ZETA``)."""
    return (ZETA if zeta is None else zeta) * (2 * noise_level) ** 2
