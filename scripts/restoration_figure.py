"""The README's restoration figure: noisy blurred / bicubic-shrunk held-out images, restored four ways.

    python scripts/restoration_figure.py --cm4ir PATH        # -> docs/figures/restoration.png

For each held-out image (``--images``, 32x32 emoji of ``samples/heldout``) two rows, both at noise
level ``NOISE`` (one seeded draw, ``cmedit.evaluation.degradation_tasks.degrade``):

- ``deblur-gauss`` (the eval's Gaussian blur): degraded input | the best classical deconvolution of
  ``cmedit eval`` on these images (Wiener, unsupervised Wiener or Richardson-Lucy, oracle parameters) |
  CM4IR at its published settings | cmedit | original;
- ``sr4-bicubic`` (PIL's antialiased bicubic shrink by 4): input enlarged with nearest neighbour |
  bicubic upsampling | CM4IR | cmedit | original.

CM4IR (Garber & Tirer, CVPR 2025) and cmedit both run 4 network evaluations on the embedded model;
CM4IR's own sampler is imported from ``PATH`` (a checkout or bare git directory of tirer-lab/CM4IR)
through ``benchmarks/cm4ir.py``'s adapter. Without ``--cm4ir`` that column is left out. Prints the
pooled PSNR (scikit-image) of each method per task over the figure's images.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # CM4IR's loop prints a tqdm bar per batch

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmedit.evaluation import degradation_tasks as dt  # noqa: E402
from cmedit.evaluation.runner import pooled_psnr  # noqa: E402
from cmedit.io.files import encode, read_image  # noqa: E402
from cmedit.models.loading import load_pipeline  # noqa: E402

NOISE = 0.025
SEED = 0
TILE = 128
GAP = 6
LABEL_HEIGHT = 16
IMAGES = ("1f603", "1f43b", "1f451")  # grinning face, bear, crown
CLASSICAL = {"wiener": "Wiener", "unsupervised_wiener": "unsup. Wiener", "richardson_lucy": "Richardson-Lucy",
             "bicubic": "bicubic"}


def restorations(pipe, cm4ir, name: str, truths: list[np.ndarray]) -> tuple[list[str], list[list[np.ndarray]]]:
    """Column labels and, per column, the uint8 ``(32, 32, 3)`` tiles of task ``name`` for ``truths``."""
    from benchmarks import cm4ir as bench

    y = dt.degrade(name, truths, NOISE, seed=SEED)
    if name.startswith("sr"):
        inputs = [np.asarray(Image.fromarray(dt.to_uint8(m)).resize(t.shape[1::-1], Image.NEAREST))
                  for m, t in zip(y, truths)]
        input_label = f"x4 bicubic + noise {NOISE:g}"
    else:
        inputs = [dt.to_uint8(m) for m in y]
        input_label = f"blur {dt.GAUSS_SIGMA:g} + noise {NOISE:g}"
    candidates = {method: run() for method, run in dt.baselines(name, y, NOISE, truths).items()
                  if method in CLASSICAL}
    best = max(candidates, key=lambda method: pooled_psnr(truths, candidates[method]))
    labels, columns = [input_label, CLASSICAL[best]], [inputs, candidates[best]]
    if cm4ir is not None:
        kind = "sr" if name.startswith("sr") else "deblur"
        labels.append("CM4IR (4 NFE)")
        columns.append(bench.run_cm4ir(cm4ir, pipe, name, y, NOISE, SEED, bench.PUBLISHED[(kind, NOISE)]))
    labels.append("cmedit (4 NFE)")
    columns.append(bench.run_cmedit(pipe, name, y, NOISE, SEED))
    labels.append("original")
    columns.append(truths)
    for label, column in zip(labels[1:-1], columns[1:-1]):
        print(f"{name} noise {NOISE:g}: {label}: PSNR {pooled_psnr(truths, column):.2f} dB over {len(truths)} images")
    return labels, columns


def tile(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image).resize((TILE, TILE), Image.NEAREST)


def figure(blocks: list[tuple[list[str], list[list[np.ndarray]]]]) -> Image.Image:
    """Per task block a row of labels, then one row of tiles per image."""
    n_columns = len(blocks[0][1])
    n_images = len(blocks[0][1][0])
    width = n_columns * TILE + (n_columns - 1) * GAP
    height = len(blocks) * (LABEL_HEIGHT + n_images * (TILE + GAP)) + GAP
    out = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(out)
    top = 0
    for labels, columns in blocks:
        for c, label in enumerate(labels):
            x = c * (TILE + GAP)
            text_width = draw.textlength(label)
            draw.text((x + (TILE - text_width) / 2, top + 2), label, fill="black")
        top += LABEL_HEIGHT
        for i in range(n_images):
            for c, column in enumerate(columns):
                out.paste(tile(column[i]), (c * (TILE + GAP), top))
            top += TILE + GAP
        top += GAP
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cm4ir", type=Path, default=None, help="CM4IR checkout or its bare git directory")
    parser.add_argument("--images", type=Path, default=Path("samples/heldout"))
    parser.add_argument("--names", default=",".join(IMAGES), help="comma-separated file stems in --images")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/restoration.png"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(SEED)
    cm4ir = None
    if args.cm4ir is None:
        print("no --cm4ir PATH: the CM4IR column is left out", file=sys.stderr)
    else:
        from benchmarks import cm4ir as bench

        cm4ir = bench.load_cm4ir(args.cm4ir)
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    truths = [encode(read_image(args.images / f"{stem}.png").on_white(), None, 8, False, "PNG")
              for stem in args.names.split(",")]
    blocks = [restorations(pipe, cm4ir, name, truths) for name in ("deblur-gauss", "sr4-bicubic")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure(blocks).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
