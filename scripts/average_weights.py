"""Average the UNet weights of two or more model folders of one architecture.

    python scripts/average_weights.py runs/anchored_a runs/anchored_b/export -o runs/average   # docs/training.md

The output is a copy of the first folder (scheduler, ``model_index.json``, ``cmedit.json``) whose
``unet/diffusion_pytorch_model.safetensors`` holds the weighted mean of every tensor, computed in
float32 and stored in the first folder's dtypes (``--weights`` for a ratio other than equal).
Folders whose tensors differ in names or shapes are refused, and so is an existing output folder
unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file, save_file

WEIGHTS = Path("unet") / SAFETENSORS_WEIGHTS_NAME


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="diffusers model folders (at least two)")
    p.add_argument("-o", "--out", type=Path, required=True, help="the averaged model folder")
    p.add_argument("--weights", type=lambda s: [float(v) for v in s.split(",")], default=None,
                   help="comma-separated mixing weights, one per folder (normalised to sum 1)")
    p.add_argument("--overwrite", action="store_true", help="replace the output folder")
    args = p.parse_args(argv)

    if len(args.folders) < 2:
        sys.exit("error: give at least two model folders")
    mix = args.weights or [1.0] * len(args.folders)
    if len(mix) != len(args.folders) or min(mix) < 0 or sum(mix) <= 0:
        sys.exit("error: --weights needs one non-negative number per folder, not all zero")
    mix = [w / sum(mix) for w in mix]
    for folder in args.folders:
        if not (folder / WEIGHTS).is_file():
            sys.exit(f"error: {folder / WEIGHTS} not found")
    if args.out.exists() and not args.overwrite:
        sys.exit(f"error: {args.out} exists (--overwrite to replace it)")

    states = [load_file(folder / WEIGHTS) for folder in args.folders]
    first = states[0]
    for folder, state in zip(args.folders[1:], states[1:]):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            sys.exit(f"error: {folder} does not have the architecture of {args.folders[0]}")
    averaged = {
        name: sum(w * state[name].float() for w, state in zip(mix, states)).to(tensor.dtype).contiguous()
        for name, tensor in first.items()
    }

    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.folders[0], args.out)
    save_file(averaged, args.out / WEIGHTS, metadata={"format": "pt"})
    print(f"wrote {args.out} ({', '.join(f'{w:g} x {f}' for w, f in zip(mix, args.folders))})")


if __name__ == "__main__":
    main()
