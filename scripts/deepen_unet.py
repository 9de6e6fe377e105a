"""Give a model folder's UNet one more layer per block without changing what it computes.

    python scripts/deepen_unet.py cmedit/default_model -o runs/deep_default     # docs/training.md

The output is a copy of the input folder (scheduler, ``model_index.json``, ``cmedit.json``) whose UNet has
``layers_per_block`` one higher, the new layers starting as identities (``cmedit.training.model.deepen_unet``).
From the default model's architecture (the ``small`` preset) this gives the ``base`` preset's, so that
``cmedit train --preset base --init-from OUT`` goes on training in the deeper network from the same function.
An existing output folder is refused unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from diffusers import UNet2DModel

from cmedit.training.model import count_parameters, deepen_unet


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a diffusers model folder with a unet/ subfolder")
    p.add_argument("-o", "--out", type=Path, required=True, help="the deepened model folder")
    p.add_argument("--overwrite", action="store_true", help="replace the output folder")
    args = p.parse_args(argv)

    if not (args.folder / "unet" / "config.json").is_file():
        sys.exit(f"error: {args.folder / 'unet' / 'config.json'} not found")
    if args.out.exists() and not args.overwrite:
        sys.exit(f"error: {args.out} exists (--overwrite to replace it)")
    unet = UNet2DModel.from_pretrained(args.folder, subfolder="unet")
    try:
        deep = deepen_unet(unet)
    except ValueError as err:
        sys.exit(f"error: {err}")

    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(args.folder, tmp, ignore=shutil.ignore_patterns("unet"))
    deep.save_pretrained(tmp / "unet", safe_serialization=True)
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"wrote {args.out}: layers_per_block {unet.config.layers_per_block} -> {deep.config.layers_per_block}, "
          f"{count_parameters(unet):,} -> {count_parameters(deep):,} parameters")


if __name__ == "__main__":
    main()
