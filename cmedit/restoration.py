"""Restoration with a general linear operator: ``y = A x + noise`` at any image size.

``restore`` solves for one batch of measurements ``y`` (``(B, 3, h, w)`` in ``[-1, 1]``): the pixel-space
reference ``A^+ y`` (``cmedit.core.linear``) is edited by ``ConsistencyEditPipeline._edit`` with the
range-null-space projection at every step (regularised by the noise level, ``cmedit.core.noise``).

An image larger than the model is restored in overlapping tiles (as ``cmedit.fullres.tiles`` does for
box super-resolution): the measurement is cut into tiles of ``R / factor`` pixels (``factor`` 1 for a
blur), mirrored at its edges, every tile restored with the same operator at the model's resolution,
all in one batch, and the tiles blended with a ``sin^2`` window. Then the whole image is projected
once more at full size, ``x + A^+(y - A x)`` (``A^+_eta`` with noise), so that the measurement holds
at full size: by the SVDs of the 1-D matrices for separable operators (every ``Downsample``, Gaussian
and box blurs, chains of them), exactly; for a non-separable blur (motion, a kernel from a file)
larger than ``cmedit.core.degradations.DENSE_LIMIT`` pixels matrix-free, by conjugate gradients on
the normal equations with ``A`` and ``A^T`` as FFT convolutions (``cmedit.core.linear``;
docs/design.md, section 11): exact to the solver's tolerance, in memory linear in the pixel count.
"""

from __future__ import annotations

import logging

import torch

from .core.arguments import EditOptions
from .core.degradations import Blur
from .core.linear import LinearOperator
from .core.noise import noise_eta, step_eta
from .core.schedules import set_timesteps
from .fullres.canvas import reflect_crop
from .fullres.tiles import blend_candidates, tile_starts, tile_window

logger = logging.getLogger(__name__)


def operator_factor(operator: LinearOperator) -> int:
    """How many image pixels one measurement pixel spans per axis (1 for a blur)."""
    h, w = operator.image_size((1, 1))
    if h != w:
        raise ValueError("the operator must scale both axes alike")
    return h


def full_size_projection_possible(operator: LinearOperator, size: tuple[int, int]) -> bool:
    """Whether the operator acts on images of ``size`` (every operator of this module at any size its
    kernel and factor fit), so that the full-size projection can be made."""
    try:
        operator.measurement_size(size)
    except ValueError:
        return False
    return True


@torch.inference_mode()
def restore(pipe, y: torch.Tensor, operator: LinearOperator, options: EditOptions, *,
            overlap: int | None = None) -> torch.Tensor:
    """Restore ``x`` from measurements ``y`` ``(B, 3, h, w)`` in ``[-1, 1]``; returns ``(B * K, 3, H, W)`` in ``[-1, 1]``.

    ``K = options.num_images_per_prompt`` candidates per image, adjacent; ``options`` as for
    ``pipe.edit_tensor`` (its ``noise_level`` sets the regularisation). With ``strength < 1`` the steps
    start from the regularised ``A^+_eta y`` plus noise. ``overlap``: tiles' overlap in measurement
    pixels (default a quarter of a tile).
    """
    noise_level = options.noise_level
    if y.ndim != 4 or y.shape[1] != 3:
        raise ValueError(f"measurement must be (B, 3, h, w), got shape {tuple(y.shape)}")
    size = pipe.resolution
    factor = operator_factor(operator)
    if size % factor:
        raise ValueError(f"factor {factor} does not divide the model resolution {size}")
    full = operator.image_size(tuple(y.shape[-2:]))
    if isinstance(operator, Blur):
        operator.check_kernel(full)
    start_eta = noise_eta(noise_level * operator.noise_gain)
    if full == (size, size):
        reference = operator.pinv(y.double()).float()
        start = operator.pinv(y.double(), start_eta).float() if start_eta else None
        return pipe.edit_tensor(reference, operator, options, start_image=start)
    tile = size // factor
    overlap = tile // 4 if overlap is None else overlap
    height, width = y.shape[-2:]
    row_starts, col_starts = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    per_image = len(row_starts) * len(col_starts)
    k = options.num_images_per_prompt
    options.check_batch(len(y))
    generator = options.generator
    if isinstance(generator, (list, tuple)):  # one per output image (even a list of one): its tiles share it
        generator = [generator[b * k + j] for b in range(len(y)) for _ in range(per_image) for j in range(k)]
    pieces = torch.cat([reflect_crop(y[b:b + 1], top, left, tile, tile)
                        for b in range(len(y)) for top in row_starts for left in col_starts])
    labels = pipe.class_labels_for(options.class_labels, len(y), options.generator)
    if labels is not None:
        labels = labels.repeat_interleave(per_image)
    piece_options = EditOptions(options.num_inference_steps, options.timesteps, options.strength, labels, k,
                                generator, noise_level)
    reference = operator.pinv(pieces.double()).float()
    start = operator.pinv(pieces.double(), start_eta).float() if start_eta else None
    edited = pipe.edit_tensor(reference, operator, piece_options, start_image=start).to(y.device, torch.float32)

    starts = [(top * factor, left * factor) for top in row_starts for left in col_starts]
    window = tile_window(tile, factor, overlap)
    x = blend_candidates(edited, len(y), k, starts, full, window)
    if not full_size_projection_possible(operator, full):
        logger.info("%s at %dx%d: no full-size projection; tiles kept", operator, *full[::-1])
        return x.clamp(-1, 1)
    eta = last_step_eta(pipe, operator, noise_level, options)
    measurement = y.double().repeat_interleave(k, dim=0)
    x = operator.back_project(x.double(), measurement, eta)
    if eta:
        return x.clamp(-1, 1).float()
    return operator.fit_measurement(x, measurement).float()


def last_step_eta(pipe, operator, noise_level: float, options: EditOptions) -> float:
    """The ``eta`` of the last sampling step of this schedule (``cmedit.core.noise.step_eta``)."""
    from diffusers import CMStochasticIterativeScheduler

    eta = step_eta(noise_level * operator.noise_gain, pipe.scheduler.config.sigma_data)
    if not callable(eta):
        return eta
    steps, timesteps = pipe.edit_schedule(options.num_inference_steps, options.timesteps, options.strength)
    scheduler = CMStochasticIterativeScheduler.from_config(pipe.scheduler.config)
    set_timesteps(scheduler, steps, timesteps, "cpu")
    return float(eta(float(scheduler.sigmas[len(scheduler.timesteps) - 1])))


def blur_operator(kernel) -> Blur:
    """A :class:`Blur` from a ``Blur``, an array, or a kernel file path."""
    return kernel if isinstance(kernel, Blur) else Blur(kernel)
