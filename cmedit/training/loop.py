"""The training loop: ECT (Geng et al. 2024) on a diffusers `UNet2DModel`, via `accelerate`, with exact resume;
optionally distilling a teacher model (`TrainConfig.teacher`), step by step or from its stored ODE
trajectories (`TrainConfig.teacher_trajectories`, `cmedit.training.trajectories`), or merging two trained
models' noise levels into one network (`TrainConfig.high_anchor` with `TrainConfig.anchor`).

Outputs in `run_dir`:
  training_state.pt   model, optimizer, LR schedule, EMA, step and RNG states (`resume=True` continues exactly,
                      single process)
  export/             diffusers folder for `ConsistencyModelPipeline` (EMA weights), rewritten atomically
  samples/step_*.png  fixed-seed samples: top half 1-step, bottom half 2-step (timesteps [22, 0])
  trajectories/       the teacher's stored ODE trajectories, with teacher_trajectories > 0 (reused on resume)
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import ConsistencyModelPipeline, UNet2DModel
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from tqdm.auto import tqdm

from ..io.files import replace_folder_atomically, write_file_atomically
from .consistency import Denoiser, ECTSchedule, ect_loss, make_scheduler, unet_denoiser
from .data import load_group_weights, load_images, random_batch
from .model import count_parameters, make_preset, make_unet
from .trajectories import (TrajectorySet, anchor_batch, trajectory_loss, trajectory_sigmas,
                                        weights_digest)

STATE_FILE = "training_state.pt"
EXPORT_DIR = "export"
DEFAULT_LR = 2e-4


@dataclass
class TrainConfig:
    """All training settings; stored in the training state for reference."""

    data: str
    groups: str | None = None  # .npy of per-image group ids: sample every group equally (`load_group_weights`)
    run_dir: str = "runs/default"
    preset: str = "small"
    unet_kwargs: dict | None = None  # if set, `make_unet(**unet_kwargs)` instead of the preset
    resolution: int = 32
    batch_size: int = 32
    lr: float | None = None  # None: DEFAULT_LR, or on resume the stored run's; a number replaces the stored one
    warmup_steps: int = 200
    max_steps: int = 10_000
    lr_decay_steps: int = 0  # > 0: the LR falls to zero along a half cosine over the last this many steps (`lr_factor`)
    max_minutes: float | None = None  # also stop (checkpoint, export) after this much wall-clock time
    schedule: ECTSchedule = field(default_factory=ECTSchedule)
    ema_max_decay: float = 0.9999
    ema_power: float = 2 / 3
    grad_clip: float = 1.0
    hflip: bool = True
    seed: int = 0
    device: str = "cpu"
    mixed_precision: str = "no"
    checkpoint_minutes: float = 10.0
    checkpoint_steps: int | None = None
    num_samples: int = 16
    resume: bool = False
    init_from: str | None = None  # a diffusers model folder whose UNet weights start the run (online and EMA)
    start_step: int = 0  # with init_from: where in the curriculum the run starts
    teacher: str | None = None  # a model (anything `cmedit.load_pipeline` takes): distil its ODE in stages >= 1
    teacher_trajectories: int = 0  # > 0: instead, regress on this many of the teacher's solved ODE trajectories
    teacher_steps: int = 18  # levels of each stored trajectory (Heun steps on a Karras grid)
    trajectory_start_fraction: float = 0.25  # share of the trajectories' (or high anchor's) examples at sigma_max
    # (the one-step sampler's input)
    anchor: str | None = None  # with teacher_trajectories or high_anchor: a model whose outputs below anchor_below
    # are kept
    high_anchor: str | None = None  # instead of trajectories: a model whose outputs at or above anchor_below are kept
    anchor_below: float = 10.0  # trajectory levels below this sigma are replaced by the anchor's outputs
    anchor_fraction: float = 0.5  # share of each batch on noised training images with the anchor's targets
    threads: int | None = None


def lr_factor(count: int, step: int, cfg: TrainConfig) -> float:
    """The LR multiplier for the optimizer step after `step` completed training steps.

    A linear warm-up over this optimizer's first `warmup_steps` (`count`: its scheduler steps so far; the warm-up
    re-runs after `init_from`, which starts a new optimizer), times, with `lr_decay_steps`, a half cosine from 1
    to 0 over the last `lr_decay_steps` training steps before `max_steps`.
    """
    warm = min(1.0, (count + 1) / max(1, cfg.warmup_steps))
    if not cfg.lr_decay_steps:
        return warm
    done = min(max(step - (cfg.max_steps - cfg.lr_decay_steps), 0), cfg.lr_decay_steps) / cfg.lr_decay_steps
    return warm * 0.5 * (1 + math.cos(math.pi * done))


def export_pipeline(unet: UNet2DModel, ema: EMAModel, out_dir: Path) -> ConsistencyModelPipeline:
    """Write a `ConsistencyModelPipeline` folder with the EMA weights to out_dir (atomic replace)."""
    export_unet = UNet2DModel.from_config(unet.config)
    ema.copy_to(export_unet.parameters())
    pipe = ConsistencyModelPipeline(unet=export_unet.to("cpu").eval(), scheduler=make_scheduler())
    pipe.set_progress_bar_config(disable=True)
    replace_folder_atomically(out_dir, lambda tmp: pipe.save_pretrained(tmp, safe_serialization=True))
    return pipe


@torch.no_grad()
def save_samples(pipe: ConsistencyModelPipeline, path: Path, n: int, seed: int = 0) -> None:
    """Fixed-seed sample grid: n one-step samples above n two-step samples (timesteps [22, 0])."""
    one = pipe(batch_size=n, num_inference_steps=1, generator=torch.Generator().manual_seed(seed)).images
    two = pipe(batch_size=n, num_inference_steps=None, timesteps=[22, 0], generator=torch.Generator().manual_seed(seed)).images
    cols = min(n, 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image_grid(one + two, rows=2 * ((n + cols - 1) // cols), cols=cols).save(path)


def _save_state(path: Path, step: int, model, optimizer, lr_sched, ema: EMAModel, gens, cfg: TrainConfig) -> None:
    """Everything needed to resume exactly, written atomically."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_sched.state_dict(),
        "ema": ema.state_dict(),
        "rng": {name: g.get_state() for name, g in gens.items()},
        "torch_rng": torch.get_rng_state(),
        "config": asdict(cfg),
    }
    write_file_atomically(path, lambda tmp: torch.save(state, tmp))


def load_teacher(
    source: str, images: torch.Tensor, device: torch.device, role: str = "teacher"
) -> tuple[Denoiser, str]:
    """A frozen model as a denoiser (a teacher, or an anchor), and its ``weights_digest``.

    It must take the training images without labels.
    """
    from cmedit.models.loading import load_pipeline

    teacher = load_pipeline(source, device=device)
    if teacher.unet.dtype != torch.float32:  # e.g. half-precision weights: the ODE step runs in float32
        teacher.unet.float()
    t_cfg = teacher.unet.config
    channels, size = images.shape[1], images.shape[-1]
    if t_cfg.num_class_embeds is not None:
        raise ValueError(f"{role} {source}: class-conditional; training here is unconditional")
    if (t_cfg.in_channels, t_cfg.sample_size) != (channels, size):
        raise ValueError(f"{role} {source}: {t_cfg.in_channels} channels at {t_cfg.sample_size} px, "
                         f"the training images are {channels} channels at {size} px")
    teacher.unet.requires_grad_(False).eval()
    return unet_denoiser(teacher.unet, teacher.scheduler), weights_digest(teacher.unet)


class _Stop(Exception):
    """Raised from the SIGTERM handler so the loop checkpoints before exiting."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Stop()


def _make_ema(model: UNet2DModel, cfg: TrainConfig) -> EMAModel:
    """EMA with warm-up (decay ``1 - (1 + step)^-power``, capped at ema_max_decay), updated with foreach kernels."""
    return EMAModel(model.parameters(), decay=cfg.ema_max_decay, use_ema_warmup=True, power=cfg.ema_power, foreach=True)


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) and return the export folder; checkpoints every `checkpoint_minutes` and at the end."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device == "cuda" and not torch.cuda.is_available():  # else accelerate would quietly train on the CPU
        raise ValueError("device cuda: CUDA is not available to this torch build on this machine")
    if cfg.teacher_trajectories and cfg.teacher is None:
        raise ValueError("teacher trajectories need a teacher")
    if cfg.high_anchor is not None and (cfg.anchor is None or cfg.teacher is not None):
        raise ValueError("a high anchor needs an anchor, and no teacher: the two models' levels are the targets")
    if cfg.anchor is not None and not cfg.teacher_trajectories and cfg.high_anchor is None:
        raise ValueError("an anchor model needs teacher trajectories or a high anchor")
    if cfg.lr_decay_steps > cfg.max_steps:
        raise ValueError(f"LR decay over {cfg.lr_decay_steps} steps does not fit in {cfg.max_steps} steps")
    # min_sigma: trajectory levels at or above it are trained; anchor_levels: the anchor's, below it; high_levels:
    # the high anchor's, at or above it
    n_anchor, min_sigma, anchor_levels, high_levels = 0, 0.0, None, None
    if cfg.anchor is not None:
        n_anchor, min_sigma = round(cfg.anchor_fraction * cfg.batch_size), cfg.anchor_below
        upper = "the trajectories" if cfg.high_anchor is None else "the high anchor"
        if not 0 < n_anchor < cfg.batch_size:
            raise ValueError(f"anchor fraction {cfg.anchor_fraction:g} of a batch of {cfg.batch_size} leaves "
                             f"no room for the anchor or for {upper}")
        # the trajectories' levels, or those that sampling and editing use (the exported scheduler's)
        grid, name = ((trajectory_sigmas(cfg.teacher_steps), "trajectory") if cfg.high_anchor is None
                      else (make_scheduler().sigmas.float(), "sampling"))
        anchor_levels, high_levels = grid[grid < min_sigma], grid[grid >= min_sigma]
        if not 0 < len(anchor_levels) < len(grid):
            raise ValueError(f"anchor below sigma {min_sigma:g}: the {name} grid ({grid[0]:g} .. {grid[-1]:g}) "
                             "must have levels on both sides")
    if cfg.mixed_precision == "no":
        # float32 means float32: the later ECT stages compare f(x_t, t) with f(x_r, r) for r close to t, a
        # difference that TF32 convolutions (cuDNN's default on Ampere and later GPUs) would blur.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.device == "cpu")
    images = load_images(cfg.data, size=cfg.resolution)
    weights = None if cfg.groups is None else load_group_weights(cfg.groups, len(images))
    teacher, teacher_digest = (None, None) if cfg.teacher is None else load_teacher(cfg.teacher, images,
                                                                                     accelerator.device)
    anchor = None if cfg.anchor is None else load_teacher(cfg.anchor, images, accelerator.device, role="anchor")[0]
    high_anchor = None if cfg.high_anchor is None else load_teacher(cfg.high_anchor, images, accelerator.device,
                                                                    role="high anchor")[0]
    run_dir = Path(cfg.run_dir)  # created only once the data (and teacher) have loaded
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / STATE_FILE
    rank = accelerator.process_index

    set_seed(cfg.seed)  # model initialisation
    if cfg.unet_kwargs is not None:
        model = make_unet(sample_size=cfg.resolution, **cfg.unet_kwargs)
    else:
        model = make_preset(cfg.preset, sample_size=cfg.resolution)
    ema = _make_ema(model, cfg)
    gens = {
        "data": torch.Generator().manual_seed(cfg.seed * 1000 + rank),
        "noise": torch.Generator(accelerator.device).manual_seed(cfg.seed * 1000 + 500 + rank),
    }
    step, state = 0, None
    optimizer = torch.optim.Adam(model.parameters(), lr=DEFAULT_LR if cfg.lr is None else cfg.lr)
    # The lambda reads `step` when it is called: each lr_sched.step() sets the LR of the step after `step`.
    lr_sched = base_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda count: lr_factor(count, step, cfg))
    if cfg.resume:
        if not state_path.exists():
            raise FileNotFoundError(f"--resume: no {state_path}")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        step = state["step"]
        if state["config"].get("teacher") != cfg.teacher and accelerator.is_main_process:
            print(f"note: resuming with teacher {cfg.teacher}; the run so far used {state['config'].get('teacher')}",
                  flush=True)
    elif cfg.init_from is not None:
        # A fresh machine has no training_state.pt: continue from committed (EMA) weights, with a new
        # optimizer (its LR warm-up re-runs) and the curriculum placed at start_step.
        model.load_state_dict(UNet2DModel.from_pretrained(cfg.init_from, subfolder="unet").state_dict())
        ema = _make_ema(model, cfg)
        ema.optimization_step = cfg.start_step
        step = cfg.start_step
    model, optimizer, lr_sched = accelerator.prepare(model, optimizer, lr_sched)
    ema.to(accelerator.device)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        if cfg.lr is not None:  # the stored scheduler brought the stored run's base LR
            base_sched.base_lrs = [cfg.lr] * len(optimizer.param_groups)
        torch.set_rng_state(state["torch_rng"])
        for name, g in gens.items():
            g.set_state(state["rng"][name])
    # The next step's LR by this run's schedule: a stored state holds its own run's (a decay may be added on
    # resume), and init_from starts at start_step, perhaps inside the decay.
    for group, base in zip(optimizer.param_groups, base_sched.base_lrs):
        group["lr"] = base * lr_factor(base_sched.last_epoch, step, cfg)
    unwrapped = accelerator.unwrap_model(model)
    scheduler = make_scheduler()
    trajectories = None
    if cfg.teacher_trajectories:
        with accelerator.main_process_first():  # the main process solves the missing ones, the others load them
            trajectories = TrajectorySet.build(
                run_dir / "trajectories", teacher, cfg.teacher_trajectories, cfg.teacher_steps,
                tuple(images.shape[1:]), cfg.seed, accelerator.device, accelerator.autocast,
                show_progress=accelerator.is_main_process, source=cfg.teacher, weights=teacher_digest)

    if accelerator.is_main_process:
        print(f"model {cfg.preset}: {count_parameters(unwrapped) / 1e6:.2f}M params; {len(images)} images"
              f"{'' if weights is None else f' in {round(weights.sum().item())} groups, drawn equally'}; "
              f"start step {step}; device {accelerator.device}; mixed precision {cfg.mixed_precision}"
              f"{'' if teacher is None else f'; distilling {cfg.teacher}'}"
              f"{'' if trajectories is None else f' from {len(trajectories)} stored ODE trajectories'}"
              f"{'' if high_anchor is None else f'; keeping {cfg.high_anchor} at and above sigma {cfg.anchor_below:g}'}"
              f"{'' if anchor is None else f', keeping {cfg.anchor} below sigma {cfg.anchor_below:g}'}", flush=True)
    signal.signal(signal.SIGTERM, _on_sigterm)

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _save_state(state_path, step, unwrapped, optimizer, lr_sched, ema, gens, cfg)
            pipe = export_pipeline(unwrapped, ema, run_dir / EXPORT_DIR)
            save_samples(pipe, run_dir / "samples" / f"step_{step:07d}.png", cfg.num_samples)
            where = ("trajectories" if trajectories is not None else "anchors" if high_anchor is not None
                     else f"stage {cfg.schedule.stage(step)}")
            tqdm.write(f"[checkpoint] step {step} {where} -> {run_dir / EXPORT_DIR}")

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not accelerator.is_main_process,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    t_start = last_ckpt = t_prev = time.time()
    deadline = None if cfg.max_minutes is None else t_start + 60 * cfg.max_minutes
    smooth = None
    model.train()
    try:
        while step < cfg.max_steps and (deadline is None or time.time() < deadline):
            if trajectories is None and high_anchor is None:
                x0 = random_batch(images, cfg.batch_size, gens["data"], cfg.hflip, weights).to(accelerator.device)
                with accelerator.autocast():
                    loss = ect_loss(model, scheduler, cfg.schedule, x0, step, gens["noise"], teacher)
            else:
                with accelerator.autocast():
                    if trajectories is not None:
                        x_t, t, end = (v.to(accelerator.device) for v in trajectories.batch(
                            cfg.batch_size - n_anchor, gens["data"], cfg.trajectory_start_fraction, min_sigma))
                    else:
                        x0 = random_batch(images, cfg.batch_size - n_anchor, gens["data"], cfg.hflip,
                                          weights).to(accelerator.device)
                        x_t, t, end = anchor_batch(high_anchor, x0, high_levels, gens["data"], gens["noise"],
                                                   cfg.trajectory_start_fraction)
                    if anchor is not None:
                        x0 = random_batch(images, n_anchor, gens["data"], cfg.hflip, weights).to(accelerator.device)
                        kept = anchor_batch(anchor, x0, anchor_levels, gens["data"], gens["noise"])
                        x_t, t, end = (torch.cat(pair) for pair in zip((x_t, t, end), kept))
                    loss = trajectory_loss(model, scheduler, x_t, t, end)
            accelerator.backward(loss)
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(unwrapped.parameters())
            step += 1
            lr_sched.step()

            now = time.time()
            smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
            ips = cfg.batch_size * accelerator.num_processes / max(now - t_prev, 1e-9)
            t_prev = now
            stage = cfg.schedule.stage(step) if trajectories is None and high_anchor is None else "-"
            bar.set_postfix(loss=f"{smooth:.4f}", img_s=f"{ips:.1f}", stage=stage,
                            lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
            bar.update(1)
            due_steps = cfg.checkpoint_steps is not None and step % cfg.checkpoint_steps == 0
            if due_steps or now - last_ckpt > 60 * cfg.checkpoint_minutes:
                checkpoint()
                last_ckpt = time.time()
    except (KeyboardInterrupt, _Stop):
        tqdm.write(f"interrupted at step {step}; saving")
    finally:
        bar.close()
    checkpoint()
    return run_dir / EXPORT_DIR
