"""Deterministic inpainting masks for evaluation: a centre box and free-form strokes.

Masks are ``(H, W)`` uint8 arrays, 255 = generate, 0 = keep (docs/design.md, section 6); OpenCV's
``cv2.inpaint`` reads the same polarity (non-zero = fill). A stroke mask depends only on the image
size, ``mask_seed`` and the image's index in the evaluated set, so the same image gets the same mask
whatever else is evaluated with it, and every method and every sampling seed sees the same masks.
"""

from __future__ import annotations

import cv2
import numpy as np

STROKE_FRACTION = 0.25


def box_mask(height: int, width: int) -> np.ndarray:
    """The centred box of half the height by half the width: a quarter of the area (exactly, for even sizes)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    top, left = height // 4, width // 4
    mask[top:top + height // 2, left:left + width // 2] = 255
    return mask


def stroke_mask(height: int, width: int, index: int, mask_seed: int = 0,
                fraction: float = STROKE_FRACTION) -> np.ndarray:
    """Free-form brush strokes covering at least ``fraction`` of the image, drawn with ``cv2.line``.

    In the manner of the free-form masks of Yu et al. 2019 (*Free-Form Image Inpainting with Gated
    Convolution*): each stroke starts at a random point and is a polyline of 2 to 5 segments of random
    direction and of length 15-40% of the shorter side, with a brush 5-12% of the shorter side wide
    (at least 1 pixel). Strokes are added segment by segment until the covered fraction reaches
    ``fraction``, so the coverage exceeds it by at most one segment. The random numbers come from
    ``numpy.random.default_rng([mask_seed, index])``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng([mask_seed, index])
    mask = np.zeros((height, width), dtype=np.uint8)
    side = min(height, width)
    while np.count_nonzero(mask) < fraction * mask.size:
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        thickness = max(1, int(round(side * rng.uniform(0.05, 0.12))))
        for _ in range(int(rng.integers(2, 6))):
            angle, length = rng.uniform(0, 2 * np.pi), side * rng.uniform(0.15, 0.4)
            x_end = int(np.clip(round(x + length * np.cos(angle)), 0, width - 1))
            y_end = int(np.clip(round(y + length * np.sin(angle)), 0, height - 1))
            cv2.line(mask, (x, y), (x_end, y_end), 255, thickness)
            x, y = x_end, y_end
            if np.count_nonzero(mask) >= fraction * mask.size:
                break
    return mask
