"""Train the default model on one lent GPU in a fixed wall-clock budget (ECT, two phases).

A lent GPU is held for minutes, not hours, so the curriculum is set by time, not steps:

  --phase pretrain  stage 0 (denoiser training, EDM loss) under bf16 autocast for --minutes; the EMA
                    export in RUN/pretrain/export is the denoiser that ECT starts from. --init-from DIR
                    --start-step N continues an earlier run's stage-0 export (its EMA weights, a new optimizer)
                    as if N steps were done, so the tuning curriculum counts them.
  --phase tune      consistency tuning from that EMA (ECT initialises from the pretrained denoiser) in
                    float32 (TF32 off): stage 1 runs for --minutes / --max-stage and its step count sets
                    the length of every later stage; the EMA export after each stage in --keep-stages is
                    copied to RUN/ema_stage<N>. With --probe-features DIR, every stage's EMA is also
                    scored for sample quality (KID of 1-step and `14,0` samples against the training
                    designs, scripts/sample_quality.py; needs torchmetrics) and the scores are logged, so
                    that generation is seen as well as edits when a stage is chosen. With --distil the
                    stages distil the stage-0 denoiser (`cmedit train --teacher`: its Heun ODE step gives
                    the targets) instead of consistency training from the data's noise.
  --phase traj      optional, after tune: from the EMA kept after stage --from-stage, regress on
                    --trajectories of the stage-0 denoiser's solved ODE trajectories (`cmedit train
                    --teacher-trajectories`) under bf16 autocast for --minutes of training (the solve comes
                    first and is not counted); the EMA export is copied to RUN/ema_traj. With
                    --anchor-below S, only the levels at or above sigma S learn the trajectories and the
                    ones below are held to that stage's outputs (`cmedit train --anchor`), where edits run.

The two phases run as two processes (accelerate fixes the mixed precision once per process). Example:

  python scripts/train_gpu.py --phase pretrain --run /tmp/gpu --minutes 3.2 --device cuda
  python scripts/train_gpu.py --phase tune --run /tmp/gpu --minutes 4.0 --max-stage 8 --keep-stages 6,8 --device cuda
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from cmedit.training.consistency import ECTSchedule
from cmedit.training.loop import EXPORT_DIR, STATE_FILE, TrainConfig, train

NEVER = 10**9  # a step count no run reaches: the time budget ends the phase


def _config(args, run_dir: Path, **kw) -> TrainConfig:
    return TrainConfig(
        data=args.data, groups=args.groups, run_dir=str(run_dir), preset=args.preset, batch_size=args.batch_size,
        lr=args.lr, device=args.device, checkpoint_minutes=1e6, seed=args.seed, **kw,
    )


def _saved_step(run_dir: Path) -> int:
    """The step of the training state a finished `train` call left in run_dir."""
    return torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True)["step"]


def pretrain(args) -> None:
    run = Path(args.run) / "pretrain"
    cfg = _config(args, run, max_steps=NEVER, max_minutes=args.minutes, mixed_precision="bf16",
                  schedule=ECTSchedule(pretrain_steps=NEVER), init_from=args.init_from, start_step=args.start_step)
    train(cfg)
    step = _saved_step(run)
    (Path(args.run) / "pretrain_steps.json").write_text(json.dumps({"pretrain_steps": step}))
    print(f"pretrain: {step} steps", flush=True)


def probe(args, export: Path, label: str) -> None:
    """Log the sample quality of ``export``: KID x1000 of 1-step and ``14,0`` samples (MODEL_CARD.md)."""
    try:
        import torchmetrics  # noqa: F401
    except ModuleNotFoundError:
        print("probe: torchmetrics is not installed; no sample-quality scores", flush=True)
        return
    from sample_quality import base_designs, generate  # scripts/, this script's folder

    from cmedit import load_pipeline
    from cmedit.evaluation.features import kernel_distance, load_feature_net

    reference = base_designs(np.load(args.data), np.load(args.groups))
    net = load_feature_net(args.probe_features)
    pipe = load_pipeline(str(export), device=args.device)  # float32, as exported
    pipe.set_progress_bar_config(disable=True)
    scores = []
    for timesteps in ([0], [14, 0]):
        samples = generate(pipe, timesteps, args.probe_samples, args.seed, batch_size=500).cpu()
        scores.append(1000 * kernel_distance(net, reference, samples)[0])
    print(f"probe: {label}: sample KID x1000, 1 step {scores[0]:.1f}, 14,0 {scores[1]:.1f} "
          f"({args.probe_samples} samples)", flush=True)


def tune(args) -> None:
    root = Path(args.run)
    p = json.loads((root / "pretrain_steps.json").read_text())["pretrain_steps"]
    run = root / "tune"
    keep = {int(s) for s in args.keep_stages.split(",") if s}
    teacher = str(root / "pretrain" / EXPORT_DIR) if args.distil else None
    # stage 1 alone, with a stage length no run reaches, for its share of the time
    first = _config(args, run, max_steps=NEVER, max_minutes=args.minutes / args.max_stage,
                    mixed_precision="no", init_from=str(root / "pretrain" / EXPORT_DIR), start_step=p,
                    schedule=ECTSchedule(pretrain_steps=p, stage_steps=NEVER, max_stage=args.max_stage),
                    teacher=teacher)
    train(first)
    stage_steps = max(1, _saved_step(run) - p)
    print(f"tune: stage 1 took {stage_steps} steps; every stage gets as many", flush=True)
    schedule = ECTSchedule(pretrain_steps=p, stage_steps=stage_steps, max_stage=args.max_stage)
    for stage in range(1, args.max_stage + 1):
        if stage > 1:
            train(_config(args, run, max_steps=p + stage * stage_steps, mixed_precision="no",
                          schedule=schedule, resume=True, teacher=teacher))
        if args.probe_features:
            label = f"EMA after stage {stage} (step {p + stage * stage_steps})"
            try:
                probe(args, run / EXPORT_DIR, label)
            except Exception as error:  # a diagnostic: it must not end a lent GPU's only run
                print(f"probe: {label}: failed ({error!r})", flush=True)
        if stage in keep:
            shutil.copytree(run / EXPORT_DIR, root / f"ema_stage{stage}", dirs_exist_ok=True)
            print(f"tune: kept the EMA after stage {stage} (step {p + stage * stage_steps})", flush=True)


def distil_trajectories(args) -> None:
    root = Path(args.run)
    run = root / "traj"
    start = str(root / f"ema_stage{args.from_stage}")
    anchor = {} if not args.anchor_below else {"anchor": start, "anchor_below": args.anchor_below}
    train(_config(args, run, max_steps=NEVER, max_minutes=args.minutes, mixed_precision="bf16", init_from=start,
                  teacher=str(root / "pretrain" / EXPORT_DIR), teacher_trajectories=args.trajectories, **anchor))
    shutil.copytree(run / EXPORT_DIR, root / "ema_traj", dirs_exist_ok=True)
    print(f"traj: {_saved_step(run)} steps on {args.trajectories} trajectories from the EMA after stage "
          f"{args.from_stage}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=["pretrain", "tune", "traj"], required=True)
    ap.add_argument("--run", required=True, help="folder for both phases")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this phase")
    ap.add_argument("--data", default="data/twemoji32_train.npy")
    ap.add_argument("--groups", default="data/twemoji32_train_groups.npy")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=None, help="default: 6e-4 pretrain, 2e-4 tune and traj")
    ap.add_argument("--max-stage", type=int, default=8)
    ap.add_argument("--keep-stages", default="6,8")
    ap.add_argument("--probe-features", default=None,
                    help="tune: score every stage's samples with this feature network (scripts/sample_quality.py)")
    ap.add_argument("--probe-samples", type=int, default=1000, help="tune: samples per probe schedule")
    ap.add_argument("--distil", action="store_true", help="tune: distil the stage-0 denoiser (train --teacher)")
    ap.add_argument("--from-stage", type=int, default=6, help="traj: start from RUN/ema_stage<N>")
    ap.add_argument("--trajectories", type=int, default=65536, help="traj: teacher ODE trajectories to solve")
    ap.add_argument("--anchor-below", type=float, default=0.0,
                    help="traj: > 0 keeps the starting EMA's outputs below this sigma (train --anchor)")
    ap.add_argument("--init-from", default=None, help="pretrain: continue this stage-0 export (a diffusers folder)")
    ap.add_argument("--start-step", type=int, default=0, help="pretrain with --init-from: the steps it had done")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.start_step and not args.init_from:
        ap.error("--start-step needs --init-from")
    if args.lr is None:
        args.lr = 6e-4 if args.phase == "pretrain" else 2e-4
    {"pretrain": pretrain, "tune": tune, "traj": distil_trajectories}[args.phase](args)


if __name__ == "__main__":
    main()
