"""Memory bounded up front: the full-resolution buffers of an edit, counted in pixels before any is made.

The network only ever sees model-size pieces, ``--max-batch`` at a time, so its memory is bounded
by the batch. What grows with the picture are the full-resolution buffers around it: an inpainting
crop window (a square around a masked region, mirrored beyond the image where the image is
narrower, so an elongated region of a 20000 x 32 image needs a 20000 x 20000 window), the outpaint
canvas and its window, a super-resolved output, and the colour-transfer and projection copies at
the input's size; each exists once per candidate. :func:`check_pixels` refuses an edit whose
largest such buffer, times the candidates, exceeds the pixel limit (``--max-pixels``, the same
limit as for input images), with one line, before anything is allocated. Peak memory is then a
fixed number of bytes per allowed pixel (docs/guarantees.md).
"""

from __future__ import annotations

import numpy as np

# The default pixel limit, for input images and for these buffers (``--max-pixels``,
# ``ConsistencyEditPipeline.max_pixels``): a 8000 x 8000 photo is 64 MP.
DEFAULT_MAX_PIXELS = 64_000_000


class MemoryBudgetError(ValueError):
    """An edit whose full-resolution buffers would exceed the pixel limit; the message is one line."""


def check_pixels(what: str, height: int, width: int, candidates: int, max_pixels: int | None = None) -> None:
    """Refuse a ``height x width`` buffer held ``candidates`` times when that exceeds ``max_pixels``
    (default :data:`DEFAULT_MAX_PIXELS`)."""
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    total = int(height) * int(width) * int(candidates)
    if total > max_pixels:
        times = f" x {candidates} candidates" if candidates > 1 else ""
        raise MemoryBudgetError(f"{what} of {width}x{height} pixels{times} exceeds the limit of {max_pixels:,} "
                                "pixels (raise it with --max-pixels or max_pixels if the memory is there)")


def largest_crop_window(mask: np.ndarray, *, context: float, min_crop_size: int) -> int:
    """Side of the largest square window that region inpainting (``cmedit.fullres.crops``) cuts for the
    2-D 0/1 ``mask`` (1 = generate); 0 for an empty mask. Plans the windows only; allocates no image."""
    from .crops import crop_windows, region_boxes

    height, width = mask.shape
    windows = crop_windows(region_boxes(mask), height, width, context=context, min_crop_size=min_crop_size)
    return max((size for _, _, size in windows), default=0)


def outpaint_window(height: int, width: int, left: int, right: int, top: int, bottom: int,
                    resolution: int) -> tuple[int, int]:
    """The outpaint canvas's size and, where it is larger than the model, the square window that
    edits it in one crop: the larger of the two buffers as ``(height, width)``."""
    canvas = (height + top + bottom, width + left + right)
    side = max(canvas)
    return (side, side) if side > resolution else canvas
