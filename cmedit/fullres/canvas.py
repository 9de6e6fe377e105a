"""Pixels beyond the image border: mirrored windows, canvas extension (outpainting) and alpha masks.

Three small pieces that all answer "what is outside the picture":

- :func:`reflect_crop` cuts any window out of an image; the parts of the window that lie
  outside the image are mirrored in from the inside (``numpy.pad``'s "reflect": the edge pixel
  is not repeated, and windows many times the image size mirror back and forth). The region
  editor and the tiled super-resolution use it where a square does not fit into the picture.
- :func:`outpaint_canvas` extends the canvas and returns the mask of the new border; filling it
  is then an inpainting (``cmedit.fullres.crops.inpaint_regions`` or ``pipe.inpaint``).
- :func:`rgba_to_mask` turns the transparent pixels of an RGBA picture into the mask to fill.

Images are ``(B, C, H, W)`` float tensors in ``[-1, 1]``. Mask polarity, as everywhere in
cmedit: 1 = generate, 0 = keep.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..io.tensors import transparent
from .budget import check_pixels


def reflect_indices(start: int, stop: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices into an axis of ``length`` pixels for the positions ``start .. stop - 1``, mirrored at both ends.

    Position ``-1`` maps to ``1``, ``length`` to ``length - 2`` (the edge is not repeated), with period
    ``2 (length - 1)`` so any range is valid. An axis of one pixel maps everything to ``0``.
    """
    if length < 1:
        raise ValueError(f"cannot index an empty axis (length {length})")
    positions = torch.arange(start, stop, device=device)
    if length == 1:
        return torch.zeros_like(positions)
    period = 2 * (length - 1)
    positions = positions.remainder(period)
    return torch.where(positions < length, positions, period - positions)


def reflect_crop(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The window ``[top, top + height) x [left, left + width)`` of ``x`` ``(..., H, W)``, mirrored outside.

    Inside the image this is plain slicing; outside it, pixels are reflected in (:func:`reflect_indices`).
    ``top`` and ``left`` may be negative and the window may be larger than the image.
    """
    rows = reflect_indices(top, top + height, x.shape[-2], x.device)
    cols = reflect_indices(left, left + width, x.shape[-1], x.device)
    return x[..., rows[:, None], cols[None, :]]


def outpaint_canvas(
    image: torch.Tensor, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0, *,
    max_pixels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend ``image`` by the given number of pixels on each side; return the canvas and the border mask.

    Args:
        image: ``(B, C, H, W)`` in ``[-1, 1]``.
        left, right, top, bottom: pixels added on each side (``>= 0``).
        max_pixels: a canvas of more pixels is refused up front (``cmedit.fullres.budget.MemoryBudgetError``,
            default ``DEFAULT_MAX_PIXELS``).

    Returns:
        ``canvas`` ``(B, C, H + top + bottom, W + left + right)`` in ``[-1, 1]``: the image in the
        middle and the border filled by reflecting the image (mirrored, period twice the image size
        for wide borders). ``mask`` ``(1, 1, H + top + bottom, W + left + right)``: 1 on the new
        border (generate), 0 on the original pixels (keep).

    The border's fill is never shown to the model (inpainting replaces every masked pixel), but it
    is what a feathered seam blends with in the mask's outermost rings (``inpaint_regions(feather=...)``),
    and a mirror image continues the picture there better than a flat colour would.
    Outpainting with ``inpaint_regions`` edits the whole border in one crop that covers the canvas,
    so for a canvas larger than the model's resolution the new content has the model's resolution,
    enlarged.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if min(left, right, top, bottom) < 0:
        raise ValueError(f"border sizes must be >= 0, got left={left} right={right} top={top} bottom={bottom}")
    _, _, h, w = image.shape
    check_pixels("the outpainted canvas", h + top + bottom, w + left + right, 1, max_pixels)
    canvas = reflect_crop(image, -top, -left, h + top + bottom, w + left + right)
    mask = torch.ones(1, 1, h + top + bottom, w + left + right, dtype=image.dtype, device=image.device)
    mask[..., top:top + h, left:left + w] = 0
    return canvas, mask


def rgba_to_mask(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """The transparent pixels (alpha < 50%) of a picture with alpha, as a mask to fill: ``(B, 1, H, W)`` of 0/1.

    Accepts a PIL image with transparency (``RGBA``, ``LA``, ``P`` with a transparent colour), a
    numpy array ``(H, W, 2 or 4)`` or ``(B, H, W, 2 or 4)`` (``uint8`` in ``[0, 255]`` or float in
    ``[0, 1]``), or a tensor ``(2 or 4, H, W)`` or ``(B, 2 or 4, H, W)`` in ``[0, 1]``; alpha is the
    last channel. 1 = transparent = generate, 0 = opaque = keep.

    This is about the picture's own alpha (an editor's "erase to transparency", or a canvas left
    transparent around a picture). A separate *mask file* with alpha follows docs/design.md, section 6
    instead: there transparency counts as keep.
    """
    if isinstance(image, Image.Image):
        if not (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info):
            raise ValueError(f"image mode {image.mode} has no alpha channel")
        alpha = np.asarray(image.convert("RGBA").getchannel("A"))
        return torch.from_numpy(transparent(alpha)).float()[None, None]
    if isinstance(image, np.ndarray):
        array = image if image.ndim == 4 else image[None]
        if array.ndim != 4 or array.shape[-1] not in (2, 4):
            raise ValueError(f"expected an (H, W, 2 or 4) or (B, H, W, 2 or 4) array, got shape {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(transparent(array[..., -1]))).float()[:, None]
    if isinstance(image, torch.Tensor):
        tensor = image if image.ndim == 4 else image[None]
        if tensor.ndim != 4 or tensor.shape[1] not in (2, 4):
            raise ValueError(f"expected a (2 or 4, H, W) or (B, 2 or 4, H, W) tensor, got shape {tuple(image.shape)}")
        return transparent(tensor[:, -1:]).float()
    raise TypeError(f"expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")
