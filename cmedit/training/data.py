"""Training images: a .npy array (N, H, W, 3) uint8 or a folder of image files, as a [-1, 1] tensor (design.md, section 1)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_images(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Load all images as a float tensor (N, 3, H, W) in [-1, 1]; folders are read in sorted order, resized to `size`."""
    path = Path(path)
    if path.suffix == ".npy":
        arr = np.load(path)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"{path}: expected uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
        if size is not None and arr.shape[1:3] != (size, size):
            arr = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.LANCZOS)) for a in arr])
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no image files")
        imgs = [Image.open(f).convert("RGB") for f in files]
        if size is None:
            size = imgs[0].size[0]
        arr = np.stack([np.asarray(im.resize((size, size), Image.LANCZOS)) for im in imgs])
    else:
        raise ValueError(f"{path}: expected a .npy file or a folder of images")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


def random_batch(
    images: torch.Tensor, batch_size: int, generator: torch.Generator, hflip: bool = True
) -> torch.Tensor:
    """Draw a batch with replacement using `generator` (so a saved generator state resumes exactly), random h-flips."""
    idx = torch.randint(len(images), (batch_size,), generator=generator)
    batch = images[idx]
    if hflip:
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
    return batch
