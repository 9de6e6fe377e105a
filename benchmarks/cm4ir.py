"""cmedit against CM4IR (Garber & Tirer, CVPR 2025) on the same network, at 4 network evaluations.

    python benchmarks/cm4ir.py --cm4ir PATH [--limit 32] [--tune 16] [--json out.json]

``PATH`` is a checkout of https://github.com/tirer-lab/CM4IR (or its bare git directory, whose
``functions/`` is extracted to a temporary folder). Its code is imported from there, never copied into
cmedit: ``functions/cm4ir_scheme.py``'s ``cm4ir_restoration`` runs on

- the model: the loaded consistency model's ``UNet2DModel`` behind CM4IR's interface
  ``model(c_in x, 250 ln sigma)`` (the same input scaling and noise conditioning, so only the call differs);
- the operator: cmedit's own ``A`` and regularised pseudo-inverse (``A_pinv_add_eta``, the same SVD
  formula as CM4IR's ``svd_operators``) for the task, so both solve the same problem from the same
  measurements (the same noise draw).

Tasks and measurements are ``cmedit.evaluation.degradation_tasks``' (``sr4-bicubic``, ``deblur-gauss``,
``deblur-motion`` at each noise level). Methods, each at 4 network evaluations where it uses the network:

- ``cmedit``: ``pipe.edit`` with the task's operator, 4 steps of its restoration schedule (docs/design.md,
  section 12), the noise-aware projection;
- ``ddnm``: the same but the exact range-null-space projection regardless of noise (DDNM without the +);
- ``cm4ir (published)``: CM4IR at its published settings (``evaluate_CM4IR.sh``): for x4 bicubic SR the
  LSUN settings (the only x4 ones: iN 400 / gamma 0.7 at noise 0.025, iN 250 / gamma 0.2 at 0.05,
  zeta 0); for deblurring LSUN bedroom's Gaussian ones (iN 75 / gamma 0.01 / zeta 3 at 0.025; iN 150 /
  gamma 0.05 / zeta 1 at 0.05); noise 0 takes the 0.025 settings (none are published); motion blur
  takes the Gaussian ones; eta 0.1, deltas 0, mu 1 (its defaults);
- ``cm4ir (tuned)``: the best of a small grid (iN, gamma, zeta) for this model by PSNR on ``--tune``
  images that are not evaluated (the next ones in the folder, images 32-47 by default: among the
  images 32-63 on which cmedit's restoration schedule and noise reuse were chosen);
- the classical baselines of ``cmedit eval``.

Prints a markdown table (PSNR of all pixels pooled, mean SSIM; scikit-image) and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TQDM_DISABLE", "1")  # CM4IR's loop prints a tqdm bar per image batch

import numpy as np
import torch

from cmedit.core import noise as noise_module
from cmedit.evaluation import degradation_tasks as dt
from cmedit.evaluation.runner import counting_forwards, pooled_psnr, ssim
from cmedit.io.files import encode, read_image
from cmedit.models.loading import load_pipeline

STEPS = 4
PUBLISHED = {  # (task kind, noise level) -> (iN, gamma, zeta), from CM4IR's evaluate_CM4IR.sh (LSUN)
    ("sr", 0.025): (400, 0.7, 0.0), ("sr", 0.05): (250, 0.2, 0.0),
    ("deblur", 0.025): (75, 0.01, 3.0), ("deblur", 0.05): (150, 0.05, 1.0),
}
TUNE_GRID = {"iN": (40, 75, 150, 400), "gamma": (0.01, 0.2), "zeta": (0.0, 1.0, 3.0)}


def load_cm4ir(path: Path):
    """``cm4ir_restoration`` from a CM4IR checkout, or from a bare git directory (extracted to a temp folder)."""
    path = Path(path)
    if not (path / "functions" / "cm4ir_scheme.py").is_file():
        target = Path(tempfile.mkdtemp(prefix="cm4ir_"))
        archive = subprocess.run(["git", f"--git-dir={path}", "archive", "HEAD", "functions"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        path = target
    sys.path.insert(0, str(path))
    from functions.cm4ir_scheme import cm4ir_restoration  # noqa: E402  (CM4IR's own code)

    return cm4ir_restoration


class UNetAsCM4IRModel(torch.nn.Module):
    """CM4IR's ``model(c_in x, 250 ln sigma)`` on a diffusers ``UNet2DModel`` (same scaling and conditioning)."""

    def __init__(self, unet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, rescaled_sigma: torch.Tensor, classes=None) -> torch.Tensor:
        t = rescaled_sigma.reshape(-1)[0].to(torch.float32)
        return self.unet(x, t, class_labels=classes, return_dict=False)[0]


class OperatorAsCM4IR:
    """CM4IR's ``A_funcs`` (flattened vectors) on a cmedit ``LinearOperator`` for images of ``size``."""

    def __init__(self, operator, size: tuple[int, int]) -> None:
        self.operator, self.size = operator, size
        self.measurement = operator.measurement_size(size)

    def A(self, vec: torch.Tensor) -> torch.Tensor:
        x = vec.reshape(len(vec), 3, *self.size)
        return self.operator.A(x).reshape(len(vec), -1)

    def A_pinv_add_eta(self, vec: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        m = vec.reshape(len(vec), 3, *self.measurement)
        return self.operator.pinv(m, float(eta)).reshape(len(vec), -1)


def betas() -> torch.Tensor:
    """The linear beta schedule of CM4IR's configs (1e-4 to 0.02 over 1,000 steps)."""
    return torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).float()


def run_cm4ir(cm4ir_restoration, pipe, name, measurements, noise_level, seed, settings):
    """CM4IR's uint8 outputs; ``settings`` = (iN, gamma, zeta)."""
    i_n, gamma, zeta = settings
    operator = dt.task_operator(name)
    size = operator.image_size(measurements[0].shape[:2])
    funcs = OperatorAsCM4IR(operator, size)
    y = torch.from_numpy(np.stack(measurements)).permute(0, 3, 1, 2).float() * 2 - 1
    sigma_y = 2 * noise_level  # CM4IR's [-1, 1] units
    y_flat = y.reshape(len(y), -1)
    x = funcs.A_pinv_add_eta(y_flat, sigma_y**2 * zeta).reshape(len(y), 3, *size)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = cm4ir_restoration(x=x, model=UNetAsCM4IRModel(pipe.unet), A_funcs=funcs, y_0=y_flat, sigma_y=sigma_y,
                                betas=betas(), eta=0.1, deltas=[0.0] * STEPS, deltas_injection_type=0, gamma=gamma,
                                iN=i_n, zeta=zeta, classes=None,
                                config=SimpleNamespace(sampling=SimpleNamespace(T_sampling=STEPS)))[0]
    return [dt.to_uint8((image.permute(1, 2, 0).numpy() + 1) / 2) for image in out.float()]


def run_cmedit(pipe, name, measurements, noise_level, seed, exact=False):
    if not exact:
        return dt.run_cmedit(pipe, name, measurements, noise_level, seed, 64, {"num_inference_steps": STEPS})
    return dt.run_cmedit(pipe, name, measurements, 0.0, seed, 64, {"num_inference_steps": STEPS})


def metrics(truths, outputs):
    return {"psnr": pooled_psnr(truths, outputs), "ssim": float(np.mean([ssim(t, o) for t, o in zip(truths, outputs)]))}


def timed(pipe, function):
    with counting_forwards(pipe.unet) as counter:
        start = time.perf_counter()
        outputs = function()
        seconds = time.perf_counter() - start
    return outputs, counter.rows, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cm4ir", type=Path, required=True, help="CM4IR checkout or its bare git directory")
    parser.add_argument("--images", default="samples/heldout", help="folder of held-out images (one size)")
    parser.add_argument("--limit", type=int, default=32, help="evaluate the first N images")
    parser.add_argument("--tune", type=int, default=16, help="tune CM4IR on the N images after those (0: no tuning)")
    parser.add_argument("--tasks", default=",".join(dt.DEGRADATION_TASKS))
    parser.add_argument("--noise-levels", default="0,0.025,0.05")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="model (default: the embedded one)")
    parser.add_argument("--methods", default=None, help="run only these methods (comma-separated names as printed; "
                        "CM4IR is tuned only when 'cm4ir (tuned)' is among them)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    cm4ir_restoration = load_cm4ir(args.cm4ir)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    paths = sorted(glob.glob(os.path.join(args.images, "*.png")))
    images = [encode(read_image(p).on_white(), None, 8, False, "PNG") for p in paths[:args.limit + args.tune]]
    evaluated, tuning = images[:args.limit], images[args.limit:args.limit + args.tune]
    levels = [float(v) for v in args.noise_levels.split(",")]
    results = {"config": {"images": args.images, "limit": args.limit, "tune": args.tune, "steps": STEPS,
                          "seed": args.seed, "model": args.model or "embedded", "zeta": noise_module.ZETA,
                          "eta_schedule": noise_module.SCHEDULE, "torch": torch.__version__}, "rows": []}
    print(f"{len(evaluated)} held-out images, {STEPS} network evaluations; CM4IR tuned on {len(tuning)} other images\n")
    print("| task | noise | method | PSNR (dB) | SSIM | NFE | s / image | settings |")
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for name, level in itertools.product(args.tasks.split(","), levels):
        kind = "sr" if name.startswith("sr") else "deblur"
        published = PUBLISHED[(kind, level if level else 0.025)]
        tuned = published
        wanted = None if args.methods is None else set(args.methods.split(","))
        if tuning and (wanted is None or "cm4ir (tuned)" in wanted):
            tune_y = dt.degrade(name, tuning, level, seed=1)
            best = -np.inf
            for i_n, gamma, zeta in itertools.product(*TUNE_GRID.values()):
                if not level and zeta:
                    continue  # zeta scales sigma_y^2: no effect without noise
                out = run_cm4ir(cm4ir_restoration, pipe, name, tune_y, level, args.seed, (i_n, gamma, zeta))
                value = pooled_psnr(tuning, out)
                if value > best:
                    best, tuned = value, (i_n, gamma, zeta)
        y = dt.degrade(name, evaluated, level, seed=0)
        methods = {
            "cmedit": (lambda: run_cmedit(pipe, name, y, level, args.seed), f"zeta {noise_module.ZETA}"),
            "ddnm (exact projection)": (lambda: run_cmedit(pipe, name, y, level, args.seed, exact=True), ""),
            "cm4ir (published)": (lambda: run_cm4ir(cm4ir_restoration, pipe, name, y, level, args.seed, published),
                                  "iN {} gamma {} zeta {}".format(*published)),
            "cm4ir (tuned)": (lambda: run_cm4ir(cm4ir_restoration, pipe, name, y, level, args.seed, tuned),
                              "iN {} gamma {} zeta {}".format(*tuned)),
        }
        for method, run in dt.baselines(name, y, level, evaluated).items():
            methods[method] = (run, "")
        for method, (function, settings) in methods.items():
            if wanted is not None and method not in wanted:
                continue
            outputs, rows, seconds = timed(pipe, function)
            row = {"task": name, "noise": level, "method": method, **metrics(evaluated, outputs),
                   "nfe": rows / len(evaluated), "seconds_per_image": seconds / len(evaluated), "settings": settings}
            results["rows"].append(row)
            print(f"| {name} | {level:g} | {method} | {row['psnr']:.2f} | {row['ssim']:.3f} | {row['nfe']:.0f} | "
                  f"{row['seconds_per_image']:.3f} | {settings} |", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
