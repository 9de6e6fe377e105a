"""Measure how emoji-like a model's samples are, per sampling schedule (``cmedit.evaluation.features``).

    python scripts/sample_quality.py train                 # -> checkpoints/twemoji32_features/
    python scripts/sample_quality.py measure --timesteps 0 --timesteps 22,0 --timesteps 12,0

``train`` fits the feature network (a small CNN) to the Unicode subcategories of the Twemoji
training images (``data/``, from ``python scripts/prepare_twemoji.py``) and reports its accuracy on
the held-out designs, which it never saw. ``measure`` draws ``--num-samples`` samples per schedule
and prints their Frechet distance (FD), kernel distance (KID, x1000) and classifier confidence
against the training set's base designs (one image per design, skin-tone variants left out: the
default model draws designs equally), next to two rows of real images for scale: the held-out
base designs (150), and the training base designs (a random half against the other half). FD
grows as the count falls, so compare FD only between rows of equal count; KID is unbiased, so it
compares across counts (with more spread for fewer images).

``measure --low-model M2`` evaluates the levels below ``--split`` (sigma 10) with another model, from
the same noise: with one model's first step and another's later ones, it shows which levels decide a
schedule's sample quality.

``measure --trajectories RUN_DIR/trajectories`` also scores the ends of a trajectory cache (``cmedit
train --teacher-trajectories``): the teacher's own ODE samples, the targets a student trained on
them regresses onto.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from diffusers.utils.torch_utils import randn_tensor

from cmedit.evaluation.features import (
    load_feature_net,
    sample_scores,
    save_feature_net,
    to_tensor,
    top_k_accuracy,
    train_feature_net,
)
from cmedit.core.sampler import sample
from cmedit.training.trajectories import chunk_file

FEATURES = "checkpoints/twemoji32_features"


class LevelSplitUNet(nn.Module):
    """Two networks as one: ``high`` at noise levels at or above ``split``, ``low`` below it.

    :func:`cmedit.core.sampler.sample` takes it in place of a ``UNet2DModel``. A diagnostic: sampling
    with the first evaluation of one model and the later ones of another shows which levels decide a
    schedule's sample quality. The sigma is read back from the network's timestep input
    (``c_noise = 250 log sigma``, docs/design.md section 1); a batch has one level, as in sampling.
    """

    def __init__(self, high: nn.Module, low: nn.Module, split: float) -> None:
        super().__init__()
        if split <= 0:
            raise ValueError(f"split must be a positive sigma, got {split}")
        self.high, self.low, self.split = high, low, split

    def forward(self, x: torch.Tensor, timestep, class_labels=None, return_dict: bool = False):
        levels = torch.as_tensor(timestep, dtype=torch.float64).flatten()
        if len(levels) > 1 and not torch.all(levels == levels[0]):
            raise ValueError("LevelSplitUNet takes one noise level per batch")
        sigma = math.exp(levels[0].item() / 250)
        network = self.high if sigma >= self.split else self.low
        return network(x, timestep, class_labels=class_labels, return_dict=return_dict)


def base_designs(images: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The first image of each design (the base emoji; its skin-tone variants follow it)."""
    _, first = np.unique(groups, return_index=True)
    return images[np.sort(first)]


def train(args: argparse.Namespace) -> None:
    data = Path(args.data_dir)
    names = json.loads((data / "twemoji32_subcategories.json").read_text())
    x, y = np.load(data / "twemoji32_train.npy"), np.load(data / "twemoji32_train_labels.npy")
    hx, hy = np.load(data / "twemoji32_heldout.npy"), np.load(data / "twemoji32_heldout_labels.npy")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    net = train_feature_net(x, y, num_classes=len(names), epochs=args.epochs, width=args.width, seed=args.seed)
    minutes = (time.perf_counter() - start) / 60
    accuracy = {f"{split}_top{k}": round(top_k_accuracy(net, ix, iy, k=k), 4)
                for split, ix, iy in (("train", x, y), ("heldout", hx, hy)) for k in (1, 5)}
    print(f"{minutes:.1f} min; accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    save_feature_net(net, args.out, labels="Unicode subcategories of data/twemoji32_subcategories.json",
                     epochs=args.epochs, seed=args.seed, train_minutes=round(minutes, 1), accuracy=accuracy,
                     torch=torch.__version__, machine=platform.processor() or platform.machine())
    print(f"wrote {args.out}")


def generate(pipe, timesteps: list[int], num_samples: int, seed: int, batch_size: int,
             low_unet=None, split: float = 10.0) -> torch.Tensor:
    """``num_samples`` samples in ``[0, 1]``, ``(N, 3, H, W)``, from one seeded generator.

    With ``low_unet``: levels below ``split`` are evaluated by it instead (:class:`LevelSplitUNet`),
    from the same noise and draws as ``pipe.generate``.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = []
    if low_unet is not None:
        unet, scheduler = LevelSplitUNet(pipe.unet, low_unet, split), pipe.scheduler
        channels, size = pipe.unet.config.in_channels, pipe.resolution
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        if low_unet is None:
            batches.append(pipe.generate(batch_size=n, generator=generator, output_type="pt",
                                         num_inference_steps=None, timesteps=timesteps).images)
            continue
        with torch.inference_mode():
            x = randn_tensor((n, channels, size, size), generator=generator) * scheduler.init_noise_sigma
            scheduler.set_timesteps(timesteps=timesteps)
            batches.append(sample(unet, scheduler, x, generator=generator).add(1).div(2).clamp(0, 1))
    return torch.cat(batches)


def measure(args: argparse.Namespace) -> None:
    from cmedit import load_pipeline

    torch.set_num_threads(args.threads)
    data = Path(args.data_dir)
    train_images = np.load(data / "twemoji32_train.npy")
    groups = np.load(data / "twemoji32_train_groups.npy")
    reference = base_designs(train_images, groups)
    heldout = base_designs(np.load(data / "twemoji32_heldout.npy"), np.load(data / "twemoji32_heldout_groups.npy"))
    net = load_feature_net(args.features)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    low_unet = load_pipeline(args.low_model).unet if args.low_model else None

    rows = []

    def score(name: str, samples, against=reference) -> None:
        result = {"rows": name, "n": len(samples), **sample_scores(net, against, samples, seed=args.seed)}
        rows.append(result)
        print(f"{name:>24}  n {result['n']:5d}  FD {result['fd']:8.2f}  KID x1000 {1000 * result['kid']:7.2f} "
              f"± {1000 * result['kid_std']:5.2f}  confidence {result['confidence']:.3f}", flush=True)

    halves = np.random.default_rng(args.seed).permutation(len(reference))
    half = len(reference) // 2
    score("train base, half vs half", reference[halves[:half]], against=reference[halves[half:]])
    score("held-out base designs", heldout)
    if args.trajectories:
        cache = Path(args.trajectories)
        ends = []
        while chunk_file(cache, len(ends)).exists():
            ends.append(np.load(chunk_file(cache, len(ends)))["ends"])
        if not ends:
            raise SystemExit(f"{cache}: no trajectory chunks (chunk0000.npz, ...)")
        ends = torch.from_numpy(np.concatenate(ends)[:args.num_samples]).float().add(1).div(2).clamp(0, 1)
        score(f"ODE ends {cache.parent.name}", ends)
    for schedule in args.timesteps:
        timesteps = [int(t) for t in schedule.split(",")]
        start = time.perf_counter()
        samples = generate(pipe, timesteps, args.num_samples, args.seed, args.batch_size, low_unet, args.split)
        score(f"timesteps {schedule}" + (f" low {args.split:g}" if low_unet is not None else ""), samples)
        rows[-1]["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model or "default", "trajectories": args.trajectories,
            "low_model": args.low_model, "split": args.split if args.low_model else None,
            "features": args.features, "seed": args.seed,
            "reference": f"{len(reference)} training base designs", "rows": rows,
            "torch": torch.__version__,
        }, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "measure"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", default="data", help="folder of prepare_twemoji.py's arrays")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--seed", type=int, default=0)
    p = sub.choices["train"]
    p.add_argument("--out", default=FEATURES)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--width", type=int, default=32, help="channels of the first level (then x2, x4)")
    p = sub.choices["measure"]
    p.add_argument("--features", default=FEATURES, help="folder written by `train`")
    p.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    p.add_argument("--timesteps", action="append", default=[],
                   help="one schedule, e.g. 0 (one step) or 22,0; repeat the option to compare several")
    p.add_argument("--trajectories", default=None, metavar="DIR",
                   help="also score the first --num-samples ends of this trajectory cache (RUN_DIR/trajectories)")
    p.add_argument("--low-model", default=None, metavar="DIR",
                   help="evaluate the levels below --split with this model (a diagnostic: which levels decide "
                        "a schedule's quality); --model evaluates the others")
    p.add_argument("--split", type=float, default=10.0, help="the sigma that splits the levels for --low-model")
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    train(args) if args.command == "train" else measure(args)


if __name__ == "__main__":
    main()
