"""cmedit's latent inpainting next to diffusers' ``StableDiffusionInpaintPipeline`` driven by ``LCMScheduler``.

Both run the same tiny random LCM components (4-channel UNet: diffusers' masked-latent blending),
prompt, seed and 4 steps on a 64x64 image with a mask whose edges do not fall on the 8-pixel
latent grid. Printed: how many latents each treats as known although they cover a masked pixel,
how many pixels outside the mask change, and the mean difference of the two results inside the mask.

    PYTHONPATH=. python benchmarks/latent_inpaint_vs_diffusers.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from latent_components import tiny_components  # noqa: E402


def main() -> None:
    from diffusers import StableDiffusionInpaintPipeline

    from cmedit.latent.pipeline import LatentEditPipeline
    from cmedit.latent.projection import latent_mask

    components = tiny_components(Path(tempfile.mkdtemp()))
    ours = LatentEditPipeline(**components)
    theirs = StableDiffusionInpaintPipeline(**components, requires_safety_checker=False)
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    image = (rng.random((64, 64, 3)) * 255).round().astype(np.uint8)
    mask = np.zeros((64, 64), dtype=bool)
    mask[19:45, 13:37] = True  # edges off the 8-pixel grid

    mask_t = torch.from_numpy(mask)[None, None].float()
    nearest = F.interpolate(mask_t, size=(8, 8))  # diffusers' prepare_mask_latents
    touched = F.max_pool2d(mask_t, 8)  # latents whose 8x8 block holds a masked pixel
    grown = latent_mask(mask_t, 8, grow=1)
    print(f"latents covering a masked pixel: {int(touched.sum())} of 64")
    print(f"  diffusers treats {int((touched * (1 - nearest)).sum())} of them as known (nearest-neighbour mask)")
    print(f"  cmedit treats {int((touched * (1 - grown)).sum())} as known; its grown mask generates "
          f"{int(grown.sum())} latents")

    from PIL import Image

    kwargs = dict(prompt="a red car", guidance_scale=8.0, num_inference_steps=4)
    a = np.asarray(ours.inpaint(image, mask, generator=torch.Generator().manual_seed(0),
                                **kwargs).images[0]).astype(int)
    b = np.asarray(theirs(image=Image.fromarray(image), mask_image=Image.fromarray(mask.astype(np.uint8) * 255),
                          height=64, width=64, strength=1.0, generator=torch.Generator().manual_seed(0),
                          **kwargs).images[0]).astype(int)
    for name, result in (("cmedit", a), ("diffusers", b)):
        changed = (result[~mask] != image[~mask]).any(axis=-1).mean()
        print(f"{name}: pixels outside the mask changed: {changed:.1%}, "
              f"mean |change| outside {np.abs(result[~mask] - image[~mask]).mean():.2f}/255")
    print(f"mean |cmedit - diffusers| inside the mask: {np.abs(a[mask] - b[mask]).mean():.2f}/255")


if __name__ == "__main__":
    main()
