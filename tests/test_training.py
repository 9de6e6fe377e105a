"""Tests for cmedit.training (ECT training loop, schedule, export, exact resume) and `cmedit train` (CPU, tiny UNet)."""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import CMStochasticIterativeScheduler, ConsistencyModelPipeline, UNet2DModel

from cmedit.models.loading import load_pipeline
from cmedit.core.sampler import consistency_function
from cmedit.training.consistency import ECTSchedule, ect_loss, heun_step, make_scheduler
from cmedit.training.data import load_group_weights, load_images, random_batch
from cmedit.training.loop import STATE_FILE, TrainConfig, lr_factor, train
from cmedit.training.trajectories import weights_digest

TINY = {"channels": (16, 32), "attention": (False, True), "layers_per_block": 1}


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npy"
    np.save(path, rng.integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8))
    return path


def _cfg(data, run_dir, max_steps, resume=False) -> TrainConfig:
    return TrainConfig(
        data=str(data), run_dir=str(run_dir), unet_kwargs=TINY, resolution=16, batch_size=4, max_steps=max_steps,
        schedule=ECTSchedule(pretrain_steps=2, stage_steps=1, max_stage=3), warmup_steps=2,
        checkpoint_minutes=1e6, num_samples=2, resume=resume, threads=1,
    )


def test_train_export_loads_in_diffusers(data, tmp_path):
    out = train(_cfg(data, tmp_path / "run", max_steps=3))
    assert not torch.backends.cudnn.allow_tf32  # mixed_precision "no" is float32 throughout
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").exists()
    pipe = ConsistencyModelPipeline.from_pretrained(out)
    assert isinstance(pipe.unet, UNet2DModel)
    assert isinstance(pipe.scheduler, CMStochasticIterativeScheduler)
    cfg = pipe.scheduler.config
    assert (cfg.num_train_timesteps, cfg.sigma_min, cfg.sigma_max, cfg.sigma_data, cfg.rho) == (40, 0.002, 80.0, 0.5, 7.0)
    img = pipe(batch_size=2, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert img.shape == (2, 16, 16, 3) and np.isfinite(img).all()
    two = pipe(batch_size=2, timesteps=[22, 0], num_inference_steps=None, output_type="np").images
    assert two.shape == (2, 16, 16, 3)
    assert list((tmp_path / "run" / "samples").glob("step_*.png"))
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    assert state["step"] == 3
    # the export holds the EMA weights, not the online ones
    ema_first = state["ema"]["shadow_params"][0]
    assert torch.equal(next(pipe.unet.parameters()).detach(), ema_first)


def test_resume_is_exact(data, tmp_path):
    train(_cfg(data, tmp_path / "straight", max_steps=4))
    train(_cfg(data, tmp_path / "split", max_steps=2))
    assert torch.load(tmp_path / "split" / STATE_FILE, weights_only=True)["step"] == 2
    train(_cfg(data, tmp_path / "split", max_steps=4, resume=True))
    a = torch.load(tmp_path / "straight" / STATE_FILE, weights_only=True)
    b = torch.load(tmp_path / "split" / STATE_FILE, weights_only=True)
    assert b["step"] == a["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"]):
        assert torch.equal(pa, pb)
    assert a["ema"]["optimization_step"] == b["ema"]["optimization_step"]
    assert torch.equal(a["rng"]["noise"], b["rng"]["noise"])


def test_init_from_exported_weights_continues_at_start_step(data, tmp_path):
    """A fresh machine: continue from a committed export (EMA weights) at a given curriculum step."""
    first = train(_cfg(data, tmp_path / "first", max_steps=2))
    exported = UNet2DModel.from_pretrained(first, subfolder="unet").state_dict()
    cfg = _cfg(data, tmp_path / "second", max_steps=5)
    cfg.init_from, cfg.start_step, cfg.checkpoint_steps = str(first), 4, 4
    train(cfg)
    state = torch.load(tmp_path / "second" / STATE_FILE, weights_only=True)
    assert state["step"] == 5 and state["ema"]["optimization_step"] == 5
    changed = [k for k in exported if not torch.equal(exported[k], state["model"][k])]
    assert changed  # one step of training moved the weights ...
    close = [k for k in exported if torch.allclose(exported[k], state["model"][k], atol=1e-2)]
    assert len(close) == len(exported)  # ... from the exported ones, not from a new initialisation


def test_max_minutes_stops_training_and_exports(data, tmp_path):
    cfg = _cfg(data, tmp_path / "run", max_steps=10**6)
    cfg.max_minutes = 0.02  # 1.2 s of wall-clock time
    out = train(cfg)
    step = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["step"]
    assert 0 < step < 10**6
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_lr_factor_warms_up_then_decays_along_a_half_cosine():
    cfg = TrainConfig(data="-", warmup_steps=4, max_steps=100, lr_decay_steps=40)
    assert [lr_factor(c, c, cfg) for c in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    late = [lr_factor(1000, s, cfg) for s in range(101)]
    assert late[:61] == [1.0] * 61  # constant up to the window's start, step 60
    assert late[80] == pytest.approx(0.5) and late[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(late[60:], late[61:]))  # strictly falling inside the window
    assert lr_factor(1, 90, cfg) == pytest.approx(0.5 * lr_factor(1000, 90, cfg))  # warm-up times decay
    cfg.lr_decay_steps = 0
    assert lr_factor(1000, 99, cfg) == 1.0


def test_lr_decay_added_on_resume_equals_a_decayed_run(data, tmp_path):
    """A run resumed with a decay follows it from its first resumed step (not the stored, constant LR)."""
    def run(name, max_steps, decay, resume=False):
        cfg = _cfg(data, tmp_path / name, max_steps, resume)
        cfg.lr_decay_steps = decay
        train(cfg)
        return torch.load(tmp_path / name / STATE_FILE, weights_only=True)

    constant = run("constant", 4, 0)
    decayed = run("decayed", 4, 3)  # the window starts at step 1: step 3's LR factor is 0.75, step 4's 0.25
    run("split", 2, 0)
    split = run("split", 4, 3, resume=True)
    assert decayed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert constant["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-4)
    for k in decayed["model"]:
        assert torch.equal(decayed["model"][k], split["model"][k]), k
    assert any(not torch.equal(decayed["model"][k], constant["model"][k]) for k in decayed["model"])


def test_lr_on_resume_replaces_the_stored_one_only_when_given(data, tmp_path):
    def resumed(name, lr):
        cfg = _cfg(data, tmp_path / name, 2)
        cfg.lr = 1e-4
        train(cfg)
        cfg = _cfg(data, tmp_path / name, 4, resume=True)  # past the 2-step warm-up: factor 1
        cfg.lr = lr
        train(cfg)
        return torch.load(tmp_path / name / STATE_FILE, weights_only=True)["optimizer"]["param_groups"][0]["lr"]

    assert resumed("kept", None) == pytest.approx(1e-4)
    assert resumed("replaced", 5e-5) == pytest.approx(5e-5)


def test_resume_without_state_fails(data, tmp_path):
    with pytest.raises(FileNotFoundError):
        train(_cfg(data, tmp_path / "none", max_steps=1, resume=True))


def test_ect_schedule_properties():
    s = ECTSchedule(pretrain_steps=100, stage_steps=50, max_stage=8)
    t = torch.logspace(np.log10(0.002), np.log10(80), 200)
    assert torch.all(s.r_of_t(t, 0) == 0) and torch.all(s.r_of_t(t, 99) == 0)  # stage 0: denoiser training
    prev = torch.zeros_like(t)
    for step in range(100, 100 + 50 * 10, 50):
        r = s.r_of_t(t, step)
        assert torch.all(r < t) and torch.all(r >= 0)
        assert torch.all(r >= prev)  # r -> t monotonically over training
        prev = r
    assert s.stage(10_000) == 8
    assert torch.all(s.r_of_t(t, 10_000)[t > 1] / t[t > 1] > 0.96)  # gap t - r shrinks to a few % of t
    sig = s.sample_t(100_000, torch.Generator().manual_seed(0), torch.device("cpu"), 0.002, 80.0)
    assert abs(sig.log().median().item() - (-1.1)) < 0.05 and sig.min() >= 0.002 and sig.max() <= 80


def test_per_sample_sigma_equals_one_call_per_sample():
    """Training's batched form of the consistency function: row i equals the scalar call at sigma_i."""
    unet = UNet2DModel(sample_size=8, block_out_channels=(16, 16), down_block_types=("DownBlock2D",) * 2,
                       up_block_types=("UpBlock2D",) * 2, layers_per_block=1, norm_num_groups=8)
    sched, x = make_scheduler(), torch.randn(3, 3, 8, 8)
    sigma = torch.tensor([0.002, 0.7, 80.0])
    with torch.no_grad():
        batched = consistency_function(unet, sched, x, sigma)
        rows = [consistency_function(unet, sched, x[i:i + 1], float(sigma[i])) for i in range(3)]
    assert batched.dtype == x.dtype
    for i in range(3):
        assert torch.allclose(batched[i:i + 1], rows[i], atol=1e-5)
    assert torch.equal(batched[0], x[0])  # boundary condition at sigma_min
    assert not torch.allclose(batched[1], x[1], atol=1e-2)


def test_heun_step_follows_the_exact_ode_of_gaussian_data():
    """Data N(0, s^2 I): D(x, sigma) = x s^2 / (s^2 + sigma^2), and the ODE's solution is
    x(r) = x(t) sqrt(s^2 + r^2) / sqrt(s^2 + t^2). Heun is second order (error / gap^3), Euler first."""
    s2 = 0.5**2
    denoiser = lambda x, sigma: x * s2 / (s2 + sigma.view(-1, 1, 1, 1) ** 2)  # noqa: E731
    x_t = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 1.0, 5.0, 80.0], dtype=torch.float64)
    errors = []
    for gap in (0.2, 0.1):
        r = t * (1 - gap)
        exact = x_t * ((s2 + r**2) / (s2 + t**2)).sqrt().view(-1, 1, 1, 1)
        heun = heun_step(denoiser, x_t, t, r, sigma_min=0.002)
        euler = heun_step(denoiser, x_t, t, r, sigma_min=1e9)  # r < sigma_min everywhere: Euler steps
        errors.append((heun - exact).abs().max().item())
        assert errors[-1] < (euler - exact).abs().max().item() / 5
    assert 6 < errors[0] / errors[1] < 10  # third-order local error: halving the gap divides it by ~8
    calls = []
    counting = lambda x, sigma: calls.append(sigma) or denoiser(x, sigma)  # noqa: E731
    to_zero = heun_step(counting, x_t, t, torch.zeros_like(t), sigma_min=0.002)
    assert torch.allclose(to_zero, denoiser(x_t, t))  # r = 0: the Euler step lands on D(x_t, t)
    assert len(calls) == 1  # and needs no second evaluation
    calls.clear()
    mixed = heun_step(counting, x_t, t, torch.tensor([0.0, 0.9, 4.5, 72.0], dtype=torch.float64), sigma_min=0.002)
    assert len(calls) == 2 and torch.allclose(mixed[0], denoiser(x_t, t)[0])  # Heun where r > 0, Euler at r = 0


def test_distilling_an_oracle_teacher_is_consistency_training():
    """With the ideal denoiser of each image's own point mass (D = x0) the teacher's ODE step is exactly
    consistency training's x0 + r z, so the two losses agree (up to r < sigma_min, where CT evaluates at
    sigma_min); a teacher that is not the oracle gives another loss."""
    unet = UNet2DModel(sample_size=8, block_out_channels=(16, 16), down_block_types=("DownBlock2D",) * 2,
                       up_block_types=("UpBlock2D",) * 2, layers_per_block=1, norm_num_groups=8)
    sched = make_scheduler()
    schedule = ECTSchedule(pretrain_steps=0, stage_steps=1, max_stage=3, p_mean=0.5, p_std=0.5)  # t > sigma_min
    x0 = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for step in (0, 2):  # stage 1 (big gap) and stage 3
        losses = [ect_loss(unet, sched, schedule, x0, step, torch.Generator().manual_seed(7), teacher)
                  for teacher in (None, lambda x, sigma: x0, lambda x, sigma: 0.9 * x0)]
        assert torch.isfinite(losses[0]) and losses[0] > 0
        assert torch.allclose(losses[1], losses[0], rtol=1e-4)
        assert not torch.allclose(losses[2], losses[0], rtol=1e-2)


def test_cli_train_distils_a_teacher(data, tmp_path):
    """`cmedit train --teacher`: a trained export distils into a new run; a mismatched teacher is one line."""
    first = train(_cfg(data, tmp_path / "teacher", max_steps=2))
    from cmedit.cli.train import train as train_cmd

    common = [str(data), "--resolution", "16", "--preset", "tiny", "--batch-size", "2", "--max-steps", "3",
              "--pretrain-steps", "1", "--stage-steps", "1", "--threads", "1"]
    res = CliRunner().invoke(train_cmd, [*common, "--run-dir", str(tmp_path / "student"), "--teacher", str(first)])
    assert res.exit_code == 0, res.output
    state = torch.load(tmp_path / "student" / STATE_FILE, weights_only=True)
    assert state["step"] == 3 and state["config"]["teacher"] == str(first)
    more = [arg if arg != "3" else "4" for arg in common]  # --max-steps 4
    res = CliRunner().invoke(train_cmd, [*more, "--run-dir", str(tmp_path / "student"), "--resume"])
    assert res.exit_code == 0 and f"note: resuming with teacher None; the run so far used {first}" in res.output
    res = CliRunner().invoke(train_cmd, [*common[:2], "8", *common[3:], "--run-dir", str(tmp_path / "bad"),
                                         "--teacher", str(first)])
    assert res.exit_code == 1
    expected = f"Error: teacher {first}: 3 channels at 16 px, the training images are 3 channels at 8 px"
    assert res.output.strip() == expected
    assert not (tmp_path / "bad").exists()
    res = CliRunner().invoke(train_cmd, [*common, "--run-dir", str(tmp_path / "none"),
                                         "--teacher", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "no such model folder" in res.output and not (tmp_path / "none").exists()


def test_trajectories_of_an_oracle_teacher_end_at_its_image():
    """For the ideal denoiser of a single image x0 the ODE's solutions are the lines x0 + sigma z'; the one
    through the start 80 z has z' = z - x0 / 80. The stored points lie on it, at the Karras levels of the
    scheduler, and every trajectory ends at x0."""
    from cmedit.training.trajectories import solve_trajectories, trajectory_sigmas

    x0 = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    sigmas = trajectory_sigmas(6)
    assert torch.allclose(sigmas, make_scheduler(6).sigmas.float()) and sigmas[0] == 80 and sigmas[-1] == 0.002
    points, ends = solve_trajectories(lambda x, sigma: x0.expand_as(x), z, sigmas, sigma_min=0.002)
    assert points.shape == (4, 6, 3, 8, 8) and torch.equal(points[:, 0], 80 * z)
    line = x0[:, None] + sigmas.view(1, -1, 1, 1, 1) * (z - x0 / 80)[:, None]
    assert torch.allclose(points, line, rtol=1e-5, atol=1e-5)
    assert torch.allclose(ends, x0.expand_as(ends), atol=1e-5)


def test_trajectory_set_batches_and_loss():
    """Batches pair a stored point with its level and its trajectory's end; start_fraction 1 takes sigma_max
    only. The loss is zero exactly when f(x_t, t) is the end (at sigma_min, f is the identity)."""
    from cmedit.training.trajectories import TrajectorySet, trajectory_loss, trajectory_sigmas

    sigmas = trajectory_sigmas(5)
    points = torch.randn(3, 5, 3, 8, 8).half()
    ends = torch.rand(3, 3, 8, 8).half()
    traj = TrajectorySet(points, ends, sigmas)
    x_t, t, end = traj.batch(64, torch.Generator().manual_seed(0), start_fraction=0.0)
    assert x_t.dtype == torch.float32 and x_t.shape == (64, 3, 8, 8) and set(t.tolist()) == set(sigmas.tolist())
    for x, sigma, e in zip(x_t, t, end):
        i = next(i for i in range(3) if torch.equal(e, ends[i].float()))
        assert torch.equal(x, points[i, sigmas.tolist().index(sigma.item())].float())
    _, t, _ = traj.batch(16, torch.Generator().manual_seed(0), start_fraction=1.0)
    assert (t == 80).all()
    unet = UNet2DModel(sample_size=8, block_out_channels=(16, 16), down_block_types=("DownBlock2D",) * 2,
                       up_block_types=("UpBlock2D",) * 2, layers_per_block=1, norm_num_groups=8)
    at_min = torch.full((3,), 0.002)
    target = torch.rand(3, 3, 8, 8)
    assert trajectory_loss(unet, make_scheduler(), target, at_min, target) < 1e-6
    assert trajectory_loss(unet, make_scheduler(), target, at_min, target + 0.1) > 0.1


def test_trajectory_levels_above_a_sigma_and_anchor_batches():
    """With min_sigma only the levels at or above it are drawn. An anchor batch noises the images at the given
    levels with the noise generator's draws, and its targets are the anchor's outputs there: a student that
    is the anchor has zero loss on it (training keeps it as it is)."""
    from cmedit.training.consistency import unet_denoiser
    from cmedit.training.trajectories import TrajectorySet, anchor_batch, trajectory_loss, trajectory_sigmas

    sigmas = trajectory_sigmas(6)
    traj = TrajectorySet(torch.randn(3, 6, 3, 8, 8).half(), torch.rand(3, 3, 8, 8).half(), sigmas)
    _, t, _ = traj.batch(200, torch.Generator().manual_seed(0), start_fraction=0.0, min_sigma=10.0)
    assert set(t.tolist()) == {s for s in sigmas.tolist() if s >= 10} and len(set(t.tolist())) >= 2
    with pytest.raises(ValueError, match="no trajectory level at or above sigma 100"):
        traj.batch(4, torch.Generator(), start_fraction=0.0, min_sigma=100.0)

    unet = UNet2DModel(sample_size=8, block_out_channels=(16, 16), down_block_types=("DownBlock2D",) * 2,
                       up_block_types=("UpBlock2D",) * 2, layers_per_block=1, norm_num_groups=8).eval()
    scheduler = make_scheduler()
    x0 = torch.rand(16, 3, 8, 8) * 2 - 1
    low = sigmas[sigmas < 10]
    x_t, t, target = anchor_batch(unet_denoiser(unet, scheduler), x0, low, torch.Generator().manual_seed(3),
                                  torch.Generator().manual_seed(4))
    expected_t = low[torch.randint(0, len(low), (16,), generator=torch.Generator().manual_seed(3))]
    assert torch.equal(t, expected_t) and (t < 10).all()
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(x_t, x0 + t.view(-1, 1, 1, 1) * z)
    with torch.no_grad():
        assert torch.allclose(target, consistency_function(unet, scheduler, x_t, t))
        assert trajectory_loss(unet, scheduler, x_t, t, target) < 1e-5
        assert trajectory_loss(unet, scheduler, x_t, t, x0) > 0.1


def test_anchor_batch_start_fraction():
    """A start_fraction of an anchor batch is at the first level (sigma_max for the upper levels), the rest uniform."""
    from cmedit.training.trajectories import anchor_batch

    levels = make_scheduler().sigmas.float()[:13]
    x0 = torch.zeros(400, 3, 4, 4)
    args = (lambda x, sigma: x, x0, levels, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    assert (anchor_batch(*args, start_fraction=1.0)[1] == levels[0]).all()
    t = anchor_batch(*args[:3], torch.Generator().manual_seed(0), torch.Generator().manual_seed(1),
                     start_fraction=0.5)[1]
    share = (t == levels[0]).float().mean().item()  # expected 0.5 + 0.5 / 13
    assert 0.42 < share < 0.65 and len(set(t.tolist())) == 13


def test_cli_train_on_teacher_trajectories(data, tmp_path):
    """`--teacher-trajectories`: the teacher's ODE is solved into RUN_DIR/trajectories (whole chunks of 128),
    reused on --resume (and on another run with the same grid); without a teacher, or with another grid, one
    line."""
    from cmedit.cli.train import train as train_cmd
    from cmedit.training.trajectories import TrajectorySet

    teacher = train(_cfg(data, tmp_path / "teacher", max_steps=2))
    common = [str(data), "--resolution", "16", "--preset", "tiny", "--batch-size", "2", "--threads", "1",
              "--teacher", str(teacher), "--teacher-trajectories", "129", "--teacher-steps", "3"]
    res = CliRunner().invoke(train_cmd, [*common, "--max-steps", "2", "--run-dir", str(tmp_path / "student")])
    assert res.exit_code == 0, res.output
    assert "from 256 stored ODE trajectories" in res.output
    cache = tmp_path / "student" / "trajectories"
    assert sorted(p.name for p in cache.iterdir()) == ["chunk0000.npz", "chunk0001.npz", "sigmas.npy", "source.json"]
    stored = np.load(cache / "chunk0000.npz")
    assert stored["points"].shape == (128, 3, 3, 16, 16) and stored["ends"].shape == (128, 3, 16, 16)
    assert np.isfinite(stored["points"]).all() and np.abs(stored["ends"]).max() <= 1
    before = (cache / "chunk0000.npz").stat().st_mtime_ns
    res = CliRunner().invoke(train_cmd, [*common, "--max-steps", "3", "--run-dir", str(tmp_path / "student"),
                                         "--resume"])
    assert res.exit_code == 0, res.output
    assert (cache / "chunk0000.npz").stat().st_mtime_ns == before  # reused, not solved again
    assert torch.load(tmp_path / "student" / STATE_FILE, weights_only=True)["step"] == 3
    # the same chunk again, solved from scratch, is the stored one (seeded per chunk)
    from cmedit.training.loop import load_teacher

    again = TrajectorySet.build(tmp_path / "again", load_teacher(str(teacher), torch.zeros(1, 3, 16, 16), "cpu")[0],
                                1, 3, (3, 16, 16), seed=0, device=torch.device("cpu"), show_progress=False)
    assert torch.equal(again.points, torch.from_numpy(stored["points"]))
    res = CliRunner().invoke(train_cmd, [*common[:-1], "4", "--max-steps", "4", "--run-dir",
                                         str(tmp_path / "student"), "--resume"])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {cache}: trajectories on another grid (3 levels); use another --run-dir or the same --teacher-steps"
    digest = json.loads((cache / "source.json").read_text())["weights"]
    assert len(digest) == 64 and digest == weights_digest(load_pipeline(teacher).unet)
    other = train(_cfg(data, tmp_path / "other", max_steps=1))
    other_digest = weights_digest(load_pipeline(other).unet)
    for change, made_by in ((["--teacher", str(other)], f"not {other} (weights {other_digest[:12]}) with seed 0"),
                            (["--seed", "1"], f"not {teacher} (weights {digest[:12]}) with seed 1")):
        res = CliRunner().invoke(train_cmd, [*common, *change, "--max-steps", "4", "--run-dir",
                                             str(tmp_path / "student"), "--resume"])
        assert res.exit_code == 1
        assert res.output.strip().endswith(f"Error: {cache}: trajectories of teacher {teacher} (weights {digest[:12]}) "
                                           f"with seed 0, {made_by}; use another --run-dir"), res.output
    res = CliRunner().invoke(train_cmd, [*common[:9], "--teacher-trajectories", "5", "--run-dir", str(tmp_path / "x")])
    assert res.exit_code == 1 and res.output.strip() == "Error: --teacher-trajectories needs --teacher"
    assert not (tmp_path / "x").exists()
    # the teacher is known by its weights: a copy elsewhere is the same teacher, a folder retrained in place is not
    shutil.copytree(teacher, tmp_path / "moved")
    res = CliRunner().invoke(train_cmd, [*common[:-6], "--teacher", str(tmp_path / "moved"), *common[-4:],
                                         "--max-steps", "4", "--run-dir", str(tmp_path / "student"), "--resume"])
    assert res.exit_code == 0, res.output
    assert (cache / "chunk0000.npz").stat().st_mtime_ns == before
    shutil.rmtree(teacher)
    shutil.copytree(other, teacher)
    res = CliRunner().invoke(train_cmd, [*common, "--max-steps", "5", "--run-dir", str(tmp_path / "student"),
                                         "--resume"])
    assert res.exit_code == 1 and f"not {teacher} (weights {other_digest[:12]})" in res.output, res.output


def test_a_trajectory_cache_without_weights_is_matched_by_name(tmp_path):
    """Caches written before source.json recorded the weights: the same name is adopted (and the weights recorded)."""
    from cmedit.training.trajectories import TrajectorySet

    teacher = lambda x, sigma: torch.zeros_like(x)  # noqa: E731
    build = functools.partial(TrajectorySet.build, tmp_path, teacher, 1, 3, (3, 8, 8), seed=0,
                              device=torch.device("cpu"), show_progress=False)
    build(source="a")
    (tmp_path / "source.json").write_text(json.dumps({"teacher": "a", "seed": 0}) + "\n")
    with pytest.raises(ValueError, match="trajectories of teacher a with seed 0, not b \\(weights 0123456789ab\\)"):
        build(source="b", weights="0123456789abcdef")
    assert len(build(source="a", weights="0123456789abcdef")) == 128
    assert json.loads((tmp_path / "source.json").read_text()) == {"teacher": "a", "seed": 0,
                                                                  "weights": "0123456789abcdef"}
    with pytest.raises(ValueError, match="not a \\(weights fedcba987654\\)"):
        build(source="a", weights="fedcba9876543210")


def test_cli_train_trajectories_with_an_anchor(data, tmp_path):
    """`--anchor`: trajectories train the levels at or above --anchor-below, the anchor model's outputs the
    ones below; the settings are stored with the run. Bad combinations are one line, before any run folder."""
    from cmedit.cli.train import train as train_cmd

    teacher = train(_cfg(data, tmp_path / "teacher", max_steps=2))
    common = [str(data), "--resolution", "16", "--preset", "tiny", "--batch-size", "4", "--threads", "1",
              "--teacher", str(teacher), "--teacher-trajectories", "2", "--teacher-steps", "4", "--max-steps", "2"]
    res = CliRunner().invoke(train_cmd, [*common, "--run-dir", str(tmp_path / "student"), "--anchor", str(teacher),
                                         "--anchor-below", "20", "--anchor-fraction", "0.25"])
    assert res.exit_code == 0, res.output
    assert f"keeping {teacher} below sigma 20" in res.output
    config = torch.load(tmp_path / "student" / STATE_FILE, weights_only=True)["config"]
    assert (config["anchor"], config["anchor_below"], config["anchor_fraction"]) == (str(teacher), 20.0, 0.25)
    bad = {
        "--anchor needs --teacher-trajectories or --high-anchor": ["--teacher-trajectories", "0", "--anchor",
                                                                   str(teacher)],
        "anchor below sigma 100: the trajectory grid (80 .. 0.002) must have levels on both sides":
            ["--anchor", str(teacher), "--anchor-below", "100"],
        "anchor fraction 0.1 of a batch of 4 leaves no room for the anchor or for the trajectories":
            ["--anchor", str(teacher), "--anchor-fraction", "0.1"],
        f"{tmp_path / 'nope'}: no such model folder": ["--anchor", str(tmp_path / "nope")],
    }
    for message, args in bad.items():
        res = CliRunner().invoke(train_cmd, [*common, "--run-dir", str(tmp_path / "bad"), *args])
        assert res.exit_code == 1 and res.output.strip().startswith(f"Error: {message}"), res.output
        assert not (tmp_path / "bad").exists()


def test_high_anchor_merges_two_models_levels(data, tmp_path):
    """`high_anchor` with `anchor`: a network started from model A, trained on A's outputs at and above
    anchor_below and B's below, moves to B at the low levels and stays with A at sigma_max."""
    from dataclasses import replace

    from cmedit.training.consistency import unet_denoiser

    a = train(_cfg(data, tmp_path / "a", max_steps=2))
    b = train(replace(_cfg(data, tmp_path / "b", max_steps=2), seed=1))
    cfg = replace(_cfg(data, tmp_path / "merged", max_steps=100), init_from=str(a), high_anchor=str(a),
                  anchor=str(b), anchor_below=10.0, anchor_fraction=0.5, batch_size=8, lr=5e-3, ema_max_decay=0.0)
    out = train(cfg)
    assert torch.load(tmp_path / "merged" / STATE_FILE, weights_only=True)["config"]["high_anchor"] == str(a)

    models = {name: ConsistencyModelPipeline.from_pretrained(path) for name, path in
              {"a": a, "b": b, "merged": out}.items()}
    f = {name: unet_denoiser(pipe.unet.eval(), pipe.scheduler) for name, pipe in models.items()}
    images = torch.from_numpy(np.load(data)).permute(0, 3, 1, 2).float() / 127.5 - 1
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(5))

    def gap(x, y, sigma):  # RMS difference of two models' outputs at one level
        t = torch.full((len(images),), sigma)
        x_t = images + sigma * noise
        with torch.no_grad():
            return (f[x](x_t, t) - f[y](x_t, t)).pow(2).mean().sqrt().item()

    for low in (3.52, 0.5):  # measured ratios: 0.63 and 0.62
        assert gap("merged", "b", low) < 0.75 * gap("a", "b", low)
    assert gap("merged", "a", 80.0) < 0.6 * gap("merged", "b", 80.0)  # measured: 0.46


def test_cli_train_with_a_high_anchor(data, tmp_path):
    """`--high-anchor` with `--anchor` trains without a teacher; bad combinations are one line, before any run
    folder."""
    from cmedit.cli.train import train as train_cmd

    model = train(_cfg(data, tmp_path / "model", max_steps=2))
    common = [str(data), "--resolution", "16", "--preset", "tiny", "--batch-size", "4", "--threads", "1",
              "--max-steps", "2"]
    res = CliRunner().invoke(train_cmd, [*common, "--run-dir", str(tmp_path / "merged"), "--anchor", str(model),
                                         "--high-anchor", str(model)])
    assert res.exit_code == 0, res.output
    assert f"keeping {model} at and above sigma 10, keeping {model} below sigma 10" in res.output
    both = ["--high-anchor", str(model), "--anchor", str(model)]
    bad = [
        ("--high-anchor needs --anchor and no --teacher", ["--high-anchor", str(model)]),
        ("--high-anchor needs --anchor and no --teacher", [*both, "--teacher", str(model)]),
        ("anchor below sigma 100: the sampling grid (80 .. 0.002) must have levels on both sides",
         [*both, "--anchor-below", "100"]),
        ("anchor fraction 0.1 of a batch of 4 leaves no room for the anchor or for the high anchor",
         [*both, "--anchor-fraction", "0.1"]),
        (f"{tmp_path / 'nope'}: no such model folder", ["--high-anchor", str(tmp_path / "nope"), "--anchor", str(model)]),
    ]
    for message, args in bad:
        res = CliRunner().invoke(train_cmd, [*common, "--run-dir", str(tmp_path / "bad"), *args])
        assert res.exit_code == 1 and res.output.strip().startswith(f"Error: {message}"), res.output
        assert not (tmp_path / "bad").exists()


def test_load_images_folder_and_npy(tmp_path):
    from PIL import Image

    arr = np.random.default_rng(1).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", arr)
    (tmp_path / "imgs").mkdir()
    for i, a in enumerate(arr):
        Image.fromarray(a).save(tmp_path / "imgs" / f"{i}.png")
    x, y = load_images(tmp_path / "a.npy"), load_images(tmp_path / "imgs")
    assert x.shape == (3, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x, y)
    with pytest.raises(ValueError):
        load_images(tmp_path / "nothing")


def test_load_images_folder_flattens_alpha_crops_square_and_names_bad_files(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4, :, :] = (200, 0, 0, 255)  # top half opaque red, bottom half transparent black
    Image.fromarray(rgba).save(tmp_path / "imgs" / "a.png")
    wide = np.zeros((8, 16, 3), dtype=np.uint8)
    wide[:, 4:12] = 255  # the centre square white, the side strips black
    Image.fromarray(wide).save(tmp_path / "imgs" / "b.png")
    x = load_images(tmp_path / "imgs")
    assert x.shape == (2, 3, 8, 8)
    assert torch.allclose(x[0, :, 4:], torch.ones(3, 4, 8))  # transparent -> white, not black
    assert torch.allclose(x[0, 0, :4], torch.full((4, 8), 200 / 127.5 - 1))
    assert torch.allclose(x[1], torch.ones(3, 8, 8))  # centre-cropped, not squashed
    (tmp_path / "imgs" / "c.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"c\.png: not an image file that can be read"):
        load_images(tmp_path / "imgs")


def test_group_weights_draw_every_group_equally(tmp_path):
    """Five variants of one design and one single image: with --groups each design is half the draws."""
    np.save(tmp_path / "g.npy", np.array([3, 3, 3, 3, 3, 7]))
    weights = load_group_weights(tmp_path / "g.npy", 6)
    assert torch.allclose(weights, torch.tensor([0.2] * 5 + [1.0], dtype=torch.float64))
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 2, 2)
    g = torch.Generator().manual_seed(0)
    drawn = random_batch(images, 20_000, g, hflip=False, weights=weights)[:, 0, 0, 0]
    assert abs((drawn == 5).float().mean().item() - 0.5) < 0.02
    assert set(drawn.unique().tolist()) == set(range(6))
    uniform = random_batch(images, 20_000, g, hflip=False)[:, 0, 0, 0]
    assert abs((uniform == 5).float().mean().item() - 1 / 6) < 0.02


def test_group_weights_reject_bad_files(tmp_path):
    np.save(tmp_path / "short.npy", np.arange(5))
    np.save(tmp_path / "float.npy", np.ones(6))
    with pytest.raises(ValueError, match="5 group ids for 6 images"):
        load_group_weights(tmp_path / "short.npy", 6)
    with pytest.raises(ValueError, match="integer"):
        load_group_weights(tmp_path / "float.npy", 6)


def test_train_with_groups_runs_and_checkpoints(data, tmp_path):
    np.save(tmp_path / "groups.npy", np.array([0, 0, 0, 0, 1, 1, 2, 3]))
    cfg = _cfg(data, tmp_path / "run", max_steps=2)
    cfg.groups = str(tmp_path / "groups.npy")
    train(cfg)
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    assert state["step"] == 2 and state["config"]["groups"] == cfg.groups


def test_cli_train_import_is_light_and_validates(data, tmp_path):
    code = ("import sys, cmedit.cli; before = 'torch' in sys.modules; import cmedit.cli.train; "
            "print(before or 'torch' not in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    from cmedit.cli.train import train as train_cmd

    res = CliRunner().invoke(train_cmd, [str(data), "--run-dir", str(tmp_path / "r"), "--resume"])
    assert res.exit_code != 0 and "does not exist" in res.output
    np.save(tmp_path / "groups.npy", np.arange(3))
    res = CliRunner().invoke(train_cmd, [str(data), "--groups", str(tmp_path / "groups.npy"),
                                         "--run-dir", str(tmp_path / "g"), "--max-steps", "1"])
    assert res.exit_code == 1 and res.output.strip() == f"Error: {tmp_path / 'groups.npy'}: 3 group ids for 8 images"
    assert not (tmp_path / "g").exists()
    res = CliRunner().invoke(train_cmd, [str(data), "--run-dir", str(tmp_path / "d"), "--max-steps", "5",
                                         "--lr-decay-steps", "6"])
    assert res.exit_code == 1 and res.output.strip() == "Error: --lr-decay-steps 6 is more than --max-steps 5"
    assert not (tmp_path / "d").exists()
    res = CliRunner().invoke(train_cmd, ["--help"])
    assert res.exit_code == 0 and "Example" in res.output


def test_cli_train_refuses_cuda_where_there_is_none(data, tmp_path, monkeypatch):
    # accelerate would otherwise train on the CPU without a word
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from cmedit.cli.train import train as train_cmd

    res = CliRunner().invoke(train_cmd, [str(data), "--run-dir", str(tmp_path / "c"), "--device", "cuda",
                                         "--max-steps", "1"])
    assert res.exit_code == 1
    assert res.output.strip() == "Error: device cuda: CUDA is not available to this torch build on this machine"
    assert not (tmp_path / "c").exists()


def test_cli_train_unreadable_image_is_one_line(tmp_path):
    from PIL import Image

    from cmedit.cli.train import train as train_cmd

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "b.png").write_bytes(b"junk")
    res = CliRunner().invoke(train_cmd, [str(tmp_path / "imgs"), "--run-dir", str(tmp_path / "r"), "--max-steps", "1"])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {tmp_path / 'imgs' / 'b.png'}: not an image file that can be read"
    assert not (tmp_path / "r").exists()
