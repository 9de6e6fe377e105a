"""Conversions at the edges: PIL images and arrays to ``(B, C, H, W)`` tensors in ``[-1, 1]`` and back.

Accepted image inputs (one image, or a list of them for a batch):

- ``PIL.Image.Image`` of any mode (converted to RGB; EXIF orientation honoured for files);
- ``numpy.ndarray`` ``(H, W)``, ``(H, W, C)`` or ``(B, H, W, C)``: ``uint8`` in ``[0, 255]`` or float
  in ``[0, 1]`` (what diffusers returns for ``output_type="np"``);
- ``torch.Tensor`` ``(C, H, W)`` or ``(B, C, H, W)`` float in ``[0, 1]`` (diffusers' ``output_type="pt"``).

Mask polarity (docs/design.md, section 6), defined here once: white (value >= 0.5 of full scale after
conversion to one channel) marks pixels to GENERATE, black marks pixels to KEEP. For images with
alpha, transparency counts as keep: the mask value is grey level times alpha.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.operators import LUMINANCE

ImageInput = Union[Image.Image, np.ndarray, torch.Tensor]
ImageBatchInput = Union[ImageInput, Sequence[ImageInput]]

def _as_list(images: ImageBatchInput) -> list[ImageInput]:
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("empty list of images")
        return list(images)
    return [images]


def _single_to_float(image: ImageInput, gray: bool) -> torch.Tensor:
    """One image (or an already batched array/tensor) to ``(B, C, H, W)`` float in ``[0, 1]``."""
    if isinstance(image, Image.Image):
        if gray:
            image = _flatten_alpha_mask(image)
        else:
            image = image.convert("RGB")
        image = np.asarray(image)
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
        elif array.dtype == np.bool_:
            array = array.astype(np.float32)
        elif not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"unsupported array dtype {array.dtype}: use uint8 or float in [0, 1]")
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4:
            raise ValueError(f"image arrays must be (H, W), (H, W, C) or (B, H, W, C), got shape {image.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu().float()
        if tensor.ndim == 2:
            tensor = tensor[None, None]
        elif tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4:
            raise ValueError(f"image tensors must be (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}")
    else:
        raise TypeError(f"expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    if tensor.numel() == 0:
        raise ValueError(f"image has zero size (shape {tuple(tensor.shape)})")
    if not torch.isfinite(tensor).all():
        raise ValueError("image contains NaN or infinite values")
    if tensor.min() < 0 or tensor.max() > 1:
        raise ValueError("float images must lie in [0, 1] (uint8 arrays in [0, 255])")
    channels = tensor.shape[1]
    if gray:
        return _to_one_channel(tensor)
    if channels == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    elif channels == 4:
        tensor = tensor[:, :3]
    elif channels != 3:
        raise ValueError(f"images must have 1, 3 or 4 channels, got {channels}")
    return tensor


def _to_one_channel(tensor: torch.Tensor) -> torch.Tensor:
    """Grey level (BT.601 luma, as PIL's mode L) times alpha, for 1-4 channel mask arrays."""
    channels = tensor.shape[1]
    if channels in (1, 2):
        grey = tensor[:, :1]
    elif channels in (3, 4):
        weights = torch.tensor(LUMINANCE, dtype=tensor.dtype).view(1, 3, 1, 1)
        grey = (tensor[:, :3] * weights).sum(dim=1, keepdim=True)
    else:
        raise ValueError(f"masks must have 1 to 4 channels, got {channels}")
    if channels in (2, 4):
        grey = grey * tensor[:, -1:]
    return grey


def images_to_tensor(images: ImageBatchInput) -> torch.Tensor:
    """Image(s) to a ``(B, 3, H, W)`` float32 tensor in ``[-1, 1]``; greyscale is replicated to RGB."""
    return torch.cat(image_parts(images)) * 2 - 1


def image_parts(images: ImageBatchInput) -> list[torch.Tensor]:
    """The checked pieces of :func:`images_to_tensor` before it joins them: ``(b, 3, H, W)`` float32 in
    ``[0, 1]``, views of float32 arrays where the input is one (greyscale expanded, not copied).
    ``cmedit.fullres.bands.FullSizeImages`` scales them a window at a time."""
    parts = [_single_to_float(image, gray=False) for image in _as_list(images)]
    _check_same_size(parts)
    return parts


def transparent(alpha: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The rule for a picture's own alpha, defined here once: a pixel is transparent (to fill) below half
    of full scale (``uint8`` alpha < 128, float alpha < 0.5). Returns a boolean array or tensor."""
    half = 128 if alpha.dtype in (np.uint8, torch.uint8) else 0.5
    return alpha < half


def masks_to_tensor(masks: ImageBatchInput) -> torch.Tensor:
    """Mask(s) to a ``(B, 1, H, W)`` float tensor of 0 (keep) and 1 (generate), threshold at 50%."""
    parts = [_single_to_float(mask, gray=True) for mask in _as_list(masks)]
    _check_same_size(parts)
    return (torch.cat(parts) >= 0.5).float()


def _flatten_alpha_mask(image: Image.Image) -> Image.Image:
    """A mask image to mode L; transparent pixels become black (keep)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        grey = np.asarray(rgba.convert("L"), dtype=np.float32)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        return Image.fromarray(np.round(grey * alpha).astype(np.uint8), mode="L")
    if image.mode in ("I;16", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode != "F" else max(float(array.max()), 1.0)
        return Image.fromarray(np.round(np.clip(array / top, 0, 1) * 255).astype(np.uint8), mode="L")
    return image.convert("L")


def _check_same_size(parts: list[torch.Tensor]) -> None:
    sizes = {tuple(part.shape[-2:]) for part in parts}
    if len(sizes) > 1:
        raise ValueError(f"all images in a batch must have the same size, got {sorted(sizes)}")


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` in ``[-1, 1]`` to ``(B, H, W, C)`` uint8, rounding to the nearest level."""
    x = ((x.float() + 1) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize of ``(B, C, H, W)`` in ``[-1, 1]``; the result is clipped to ``[-1, 1]``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
