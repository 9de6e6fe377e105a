"""Make the model card's pictures: sample grids and edit demos on held-out emoji.

    python scripts/model_card_assets.py --model cmedit/default_model --out docs/default_model

Writes ``samples_1step.png``, ``samples_2step.png`` (``--timesteps``), ``samples_4step.png``
(``--steps 4``; 64 samples each, seed 0),
``edits.png``: rows of held-out images with, left to right, the input to each edit and its
result: a missing quarter (inpainting), the grey version (colorization) and an 8x8 version
(4x super-resolution), each shown at 4x size with nearest-neighbour enlargement, edited with the
model's default edit schedule (``--edit-timesteps`` to choose another); and
``img2img.png``: the stroke paintings ``samples/strokes_*.png``, then ``pipe.img2img`` of each
at rising strength (2 steps, seed 0); with ``--teacher DIR``, also ``teacher_ode.png``: that
denoiser's probability-flow ODE samples (``--teacher-levels`` Heun levels) from the same 64 noises
as ``samples_1step.png``, what the consistency model is distilled towards.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import make_image_grid
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from cmedit import load_pipeline
from cmedit.io.tensors import tensor_to_uint8
from cmedit.training.consistency import unet_denoiser
from cmedit.training.trajectories import solve_trajectories, trajectory_sigmas


def enlarge(image: Image.Image, size: int) -> Image.Image:
    return image.convert("RGB").resize((size, size), Image.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    parser.add_argument("--heldout", default="samples/heldout", help="folder of held-out PNGs")
    parser.add_argument("--out", default="docs/default_model")
    parser.add_argument("--timesteps", default="18,0",
                        help="2-step schedule of the sample grid (MODEL_CARD.md, \"Recommended timesteps\")")
    parser.add_argument("--edit-timesteps", default=None,
                        help="schedule of the edit figure (default: the model's edit default, as the CLI)")
    parser.add_argument("--rows", type=int, default=8, help="held-out images in the edit figure")
    parser.add_argument("--strokes", default="samples", help="folder of the strokes_*.png paintings")
    parser.add_argument("--strengths", default="0.3,0.4,0.5,0.6,0.75", help="img2img strengths, one column each")
    parser.add_argument("--teacher", default=None, metavar="DIR",
                        help="also write teacher_ode.png: this denoiser's ODE samples from samples_1step.png's noise")
    parser.add_argument("--teacher-levels", type=int, default=18, help="Heun levels of the teacher's ODE")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    two_step = [int(t) for t in args.timesteps.split(",")]

    for name, schedule in (("samples_1step", {"num_inference_steps": 1}),
                           ("samples_2step", {"num_inference_steps": None, "timesteps": two_step}),
                           ("samples_4step", {"num_inference_steps": 4})):
        images = pipe.generate(batch_size=64, generator=torch.Generator().manual_seed(0), **schedule).images
        make_image_grid([enlarge(image, 64) for image in images], rows=8, cols=8).save(out / f"{name}.png")
    if args.teacher is not None:
        teacher = load_pipeline(args.teacher)
        shape = (64, pipe.unet.config.in_channels, pipe.resolution, pipe.resolution)
        noise = randn_tensor(shape, generator=torch.Generator().manual_seed(0))  # pipe.generate's draw above
        with torch.no_grad():
            _, ends = solve_trajectories(unet_denoiser(teacher.unet, teacher.scheduler), noise,
                                         trajectory_sigmas(args.teacher_levels), teacher.scheduler.config.sigma_min)
        images = [Image.fromarray(array) for array in tensor_to_uint8(ends)]
        make_image_grid([enlarge(image, 64) for image in images], rows=8, cols=8).save(out / "teacher_ode.png")

    files = sorted(Path(args.heldout).glob("*.png"))
    picks = [files[i] for i in np.linspace(0, len(files) - 1, args.rows).astype(int)]
    originals = [Image.open(path).convert("RGB") for path in picks]
    size = pipe.resolution
    mask = np.zeros((size, size), np.uint8)
    mask[size // 2:, size // 2:] = 255
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    schedule = {} if args.edit_timesteps is None else {"timesteps": [int(t) for t in args.edit_timesteps.split(",")]}
    inpainted = pipe.inpaint(originals, Image.fromarray(mask), generator=g(), **schedule).images
    greys = [image.convert("L") for image in originals]
    colorized = pipe.colorize(greys, generator=g(), **schedule).images
    smalls = [image.resize((size // 4, size // 4), Image.BOX) for image in originals]
    upscaled = pipe.super_resolve(smalls, factor=4, kernel="box", generator=g(), **schedule).images

    holes = []
    for image in originals:
        array = np.asarray(image).copy()
        array[mask > 0] = 0
        holes.append(Image.fromarray(array))
    cells = []
    for row in zip(originals, holes, inpainted, greys, colorized, smalls, upscaled):
        cells += [enlarge(image, 4 * size) for image in row]
    make_image_grid(cells, rows=len(originals), cols=7).save(out / "edits.png")

    paintings = [Image.open(path).convert("RGB") for path in sorted(Path(args.strokes).glob("strokes_*.png"))]
    strengths = [float(s) for s in args.strengths.split(",")]
    cells = []
    for painting in paintings:
        cells.append(enlarge(painting, 4 * size))
        for strength in strengths:
            image = pipe.img2img(painting, strength=strength, num_inference_steps=2, generator=g()).images[0]
            cells.append(enlarge(image, 4 * size))
    make_image_grid(cells, rows=len(paintings), cols=1 + len(strengths)).save(out / "img2img.png")
    print(f"wrote {out}/samples_1step.png, samples_2step.png, samples_4step.png, edits.png "
          "(columns: original | quarter missing | inpainted | grey | colorized | 8x8 | 4x super-resolved), "
          f"img2img.png (columns: painting | strength {' | '.join(map(str, strengths))})"
          + (", teacher_ode.png" if args.teacher is not None else ""))


if __name__ == "__main__":
    main()
