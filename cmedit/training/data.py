"""Training images: a .npy array (N, H, W, 3) uint8 or a folder of image files, as a [-1, 1] tensor (docs/design.md, section 1)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..io.files import encode, read_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_images(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Load all images as a float tensor (N, 3, H, W) in [-1, 1].

    Folders are read in sorted order; each image is composited on white where transparent, centre-cropped
    to a square and resized to ``size`` (default: the first image's shorter side). Raises ``ValueError``
    with one line naming the file for anything unreadable.
    """
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
        # one-line errors for unreadable files; transparency on white, as scripts/prepare_twemoji.py does
        imgs = [Image.fromarray(encode(read_image(f).on_white(), None, 8, False, "PNG")) for f in files]
        if size is None:
            size = min(imgs[0].size)
        arr = np.stack([np.asarray(ImageOps.fit(im, (size, size), Image.LANCZOS)) for im in imgs])
    else:
        raise ValueError(f"{path}: expected a .npy file or a folder of images")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


def load_group_weights(path: str | Path, num_images: int) -> torch.Tensor:
    """Per-image sampling weights from a .npy of integer group ids: every group gets the same total weight.

    ``weight_i = 1 / (number of images in i's group)``, so a design with many variants (an emoji and its
    skin tones) is drawn as often as a design with one image.
    """
    groups = np.load(path)
    if groups.ndim != 1 or groups.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected a 1-D integer array of group ids, got {groups.dtype} {groups.shape}")
    if len(groups) != num_images:
        raise ValueError(f"{path}: {len(groups)} group ids for {num_images} images")
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return torch.from_numpy(1.0 / counts[inverse])


def random_batch(
    images: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    hflip: bool = True,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw a batch with replacement using `generator` (so a saved generator state resumes exactly), random h-flips.

    ``weights`` (one per image, e.g. from `load_group_weights`) makes the draw proportional to them; uniform if None.
    """
    if weights is None:
        idx = torch.randint(len(images), (batch_size,), generator=generator)
    else:
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
    batch = images[idx]
    if hflip:
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
    return batch
