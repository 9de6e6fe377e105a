"""How far models' denoisers are from a reference model's at given noise levels (the "held levels").

    python scripts/held_level_gap.py --reference cmedit/default_model runs/anchored/export

The anchored trajectory runs (docs/model_history.md) train the levels above
``--anchor-below`` on a teacher's ODE trajectories and hold the levels below it to an anchor model's
outputs; the edits' low levels live there. This measures how closely they were held: every image of
IMAGES (a folder or a .npy, as ``cmedit train`` reads them) is noised at each sigma with the same
noise for every model, and the table gives the root-mean-square difference, in [-1, 1] pixel units,
of each model's denoised output from the reference's (and, for scale, each one's from the clean
images). Models must be unconditional and match the images' channels and size.
"""

from __future__ import annotations

import argparse
import sys

import torch


def _sigmas(text: str) -> list[float]:
    values = [float(v) for v in text.split(",")]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("give positive noise levels, comma-separated")
    return values


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model folders (or anything `cmedit --model` takes)")
    p.add_argument("--reference", required=True, help="the model the others are compared with (e.g. the anchor)")
    p.add_argument("--images", default="samples/heldout", help="held-out images  [default: samples/heldout]")
    p.add_argument("--sigmas", type=_sigmas, default=[3.52, 0.5], help="noise levels  [default: 3.52,0.5]")
    p.add_argument("--seed", type=int, default=0, help="noise seed  [default: 0]")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from cmedit.training.data import load_images
    from cmedit.training.loop import load_teacher

    device = torch.device("cpu")
    try:
        images = load_images(args.images)
        reference = load_teacher(args.reference, images, device, role="reference")[0]
        models = {name: load_teacher(name, images, device, role="model")[0]
                  for name in args.models if name != args.reference}
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")

    gen = torch.Generator().manual_seed(args.seed)
    n = len(images)
    print(f"{n} images of {args.images}, noise seed {args.seed}; RMS difference of the denoised outputs\n")
    print("| model | " + " | ".join(f"sigma {s:g}: from reference | from image" for s in args.sigmas) + " |")
    print("|---|" + "---:|---:|" * len(args.sigmas))
    sq = {name: [[0.0, 0.0] for _ in args.sigmas] for name in [args.reference, *args.models]}
    with torch.inference_mode():
        for i, sigma in enumerate(args.sigmas):
            noise = torch.randn(images.shape, generator=gen)
            for start in range(0, n, args.batch_size):
                x0 = images[start:start + args.batch_size]
                x_t = x0 + sigma * noise[start:start + args.batch_size]
                t = torch.full((len(x0),), sigma)
                ref = reference(x_t, t).float()
                sq[args.reference][i][1] += ((ref - x0) ** 2).sum().item()
                for name, denoiser in models.items():
                    out = denoiser(x_t, t).float()
                    sq[name][i][0] += ((out - ref) ** 2).sum().item()
                    sq[name][i][1] += ((out - x0) ** 2).sum().item()
    for name, sums in sq.items():
        cells = " | ".join(f"{(a / images.numel()) ** 0.5:.4f} | {(b / images.numel()) ** 0.5:.4f}" for a, b in sums)
        print(f"| {name}{' (reference)' if name == args.reference else ''} | {cells} |")


if __name__ == "__main__":
    main()
