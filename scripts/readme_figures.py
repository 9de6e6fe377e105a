"""The README's before/after figures, one per command, from the embedded model and samples/.

    python scripts/readme_figures.py            # -> docs/figures/{inpaint,outpaint,colorize,super_resolve,img2img,generate}.png

Each figure is a row of 32x32 images (inputs, then outputs) enlarged with nearest neighbour so that
the pixels stay visible; the settings are the README's commands with seed 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cmedit import load_pipeline

SCALE = 4
GAP = 8


def enlarge(image: Image.Image, size: int) -> Image.Image:
    """Nearest-neighbour enlargement to ``size`` pixels high, keeping the aspect ratio."""
    image = image.convert("RGB")
    return image.resize((image.width * size // image.height, size), Image.NEAREST)


def strip(images: list[Image.Image], height: int = 32 * SCALE) -> Image.Image:
    """The images side by side on white, each enlarged to ``height``."""
    tiles = [enlarge(image, height) for image in images]
    out = Image.new("RGB", (sum(t.width for t in tiles) + GAP * (len(tiles) - 1), height), "white")
    x = 0
    for tile in tiles:
        out.paste(tile, (x, 0))
        x += tile.width + GAP
    return out


def masked_view(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The image with the pixels to fill shown in grey."""
    rgb = np.asarray(image.convert("RGB")).copy()
    rgb[np.asarray(mask.convert("L")) >= 128] = 128
    return Image.fromarray(rgb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=Path("samples"))
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline()
    s = args.samples

    def g() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    face, mask = Image.open(s / "face.png"), Image.open(s / "quarter_mask.png")
    filled = pipe.inpaint(face, mask, generator=g()).images[0]
    strip([masked_view(face, mask), filled]).save(args.out / "inpaint.png")

    # `cmedit outpaint --right 16`: a canvas extended by mirroring, its new border inpainted
    canvas = Image.fromarray(np.pad(np.asarray(face.convert("RGB")), ((0, 0), (0, 16), (0, 0)), mode="symmetric"))
    border = Image.new("L", canvas.size, 0)
    border.paste(255, (32, 0, 48, 32))
    wider = pipe.inpaint(canvas, border, full_resolution=True, generator=g()).images[0]
    strip([masked_view(canvas, border), wider]).save(args.out / "outpaint.png")

    grey = Image.open(s / "face_gray.png")
    strip([grey] + pipe.colorize(grey, num_images_per_prompt=3, generator=g()).images).save(args.out / "colorize.png")

    small = Image.open(s / "face_8x8.png")
    big = pipe.super_resolve(small, factor=4, generator=g()).images[0]
    strip([small.resize((32, 32), Image.NEAREST), big]).save(args.out / "super_resolve.png")

    strokes = Image.open(s / "strokes_face.png")
    redrawn = pipe.img2img(strokes, strength=0.4, num_images_per_prompt=3, generator=g()).images
    strip([strokes] + redrawn).save(args.out / "img2img.png")

    strip(pipe.generate(batch_size=8, generator=g()).images).save(args.out / "generate.png")
    print(f"wrote {args.out}/inpaint.png, outpaint.png, colorize.png, super_resolve.png, img2img.png, generate.png")


if __name__ == "__main__":
    main()
