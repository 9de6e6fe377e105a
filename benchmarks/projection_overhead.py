"""The cost of one step's projection for the real degradations against one network evaluation.

    python benchmarks/projection_overhead.py [--size 64] [--batch 1] [--repeats 50]

On a ``(batch, 3, size, size)`` float32 tensor on the CPU: the noise-free projection ``P(x)`` and the
noisy one (``eta > 0``) for ``Downsample(4, "bicubic")``, ``GaussianBlur(1.5)`` and ``MotionBlur(7, 30)``
(dense), against one forward pass of the embedded model's UNet at the same size (a conv net, so it runs
at any multiple of its resolution). Median of ``--repeats`` after a warm-up; prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cmedit.core.degradations import Downsample, GaussianBlur, MotionBlur
from cmedit.models.loading import load_pipeline


def median_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    pipe = load_pipeline()
    x = torch.randn(args.batch, 3, args.size, args.size)
    t = torch.tensor(100.0)
    with torch.inference_mode():
        network = median_seconds(lambda: pipe.unet(x, t, return_dict=False), args.repeats)
        print(f"{args.batch} x 3 x {args.size} x {args.size}, torch threads {torch.get_num_threads()}: "
              f"one UNet evaluation {network * 1e3:.2f} ms\n")
        print("| operator | P(x) ms | % of a network evaluation | noisy P ms | % |")
        print("|---|---:|---:|---:|---:|")
        for name, op in (("Downsample(4, bicubic)", Downsample(4)), ("GaussianBlur(1.5)", GaussianBlur(1.5)),
                         ("MotionBlur(7, 30) (dense)", MotionBlur(7, 30))):
            y0 = op.pinv(op.A(x))
            exact = median_seconds(lambda: op.project(x, y0), args.repeats)
            noisy = median_seconds(lambda: op.project_noisy(x, y0, 0.01), args.repeats)
            print(f"| {name} | {exact * 1e3:.3f} | {100 * exact / network:.3f} | {noisy * 1e3:.3f} | "
                  f"{100 * noisy / network:.3f} |")


if __name__ == "__main__":
    main()
