"""Conversions at the edges: files, PIL images and arrays to ``(B, C, H, W)`` tensors in ``[-1, 1]`` and back.

Accepted image inputs (one image, or a list of them for a batch):

- ``PIL.Image.Image`` of any mode (converted to RGB; EXIF orientation honoured for files);
- ``numpy.ndarray`` ``(H, W)``, ``(H, W, C)`` or ``(B, H, W, C)``: ``uint8`` in ``[0, 255]`` or float
  in ``[0, 1]`` (what diffusers returns for ``output_type="np"``);
- ``torch.Tensor`` ``(C, H, W)`` or ``(B, C, H, W)`` float in ``[0, 1]`` (diffusers' ``output_type="pt"``).

Mask polarity (design.md, section 6), defined here once: white (value >= 0.5 of full scale after
conversion to one channel) marks pixels to GENERATE, black marks pixels to KEEP. For images with
alpha, transparency counts as keep: the mask value is grey level times alpha.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .operators import LUMINANCE

ImageInput = Union[Image.Image, np.ndarray, torch.Tensor]
ImageBatchInput = Union[ImageInput, Sequence[ImageInput]]

WRITABLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


class ImageReadError(ValueError):
    """A file that cannot be used as an image or mask; the message is one line naming the file."""


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
    parts = [_single_to_float(image, gray=False) for image in _as_list(images)]
    _check_same_size(parts)
    return torch.cat(parts) * 2 - 1


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


def read_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully, with EXIF orientation applied; ``ImageReadError`` on any failure."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file PIL can read") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{path}: refused, too many pixels ({error})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(f"{path}: cannot read image ({error})") from None
    if image.width == 0 or image.height == 0:
        raise ImageReadError(f"{path}: image has zero size")
    return image


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Validate an output file path before any work is done; returns it as a ``Path``."""
    path = Path(path)
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise ValueError(f"{path}: unknown output format {path.suffix or '(no extension)'!r}; "
                         f"use one of {', '.join(sorted(WRITABLE_SUFFIXES))}")
    if path.exists() and not overwrite:
        raise ValueError(f"{path}: already exists (pass --overwrite to replace it)")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory")
    return path


def save_image(image: Image.Image, path: str | os.PathLike) -> None:
    """Write ``image`` to ``path`` atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        image.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
