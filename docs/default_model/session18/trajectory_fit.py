"""Session 18's memorisation check (a record of how the figures in MODEL_CARD.md were made, not a tool).

    python docs/default_model/session18/trajectory_fit.py MODEL [MODEL ...]

For each model: the RMS difference (pixels in [-1, 1], outputs clipped) between its one-step output
from sigma 80 and the teacher's ODE end, (a) on 128 stored trajectories that the anchored runs of
sessions 12 to 18 trained on (chunk 0 of the cache; session 12's run, half of the shipped average,
had the same 5,120; the tuned stage, none), (b) on 128 solved in session 18 (chunk 40; only the
10,240-trajectory run trained on them), and (c) on 128 solved here from fresh noise (seed 12345;
Heun on the same 18-level grid, under bf16 autocast as the cache's were). The teacher is
runs/step7725 (checkpoints/twemoji32_stage0 of commit dafdfaa); the cache is the one in
runs/traj_tuned_s15_f075/trajectories (seed 0), extended to 10,240 in session 18.
"""
import sys

import numpy as np
import torch

from cmedit.loading import load_pipeline
from cmedit.sampler import consistency_function
from cmedit.training.consistency import unet_denoiser
from cmedit.training.trajectories import solve_trajectories, trajectory_sigmas

torch.set_num_threads(2)
CACHE = "runs/traj_tuned_s15_f075/trajectories"
sigmas = trajectory_sigmas(18)
sets = {}
for name, chunk in (("stored, chunk 0 (in the 5,120)", 0), ("stored, chunk 40 (added in session 18)", 40)):
    f = np.load(f"{CACHE}/chunk{chunk:04d}.npz")
    sets[name] = torch.from_numpy(f["points"][:, 0]).float(), torch.from_numpy(f["ends"]).float()
teacher = load_pipeline("runs/step7725")
noise = torch.randn((128, 3, 32, 32), generator=torch.Generator().manual_seed(12345))
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    points, ends = solve_trajectories(unet_denoiser(teacher.unet, teacher.scheduler), noise, sigmas, 0.002)
sets["fresh noise"] = points[:, 0].float(), ends.float()
print("| model | " + " | ".join(sets) + " |\n|---|" + "---:|" * len(sets))
for model in sys.argv[1:]:
    pipe = load_pipeline(model)
    cells = []
    with torch.inference_mode():
        for start, end in sets.values():
            out = consistency_function(pipe.unet, pipe.scheduler, start, torch.full((len(start),), 80.0))
            cells.append(f"{((out.float().clamp(-1, 1) - end) ** 2).mean().sqrt().item():.4f}")
    print(f"| {model} | " + " | ".join(cells) + " |", flush=True)
