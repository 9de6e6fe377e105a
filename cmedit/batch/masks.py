"""A mask per image: mask files matched to images by stem (``photo.jpg`` <- ``photo.png`` or ``photo_mask.png``)."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable

from ..io.files import FORMATS


def mask_candidates(folder: str | Path | None = None, pattern: str | None = None) -> list[Path]:
    """The image files of ``folder`` (not recursive) or those matching the glob ``pattern``, sorted."""
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder")
        return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in FORMATS)
    return sorted(Path(match) for match in glob.glob(str(pattern)) if Path(match).is_file())


def match_masks(images: Iterable[Path], masks: Iterable[Path]) -> dict[Path, Path | str]:
    """Each image's mask: the mask whose stem is the image's stem, or the image's stem + ``_mask``;
    a string saying why where there is none or more than one."""
    by_stem: dict[str, list[Path]] = {}
    for mask in masks:
        by_stem.setdefault(mask.stem, []).append(mask)
    matched: dict[Path, Path | str] = {}
    for image in images:
        found = [mask for stem in (image.stem, f"{image.stem}_mask") for mask in by_stem.get(stem, [])
                 if mask.resolve() != image.resolve()]
        if len(found) == 1:
            matched[image] = found[0]
        elif not found:
            matched[image] = f"no mask named {image.stem}.* or {image.stem}_mask.*"
        else:
            matched[image] = f"several masks match: {', '.join(map(str, found))}"
    return matched
