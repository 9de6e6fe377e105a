"""`cmedit train`: parse options and call `cmedit.training.loop.train` (torch is imported only when it runs)."""
from __future__ import annotations

from pathlib import Path

import click

PRESET_NAMES = ["tiny", "small", "base"]  # cmedit.training.model.PRESETS, listed here to keep torch out of import


@click.command(
    "train",
    help="""Train a consistency model with Easy Consistency Tuning (ECT).

DATA is a .npy array (N, H, W, 3) uint8 or a folder of images (read recursively;
transparent pixels composited on white, each image centre-cropped to a square
and resized to --resolution). The run folder
gets training_state.pt (resumable), export/ (a ConsistencyModelPipeline folder
with EMA weights) and samples/ grids, every --checkpoint-minutes.

\b
Examples:
  cmedit train data/twemoji32_train.npy --groups data/twemoji32_train_groups.npy --run-dir runs/default \\
      --mixed-precision bf16 --threads 2
  cmedit train data/twemoji32_train.npy --run-dir runs/default --resume
  cmedit train my_images/ --run-dir runs/mine --resolution 64
  cmedit train data/twemoji32_train.npy --run-dir runs/cd --init-from cmedit/default_model \\
      --start-step 8649 --pretrain-steps 7725 --stage-steps 154 --teacher checkpoints/twemoji32_teacher
""",
)
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--groups", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A .npy of integer group ids, one per image: each group is drawn equally often "
                   "(e.g. an emoji and its skin-tone variants count as one design).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/default"), show_default=True)
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="small", show_default=True, help="UNet size.")
@click.option("--resolution", type=click.IntRange(8), default=32, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Learning rate after the warm-up.  [default: 2e-4; with --resume, the run's own]")
@click.option("--max-steps", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--lr-decay-steps", type=click.IntRange(0), default=0, show_default=True,
              help="Lower the LR to zero along a half cosine over the last N steps before --max-steps "
                   "(0: constant after the warm-up). Counted in steps, so a run that --max-minutes stops "
                   "early ends before its decay does; may be added on --resume.")
@click.option("--max-minutes", type=click.FloatRange(0, min_open=True), default=None,
              help="Also stop after this many minutes of training (checkpoint and export as at --max-steps).")
@click.option("--pretrain-steps", type=click.IntRange(0), default=2500, show_default=True,
              help="Stage 0 (r = 0, denoiser training) length.")
@click.option("--stage-steps", type=click.IntRange(1), default=800, show_default=True,
              help="Steps per ECT stage; each stage halves t - r.")
@click.option("--max-stage", type=click.IntRange(1), default=6, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--mixed-precision", type=click.Choice(["no", "bf16", "fp16"]), default="no", show_default=True,
              help="Autocast precision; 'no' is float32 throughout (TF32 off on GPUs: the later ECT stages "
                   "compare nearby outputs).")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@click.option("--checkpoint-minutes", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True)
@click.option("--checkpoint-steps", type=click.IntRange(1), default=None, help="Also checkpoint every N steps.")
@click.option("--no-hflip", is_flag=True, help="Disable random horizontal flips.")
@click.option("--resume", is_flag=True, help="Continue from RUN_DIR/training_state.pt.")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Start from the UNet weights of this model folder (e.g. cmedit/default_model) "
                   "with a new optimizer; for a machine without the run's training_state.pt.")
@click.option("--start-step", type=click.IntRange(0), default=0, show_default=True,
              help="With --init-from: the step (curriculum position) to continue at.")
@click.option("--teacher", default=None,
              help="Consistency distillation: a trained model (folder, .pt or hub id) whose ODE steps give the "
                   "targets of the consistency stages, instead of the data's noise (stage 0 is unchanged).")
@click.option("--teacher-trajectories", type=click.IntRange(0), default=0, show_default=True,
              help="With --teacher: solve this many of the teacher's ODE trajectories first (stored in "
                   "RUN_DIR/trajectories, in chunks of 128, reused on --resume and by runs with the same teacher "
                   "weights and seed) and train the model to map "
                   "every point of them to its end, instead of ECT's curriculum.")
@click.option("--teacher-steps", type=click.IntRange(2), default=18, show_default=True,
              help="Levels of each stored trajectory (Heun steps on the Karras grid, 2 evaluations each).")
@click.option("--anchor", default=None,
              help="With --teacher-trajectories (or --high-anchor): a model (e.g. the one --init-from starts "
                   "from) whose outputs below --anchor-below the run keeps, on noised training images, while the "
                   "trajectories train the higher levels (one-step samples) and the edits' low levels stay near "
                   "the anchor's.")
@click.option("--high-anchor", default=None,
              help="With --anchor, instead of a teacher: a model whose outputs at and above --anchor-below the "
                   "run takes, on noised training images, at the sampling scheduler's levels; the network learns "
                   "one model's high levels (one-step samples) and the other's low levels (edits).")
@click.option("--anchor-below", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="With --anchor: the sigma that splits the trajectory grid's (or, with --high-anchor, the "
                   "sampling scheduler's) levels.")
@click.option("--anchor-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
              show_default=True, help="With --anchor: the share of each batch given to the anchored levels.")
def train(data: Path, groups: Path | None, run_dir: Path, preset: str, resolution: int, batch_size: int,
          lr: float | None, max_steps: int, lr_decay_steps: int, max_minutes: float | None, pretrain_steps: int,
          stage_steps: int, max_stage: int, seed: int, device: str, mixed_precision: str, threads: int | None,
          checkpoint_minutes: float, checkpoint_steps: int | None, no_hflip: bool, resume: bool,
          init_from: Path | None, start_step: int, teacher: str | None, teacher_trajectories: int,
          teacher_steps: int, anchor: str | None, high_anchor: str | None, anchor_below: float,
          anchor_fraction: float) -> None:
    """Click entry point; all work happens in `cmedit.training.loop.train`."""
    if resume and not (run_dir / "training_state.pt").exists():
        raise click.ClickException(f"--resume: {run_dir / 'training_state.pt'} does not exist")
    if not resume and (run_dir / "training_state.pt").exists():
        raise click.ClickException(f"{run_dir} already holds a training state; pass --resume or another --run-dir")
    if resume and init_from is not None:
        raise click.ClickException("--resume and --init-from exclude each other")
    if teacher_trajectories and teacher is None:
        raise click.ClickException("--teacher-trajectories needs --teacher")
    if high_anchor is not None and (anchor is None or teacher is not None):
        raise click.ClickException("--high-anchor needs --anchor and no --teacher")
    if anchor is not None and not teacher_trajectories and high_anchor is None:
        raise click.ClickException("--anchor needs --teacher-trajectories or --high-anchor")
    if lr_decay_steps > max_steps:
        raise click.ClickException(f"--lr-decay-steps {lr_decay_steps} is more than --max-steps {max_steps}")
    if data.is_file() and data.suffix != ".npy":
        raise click.ClickException(f"{data}: expected a .npy file or a folder of images")
    from cmedit.training.consistency import ECTSchedule
    from cmedit.training.loop import TrainConfig
    from cmedit.training.loop import train as run_training

    cfg = TrainConfig(
        data=str(data), groups=None if groups is None else str(groups), run_dir=str(run_dir), preset=preset,
        resolution=resolution, batch_size=batch_size, lr=lr,
        max_steps=max_steps, lr_decay_steps=lr_decay_steps, max_minutes=max_minutes,
        schedule=ECTSchedule(pretrain_steps=pretrain_steps, stage_steps=stage_steps, max_stage=max_stage),
        seed=seed, device=device, mixed_precision=mixed_precision, threads=threads,
        checkpoint_minutes=checkpoint_minutes, checkpoint_steps=checkpoint_steps, hflip=not no_hflip, resume=resume,
        init_from=None if init_from is None else str(init_from), start_step=start_step, teacher=teacher,
        teacher_trajectories=teacher_trajectories, teacher_steps=teacher_steps, anchor=anchor,
        high_anchor=high_anchor, anchor_below=anchor_below, anchor_fraction=anchor_fraction,
    )
    try:
        out = run_training(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"exported {out}")


if __name__ == "__main__":
    train()
