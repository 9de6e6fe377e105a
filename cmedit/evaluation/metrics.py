"""The metrics of ``cmedit eval`` on 8-bit images (``data_range=255``).

Metrics (PSNR and SSIM from ``skimage.metrics``, not re-implemented here):

- PSNR: ``peak_signal_noise_ratio`` of all evaluated pixels of all images together, i.e. from the MSE
  pooled over the set. A per-image mean would be infinite as soon as one image is reproduced exactly
  (a greyscale image under the grey baseline); the pooled PSNR is infinite only if every image is.
- SSIM: ``structural_similarity(..., channel_axis=2, full=True)`` per image. Inpainting: the mean of the
  SSIM map over the masked pixels (the 7x7 windows near the mask's edge also see kept pixels);
  whole-image tasks: skimage's mean SSIM. Then the mean over images.
- Colourfulness: Hasler & Suesstrunk 2003 (:func:`colourfulness`), the mean over images.
- KID x1000 (only with ``features``, a :class:`cmedit.evaluation.features.FeatureNet` of the images'
  domain): the kernel distance between a method's outputs and the original images in that network's
  features, over the whole set (:func:`cmedit.evaluation.features.kernel_distance`, one subset of all
  images). Small when the outputs look like the originals as a set, whatever their pixel errors:
  a plausible but different colour costs PSNR, not KID; a grey or blurred image costs both. Each
  output is paired with its own original, so near-copies score below 0; compare methods, not with 0.
- NFE: network evaluations per image, counted with a forward pre-hook on ``pipe.unet`` (the rows of
  every batch that passes through it, divided by the number of images).
- Seconds per image: wall time of the method's calls over the set, divided by the number of images
  (cmedit runs ``batch_size`` images per call; the baselines one at a time).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from skimage.measure import block_reduce
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def colourfulness(image: np.ndarray) -> float:
    """Colourfulness ``M`` of an ``(H, W, 3)`` RGB image in 8-bit levels (0 for a grey image).

    Hasler & Suesstrunk 2003, *Measuring colourfulness in natural images* (their recommended metric M^(3)):
    ``rg = R - G``, ``yb = (R + G) / 2 - B``, ``M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)``.
    No library ships it, hence these lines.
    """
    r, g, b = (image[..., c].astype(np.float64) for c in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def pooled_psnr(truths: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                masks: Sequence[np.ndarray] | None = None) -> float:
    """skimage's PSNR of the pixels of all images together (``masks``: ``(H, W)``, non-zero = evaluated).

    ``inf`` when every evaluated pixel is reproduced exactly.
    """
    masks = masks if masks is not None else [np.ones(t.shape[:2], dtype=bool) for t in truths]
    truth = np.concatenate([t[m > 0] for t, m in zip(truths, masks)])
    output = np.concatenate([o[m > 0] for o, m in zip(outputs, masks)])
    if np.array_equal(truth, output):
        return math.inf  # skimage divides by the zero MSE (with a warning) to the same result
    return float(peak_signal_noise_ratio(truth, output, data_range=255))


def ssim(truth: np.ndarray, output: np.ndarray, mask: np.ndarray | None = None) -> float:
    """skimage's SSIM of two ``(H, W, 3)`` uint8 images; with ``mask``, the SSIM map's mean over its non-zero pixels.

    (skimage's own mean leaves out a border of half the window; the map is defined up to the edge.)
    """
    mean, ssim_map = structural_similarity(truth, output, channel_axis=2, data_range=255, full=True)
    return float(mean) if mask is None else float(ssim_map[mask > 0].mean())


def block_errors(outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray], factor: int) -> tuple[float, float]:
    """Max and mean of ``|block mean of output - input pixel|`` over all ``factor x factor`` blocks, in levels."""
    errors = np.concatenate([
        np.abs(block_reduce(out.astype(np.float64), (factor, factor, 1), np.mean) - low).ravel()
        for out, low in zip(outputs, inputs)])
    return float(errors.max()), float(errors.mean())
