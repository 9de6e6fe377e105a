"""Reliability under concurrency, faults and hostile input (issue 42; docs/guarantees.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cmedit.cli import main
from cmedit.io import files as io_files
from conftest import RESOLUTION, tiny_scheduler, tiny_unet

R = RESOLUTION
ROOT = Path(__file__).resolve().parents[1]


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def image(path: Path, seed: int = 0, size: tuple[int, int] = (R, R)) -> Path:
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _racer(barrier: Path, me: int, n: int, args: list[str], results) -> None:
    """A cmedit process (spawned) whose write waits until every process of the race has reached its write
    (a barrier of files), so that all have passed the "output exists?" check before any writes."""
    original = io_files.write_image

    def write_image(*a, **k):
        (barrier / str(me)).touch()
        deadline = time.time() + 60
        while len(list(barrier.iterdir())) < n and time.time() < deadline:
            time.sleep(0.01)
        return original(*a, **k)

    io_files.write_image = write_image
    result = CliRunner().invoke(main, args)
    results.put((me, result.exit_code, result.stderr))


def race(tmp_path: Path, commands: list[list]) -> list[tuple[int, str]]:
    """Run the commands in concurrent processes (spawned: a forked child of a process that has used torch's
    OpenMP threads can hang in its first parallel operation)."""
    import multiprocessing

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_racer, args=(barrier, i, len(commands), [str(a) for a in command], results))
                 for i, command in enumerate(commands)]
    for process in processes:
        process.start()
    collected = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    return [(code, stderr) for _, code, stderr in collected]


def test_two_processes_writing_one_output_never_replace_each_other(tmp_path, model_dir):
    source = image(tmp_path / "in.png")
    out = tmp_path / "same.png"
    results = race(tmp_path, [["colorize", source, "--model", model_dir, "--steps", 1, "--seed", seed, "-o", out]
                              for seed in (1, 2)])
    for code, stderr in results:
        assert code == 0 and "Traceback" not in stderr, stderr
    wrote = [stderr for _, stderr in results if f"wrote {out}" in stderr]
    lost = [stderr for _, stderr in results if f"{out} exists" in stderr]
    assert len(wrote) == 1 and len(lost) == 1, results
    assert Image.open(out).size == (R, R)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["barrier", "in.png", "same.png"]  # no temporaries left


def test_existing_outputs_one_rule_skipped_with_exit_0_and_never_replaced(tmp_path, model_dir):
    source = image(tmp_path / "in.png")
    explicit = tmp_path / "explicit.png"
    explicit.write_bytes(b"mine")
    result = run("colorize", source, "--model", model_dir, "--steps", 1, "-o", explicit)
    assert result.exit_code == 0 and f"skipped {source}: {explicit} exists" in result.stderr
    assert explicit.read_bytes() == b"mine"
    derived = tmp_path / "out"
    derived.mkdir()
    (derived / "in_colorized.png").write_bytes(b"mine")
    result = run("colorize", source, "--model", model_dir, "--steps", 1, "-o", f"{derived}/")
    assert result.exit_code == 0 and "exists" in result.stderr
    assert (derived / "in_colorized.png").read_bytes() == b"mine"
    assert run("colorize", source, "--model", model_dir, "--steps", 1, "-q", "-o", explicit,
               "--overwrite").exit_code == 0
    assert Image.open(explicit).size == (R, R)


def test_generate_twice_into_one_folder_adds_files(tmp_path, model_dir):
    folder = tmp_path / "gen"
    args = ("generate", "--model", model_dir, "--steps", 1, "-q", "-n", 2, "-o", f"{folder}/")  # random seeds
    assert run(*args).exit_code == 0
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / "0007.png").write_bytes(b"kept")  # numbering continues after the highest number
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["0000.png", "0001.png", "0007.png", "0008.png", "0009.png"]
    result = run(*args[:-4], "--seed", 0, "-n", 3, "-o", f"{folder}/")  # --seed: resumable, existing skipped
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["0000.png", "0001.png", "0002.png", "0007.png", "0008.png",
                                                         "0009.png"]
    assert all((folder / name).read_bytes() == data for name, data in first.items())
    assert (folder / "0007.png").read_bytes() == b"kept"
    one = tmp_path / "one.png"
    one.write_bytes(b"kept")
    result = run("generate", "--model", model_dir, "--steps", 1, "-o", one)
    assert result.exit_code == 0 and "skipped" in result.stderr and one.read_bytes() == b"kept"


def test_generate_takes_the_next_number_when_another_run_takes_one_meanwhile(tmp_path, model_dir, monkeypatch):
    folder = tmp_path / "gen"
    original = io_files.write_image
    taken = []

    def racing(path, *args, **kwargs):  # another process writes this name just before us, once
        if not taken:
            taken.append(path)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"other")
        return original(path, *args, **kwargs)

    monkeypatch.setattr(io_files, "write_image", racing)
    result = run("generate", "--model", model_dir, "--steps", 1, "-q", "-n", 2, "-o", f"{folder}/")  # random seed
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert (folder / "0000.png").read_bytes() == b"other"
    taken.clear()  # with --seed, number i is image i: the one written meanwhile is kept and skipped
    seeded = tmp_path / "seeded"
    result = run("generate", "--model", model_dir, "--steps", 1, "--seed", 0, "-n", 2, "-o", f"{seeded}/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in seeded.iterdir()) == ["0000.png", "0001.png"]
    assert (seeded / "0000.png").read_bytes() == b"other" and "1 done, 1 skipped, 0 failed" in result.stderr


def test_failing_temporary_file_is_one_error_line_and_the_batch_goes_on(tmp_path, model_dir, monkeypatch):
    for i in range(3):
        image(tmp_path / f"in{i}.png", seed=i)
    out = tmp_path / "out"
    real_open = open

    def no_inodes(file, mode="r", *args, **kwargs):  # the folder runs out of inodes for one file
        if "xb" in str(mode) and "in1_colorized" in str(file):
            raise OSError(28, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_inodes)
    result = run("colorize", *(tmp_path / f"in{i}.png" for i in range(3)), "--model", model_dir, "--steps", 1,
                 "-o", f"{out}/")
    monkeypatch.undo()
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "in1_colorized.png: cannot write (No space left on device)" in errors[0]
    assert "Traceback" not in result.stderr and "2 done, 0 skipped, 1 failed" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["in0_colorized.png", "in2_colorized.png"]


def _interrupted(signum: int, args: list[str], results) -> None:
    """In a forked process: send ``signum`` to oneself while the output's temporary file is being written."""
    def fsync(fd):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler interrupts this

    os.fsync = fsync
    result = CliRunner().invoke(main, args)
    results.put((result.exit_code, result.stderr))


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_mid_write_leave_nothing_and_exit_128_plus_signal(tmp_path, model_dir, signum, code):
    import multiprocessing

    source = image(tmp_path / "in.png")
    out = tmp_path / "out"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    args = ["colorize", str(source), "--model", str(model_dir), "--steps", "1", "-q", "-o", f"{out}/"]
    process = context.Process(target=_interrupted, args=(signum, args, results))
    process.start()
    exit_code, stderr = results.get(timeout=60)
    process.join(timeout=30)
    assert exit_code == code and "Traceback" not in stderr, stderr
    assert list(out.iterdir()) == []  # neither the output nor its temporary file


def test_stale_temporaries_of_dead_runs_are_removed_on_the_next_run(tmp_path, model_dir):
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()  # its pid is free now
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".cmedit-{finished.pid}-0badf00d.in_colorized.png.tmp"
    alive = out / f".cmedit-{os.getppid()}-0badf00d.x.png.tmp"  # a running process's: kept
    foreign = out / ".in_colorized.png.tmp"  # not cmedit's naming: kept
    for path in (stale, alive, foreign):
        path.write_bytes(b"")
    result = run("colorize", image(tmp_path / "in.png"), "--model", model_dir, "--steps", 1, "-q", "-o", f"{out}/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted([alive.name, foreign.name, "in_colorized.png"])


@pytest.fixture(scope="module")
def config_folder(tmp_path_factory):
    """A tiny model folder to copy and corrupt."""
    from cmedit import ConsistencyEditPipeline

    path = tmp_path_factory.mktemp("configs") / "model"
    ConsistencyEditPipeline(unet=tiny_unet(), scheduler=tiny_scheduler()).save_pretrained(path)
    return path


def corrupted(source: Path, target: Path, file: str, key: str, value) -> Path:
    import shutil

    shutil.copytree(source, target)
    config = json.loads((target / file).read_text())
    config[key] = value
    (target / file).write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("file,key,value,shown", [
    ("unet/config.json", "sample_size", 100000, "sample_size 100000"),
    ("unet/config.json", "sample_size", 0, "sample_size 0"),
    ("unet/config.json", "sample_size", -32, "sample_size -32"),
    ("unet/config.json", "sample_size", "32", "sample_size '32'"),
    ("unet/config.json", "sample_size", 33, "sample_size 33"),  # the tiny UNet halves once: 33 is odd
    ("scheduler/scheduler_config.json", "num_train_timesteps", 1e9, "num_train_timesteps 1000000000.0"),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 10**9, "num_train_timesteps 1000000000"),
    ("scheduler/scheduler_config.json", "sigma_max", float("nan"), "sigma_max nan"),
    ("model_index.json", "_class_name", "StableDiffusionPipeline", "_class_name 'StableDiffusionPipeline'"),
])
def test_model_folder_config_refused_at_load_naming_file_and_value(tmp_path, config_folder, file, key, value, shown):
    from cmedit.models.loading import ModelLoadError, load_pipeline

    bad = corrupted(config_folder, tmp_path / "bad", file, key, value)
    with pytest.raises(ModelLoadError) as error:
        load_pipeline(bad)
    assert str(bad / file) in str(error.value) and shown in str(error.value)


def test_bad_model_config_is_one_error_line_in_the_cli(tmp_path, config_folder):
    bad = corrupted(config_folder, tmp_path / "bad", "unet/config.json", "sample_size", 100000)
    result = run("colorize", image(tmp_path / "in.png"), "--model", bad, "-o", tmp_path / "o.png")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ") and "sample_size 100000" in result.stderr
    assert not (tmp_path / "o.png").exists()


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    from cmedit import ConsistencyEditPipeline

    unet = tiny_unet()
    with torch.no_grad():
        unet.conv_out.weight.fill_(float("nan"))
    path = tmp_path_factory.mktemp("nan") / "model"
    ConsistencyEditPipeline(unet=unet, scheduler=tiny_scheduler()).save_pretrained(path)
    return path


@pytest.mark.parametrize("command", [["inpaint", "--mask", "{mask}"], ["generate"]])
def test_non_finite_network_output_is_an_error_and_nothing_is_written(tmp_path, nan_model, command):
    mask = np.zeros((R, R), np.uint8)
    mask[4:9, 4:9] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    args = [a.format(mask=tmp_path / "m.png") for a in command]
    if command[0] != "generate":
        args.append(image(tmp_path / "in.png"))
    result = run(*args, "--model", nan_model, "--steps", 2, "--seed", 0, "-q", "-o", tmp_path / "o.png")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not finite (NaN or inf)" in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_max_pixels_lifts_pillows_own_limit(tmp_path, monkeypatch):
    from cmedit.io.files import ImageReadError, read_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's limit, scaled down: it refuses > 2,000
    path = image(tmp_path / "big.png", size=(60, 50))  # 3,000 pixels
    assert read_image(path, max_pixels=5000).size == (60, 50)
    with pytest.raises(ImageReadError, match="more than 2,999 pixels"):
        read_image(path, max_pixels=2999)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
    deep = tmp_path / "deep.png"  # 16-bit colour: read by OpenCV, its orientation by Pillow
    import cv2

    cv2.imwrite(str(deep), np.full((50, 60, 3), 40000, np.uint16))
    assert read_image(deep, max_pixels=5000).bits == 16


@pytest.mark.parametrize("name,options", [("anim.gif", {}), ("anim.png", {}), ("pages.tif", {})])
def test_several_frames_warn_that_the_first_is_used(tmp_path, model_dir, name, options):
    frames = [Image.fromarray(np.full((R, R, 3), value, np.uint8)) for value in (10, 200, 90)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], **options)
    result = run("colorize", tmp_path / name, "--model", model_dir, "--steps", 1, "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    assert f"note: {tmp_path / name}: has 3 frames (animated or multi-page); only the first is used" in result.stderr


def test_dangling_symlink_output_is_refused_and_left_alone(tmp_path, model_dir):
    link = tmp_path / "o.png"
    link.symlink_to(tmp_path / "missing" / "target.png")
    for extra in ([], ["--overwrite"]):
        result = run("colorize", image(tmp_path / "in.png"), "--model", model_dir, "--steps", 1, "-q", "-o", link,
                     *extra)
        assert result.exit_code == 1 and "is a symbolic link to a missing file" in result.stderr
        assert link.is_symlink() and not (tmp_path / "missing").exists()


def test_convert_overwrite_that_fails_midway_leaves_the_old_folder_whole(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from test_checkpoints import HEAD_CHANNELS, SIZE, save_checkpoint

    path, _, _ = save_checkpoint(tmp_path)
    out = tmp_path / "out"
    args = ["convert", str(path), str(out), "--resolution", str(SIZE), "--num-head-channels", str(HEAD_CHANNELS),
            "-q"]
    assert run(*args).exit_code == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    from diffusers import DiffusionPipeline

    original = DiffusionPipeline.save_pretrained

    def disk_full(self, folder, *a, **k):  # the configs are written, then the weights fail
        (Path(folder) / "unet").mkdir(parents=True)
        (Path(folder) / "unet" / "config.json").write_text("{}")
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(DiffusionPipeline, "save_pretrained", disk_full)
    result = run(*args, "--overwrite")
    assert result.exit_code == 1 and "No space left on device" in result.stderr and "Traceback" not in result.output
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.pt"]  # no temporary folder left
    monkeypatch.setattr(DiffusionPipeline, "save_pretrained", original)
    assert run(*args, "--overwrite").exit_code == 0


def run_limited(*args, headroom: int = 1 << 30) -> tuple[int, str, str]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    from limited_cli import run_with_limit

    process = context.Process(target=run_with_limit, args=([str(a) for a in args], headroom, results))
    process.start()
    try:
        return results.get(timeout=120)
    finally:
        process.join(timeout=30)


@pytest.mark.parametrize("case", ["elongated inpaint", "outpaint 1e9", "super-resolve", "candidates"])
def test_oversized_full_resolution_buffers_refused_up_front_within_1_gb(tmp_path, model_dir, case):
    out = tmp_path / "o.png"
    if case == "elongated inpaint":  # 20000 x 32, right half masked: a 20000 x 20000 crop window (4.8 GB)
        image(tmp_path / "in.png", size=(20000, 32))
        mask = np.zeros((32, 20000), np.uint8)
        mask[:, 10000:] = 255
        Image.fromarray(mask).save(tmp_path / "m.png")
        args = ["inpaint", "--mask", tmp_path / "m.png", tmp_path / "in.png"]
        message = "the crop window around the masked region of 20000x20000 pixels exceeds the limit of 64,000,000"
    elif case == "outpaint 1e9":
        args = ["outpaint", "--right", 10**9, image(tmp_path / "in.png")]
        message = f"the outpainted canvas of {10**9 + R}x{R} pixels exceeds the limit"
    elif case == "super-resolve":  # 8000 x 8000 output x 4 candidates
        args = ["super-resolve", "--factor", 16, "--num-samples", 4, image(tmp_path / "in.png", size=(500, 500))]
        message = "the x16 result of 8000x8000 pixels x 4 candidates exceeds the limit"
    else:
        args = ["colorize", "--num-samples", 3, "--max-pixels", 500_000, image(tmp_path / "in.png", size=(500, 400))]
        message = "the result of 500x400 pixels x 3 candidates exceeds the limit of 500,000"
    code, stderr, exception = run_limited(*args, "--model", model_dir, "--steps", 1, "-q", "-o", out)
    assert code == 1 and message in stderr, (code, stderr, exception)
    assert "Traceback" not in stderr and stderr.count("Error:") == 1 and not out.exists()


def test_max_pixels_is_the_limit_of_the_cli_and_of_the_library(tmp_path, model_dir, monkeypatch):
    """--max-pixels refuses before the model loads, and the pipeline's own checks use the same limit and message."""
    import cmedit.fullres.budget as budget
    import cmedit.pipeline as pipeline

    source = image(tmp_path / "in.png", size=(12, 10))
    common = ["--model", model_dir, "--steps", 1, "-q"]

    def one_error(result, message):
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 1 and len(errors) == 1 and message in errors[0], result.stderr
        assert "Traceback" not in result.output

    one_error(run("colorize", source, "--max-pixels", 119, *common, "-o", tmp_path / "a.png"),
              "12x10 has more than 119 pixels")
    result_message = "the result of 12x10 pixels x 2 candidates exceeds the limit of 200 pixels"
    one_error(run("colorize", source, "--num-samples", 2, "--max-pixels", 200, *common, "-o", tmp_path / "b.png"),
              result_message)
    # Without the command's early check, the library refuses the same edit with the same line.
    monkeypatch.setattr(budget, "check_pixels", lambda *args, **kwargs: None)
    one_error(run("colorize", source, "--num-samples", 2, "--max-pixels", 200, *common, "-o", tmp_path / "c.png"),
              result_message)
    monkeypatch.undo()
    # Library defaults far below the user's limit: what the command allows, the library does not refuse.
    monkeypatch.setattr(pipeline, "DEFAULT_MAX_PIXELS", 100)
    monkeypatch.setattr(budget, "DEFAULT_MAX_PIXELS", 100)
    for command in (["colorize"], ["img2img"], ["outpaint", "--right", 4],
                    ["super-resolve", "--factor", 2, "--kernel", "box"]):
        out = tmp_path / f"{command[0]}.png"
        result = run(*command, source, "--max-pixels", 10_000, *common, "-o", out)
        assert result.exit_code == 0 and out.exists(), (command, result.stderr)


def test_without_hard_links_the_write_still_never_replaces(tmp_path, monkeypatch):
    from cmedit.io.files import _link_no_clobber, write_image

    def no_links(*args, **kwargs):  # FAT, some network shares
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3)))  # the exclusive-create fallback
    assert (np.asarray(Image.open(tmp_path / "a.png")) == 0).all()
    (tmp_path / "late.tmp").write_bytes(b"late")  # a finished file that lost the race for the name
    with pytest.raises(FileExistsError):
        _link_no_clobber(tmp_path / "late.tmp", tmp_path / "a.png")
    assert (np.asarray(Image.open(tmp_path / "a.png")) == 0).all()
