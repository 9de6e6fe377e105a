"""Batch editing (issue 41): files split across processes with accelerate, masks per image, manifests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cmedit.batch import read_manifest, run_manifest
from cmedit.batch.manifest import ManifestError
from cmedit.batch.masks import match_masks
from cmedit.cli import main
from conftest import RESOLUTION

R = RESOLUTION
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def restore_library_logging():
    """The CLI with -q sets the "cmedit" logger to ERROR (``show_library_notes``): put it back after
    this module, so that later tests' ``caplog`` sees the library's warnings."""
    import logging

    library = logging.getLogger("cmedit")
    saved = library.handlers[:], library.propagate, library.level
    yield
    library.handlers[:], library.propagate = saved[0], saved[1]
    library.setLevel(saved[2])


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def pixels(seed, shape=(R, R, 3)):
    return np.random.RandomState(seed).randint(0, 256, shape, dtype=np.uint8)


def save_mask(path, rows):
    mask = np.zeros((R, R), np.uint8)
    mask[rows] = 255
    Image.fromarray(mask).save(path)
    return mask > 0


def read(path):
    return np.asarray(Image.open(path))


def test_manifest_rows_and_one_error_per_bad_row(tmp_path):
    (tmp_path / "jobs.csv").write_text(
        "image,mask,output,factor,strength,seed,prompt\n"
        "a.png,m.png,out/a.png,,0.5,3,\n"
        "b.png,,,2,,,a cat\n"
        ",m.png,,,,,\n"            # row 3: no image
        "c.png,,,,1.5,,\n"         # row 4: strength out of range
        "d.png,,,,,x,\n")          # row 5: seed not an integer
    rows, errors = read_manifest(tmp_path / "jobs.csv")
    assert [row.number for row in rows] == [1, 2]
    assert rows[0].image == tmp_path / "a.png" and rows[0].mask == tmp_path / "m.png"  # relative to the manifest
    assert (rows[0].output, rows[0].strength, rows[0].seed) == (tmp_path / "out/a.png", 0.5, 3)
    assert (rows[1].factor, rows[1].prompt, rows[1].mask, rows[1].output) == (2, "a cat", None, None)
    assert [(e.number, e.message.split(" ")[0]) for e in errors] == [(3, "no"), (4, "strength"), (5, "seed")]
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"image": "/abs/a.png", "seed": 7}) + "\n\nnot json\n"
                                         + json.dumps({"image": "b.png", "colour": 1}) + "\n")
    rows, errors = read_manifest(tmp_path / "jobs.jsonl")
    assert rows[0].image == Path("/abs/a.png") and rows[0].seed == 7
    assert [(e.number, e.message) for e in errors] == [
        (2, "not valid JSON (Expecting value)"), (3, "unknown column 'colour' (columns: image, mask, output, "
                                                    "factor, strength, seed, prompt)")]
    (tmp_path / "bad.csv").write_text("picture,mask\nx.png,y.png\n")
    with pytest.raises(ValueError, match="'image' column"):
        read_manifest(tmp_path / "bad.csv")


def test_masks_matched_by_stem():
    images = [Path("in/cat.png"), Path("in/dog.jpg"), Path("in/owl.png"), Path("in/emu.png")]
    masks = [Path("m/cat.png"), Path("m/dog_mask.png"), Path("m/emu.png"), Path("m/emu_mask.png")]
    matched = match_masks(images, masks)
    assert matched[images[0]] == masks[0] and matched[images[1]] == masks[1]
    assert matched[images[2]].startswith("no mask named owl") and matched[images[3]].startswith("several masks")


def test_mask_dir_gives_each_image_its_own_mask(tmp_path, model_dir):
    (tmp_path / "masks").mkdir()
    keep = {}
    for i, rows in enumerate([slice(0, 5), slice(8, 16)]):
        Image.fromarray(pixels(i)).save(tmp_path / f"im{i}.png")
        keep[i] = ~save_mask(tmp_path / "masks" / f"im{i}.png", rows)
    Image.fromarray(pixels(5)).save(tmp_path / "nomask.png")
    result = run("inpaint", "--mask-dir", tmp_path / "masks", f"{tmp_path}/*.png", "--model", model_dir,
                 "--steps", 1, "--seed", 0, "-o", f"{tmp_path}/out/")
    assert result.exit_code == 1
    assert "nomask.png: no mask named nomask.* or nomask_mask.* in" in result.stderr
    assert "2 done, 0 skipped, 1 failed" in result.stderr and "failed: " in result.stderr
    for i in range(2):
        out = read(tmp_path / "out" / f"im{i}_inpainted.png")
        assert (out[keep[i]] == pixels(i)[keep[i]]).all()  # its own mask's keep area, exactly
        assert (out[~keep[i]] != pixels(i)[~keep[i]]).any()  # and its own hole filled


def test_run_manifest_matches_the_command_line(tmp_path, pipe, model_dir):
    Image.fromarray(pixels(1)).save(tmp_path / "a.png")
    save_mask(tmp_path / "m.png", slice(3, 9))
    (tmp_path / "jobs.csv").write_text("image,mask,output,seed,prompt\n"
                                       "a.png,m.png,lib/a.png,4,\n"
                                       "a.png,,lib/b.png,,\n"           # no mask, no alpha
                                       "a.png,m.png,lib/c.png,,a cat\n")  # this pipeline takes no prompt
    rows, errors = read_manifest(tmp_path / "jobs.csv")
    messages = []
    summary = run_manifest(pipe, rows, "inpaint", seed=0, num_inference_steps=2,
                           report=lambda kind, message: messages.append((kind, message)))
    assert len(summary.done) == 1 and len(summary.failed) == 2
    assert "row 2: " in summary.failed[0][1] and "no mask given" in summary.failed[0][1]
    assert "row 3: " in summary.failed[1][1] and "takes none" in summary.failed[1][1]
    cli = run("inpaint", "--mask", tmp_path / "m.png", tmp_path / "a.png", "--model", model_dir, "--steps", 2,
              "--seed", 4, "-q", "-o", tmp_path / "cli.png")
    assert cli.exit_code == 0, cli.output
    assert (read(tmp_path / "lib/a.png") == read(tmp_path / "cli.png")).all()  # the row's seed, as the CLI
    again = run_manifest(pipe, rows[:1], "inpaint", seed=0, num_inference_steps=2)
    assert again.skipped == [str(tmp_path / "a.png")] and not again.done  # resumable


def test_generate_image_i_uses_seed_plus_i_and_resumes(tmp_path, model_dir):
    out = tmp_path / "g"
    result = run("generate", "-n", 5, "--batch-size", 2, "--model", model_dir, "--seed", 5, "--steps", 1, "-q",
                 "-o", f"{out}/")
    assert result.exit_code == 0, result.output
    one = run("generate", "--model", model_dir, "--seed", 8, "--steps", 1, "-q", "-o", tmp_path / "one.png")
    assert one.exit_code == 0
    assert (read(out / "0003.png") == read(tmp_path / "one.png")).all()  # independent of its batch
    first = read(out / "0001.png")
    (out / "0001.png").unlink()
    (out / "0004.png").write_bytes((out / "0000.png").read_bytes())  # an output that exists: kept
    result = run("generate", "-n", 5, "--batch-size", 2, "--model", model_dir, "--seed", 5, "--steps", 1,
                 "-o", f"{out}/")
    assert result.exit_code == 0 and "1 done, 4 skipped, 0 failed" in result.stderr
    assert (read(out / "0001.png") == first).all() and (read(out / "0004.png") == read(out / "0000.png")).all()


def test_two_processes_same_bytes_summary_failure_and_resume(tmp_path, model_dir):
    """One launch of two processes through accelerate: the outputs are those of one process, byte for
    byte, with the seed the main process drew; a file that fails in the second process's share is
    reported; outputs written by an earlier, interrupted run are kept and the rest is done."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(6):
        Image.fromarray(pixels(10 + i)).save(inputs / f"f{i}.png")
    (inputs / "z_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # last: in process 2's share
    save_mask(tmp_path / "m.png", slice(4, 12))
    args = ["inpaint", "--mask", tmp_path / "m.png", f"{inputs}/*.png", "--model", model_dir, "--steps", 2,
            "--batch-size", 2, "--device", "cpu"]
    out = tmp_path / "two"
    out.mkdir()
    earlier = {name: pixels(99 + i) for i, name in enumerate(["f0_inpainted.png", "f4_inpainted.png"])}
    for name, image in earlier.items():  # written before the run was stopped
        Image.fromarray(image).save(out / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "cmedit", *map(str, args), "--num-processes", "2",
                           "-o", f"{out}/"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    seeds = re.findall(r"seed: (\d+)", done.stderr)  # (a progress bar may share its line)
    assert len(seeds) == 1  # drawn once, by the main process, and used by both
    # Blocks of --batch-size 2 files: [f0 f1] [f2 f3] to the first process, [f4 f5] [z_broken] to the second.
    assert "process 1/2 (cpu" in done.stderr and "): 3 files" in done.stderr  # f1, f2, f3 (f0 done before)
    assert "process 2/2 (cpu" in done.stderr and "): 2 files" in done.stderr  # f5, z_broken (f4 done before)
    assert f"Error: {inputs}/z_broken.png: cannot read image" in done.stderr, done.stderr
    assert "4 done, 2 skipped, 1 failed" in done.stderr and f"failed: {inputs}/z_broken.png" in done.stderr
    assert "Traceback" not in done.stderr
    # One process on the same folder state (the same outputs skipped, so the same batches: a file's pixels
    # may round differently in a batch of another size) and the same thread count.
    (tmp_path / "one").mkdir()
    for name, image in earlier.items():
        Image.fromarray(image).save(tmp_path / "one" / name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes (rounding differs with the number of threads)
    try:
        reference = run(*args, "--seed", seeds[0], "-q", "-o", f"{tmp_path}/one/")
    finally:
        torch.set_num_threads(threads)
    assert reference.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    for path in (tmp_path / "one").iterdir():
        if path.name in earlier:
            assert (read(out / path.name) == earlier[path.name]).all() and (read(path) == earlier[path.name]).all()
        else:
            assert path.read_bytes() == (out / path.name).read_bytes(), path.name


def test_class_conditional_file_result_does_not_depend_on_its_batch(tmp_path):
    from cmedit import ConsistencyEditPipeline
    from conftest import tiny_scheduler, tiny_unet

    model = tmp_path / "model"
    ConsistencyEditPipeline(unet=tiny_unet(num_class_embeds=10), scheduler=tiny_scheduler()).save_pretrained(model)
    for i in range(3):
        Image.fromarray(pixels(20 + i)).save(tmp_path / f"c{i}.png")
    common = ["--model", model, "--steps", 1, "--seed", 2, "-q"]
    assert run("colorize", f"{tmp_path}/c*.png", *common, "-o", f"{tmp_path}/batched/").exit_code == 0
    assert run("colorize", tmp_path / "c2.png", *common, "-o", tmp_path / "alone.png").exit_code == 0
    # Random labels drawn per file from the seed, as for the file alone (not by position in the batch).
    assert (read(tmp_path / "batched" / "c2_colorized.png") == read(tmp_path / "alone.png")).all()


def test_generate_without_seed_numbers_after_the_highest_existing(tmp_path, model_dir):
    out = tmp_path / "g"
    out.mkdir()
    (out / "0002.png").write_bytes(b"kept")  # not an image: only its number counts, and it is never read
    (out / "notes.png").write_bytes(b"kept")
    result = run("generate", "-n", 2, "--model", model_dir, "--steps", 1, "-o", f"{out}/")
    assert result.exit_code == 0, result.output
    assert "2 done, 0 skipped, 0 failed" in result.stderr
    seed = int(re.search(r"seed: (\d+)", result.stderr).group(1))
    assert sorted(p.name for p in out.iterdir()) == ["0002.png", "0003.png", "0004.png", "notes.png"]
    assert (out / "0002.png").read_bytes() == b"kept"
    again = run("generate", "--model", model_dir, "--steps", 1, "-q", "--seed", seed + 4, "-o", tmp_path / "one.png")
    assert again.exit_code == 0
    assert (read(out / "0004.png") == read(tmp_path / "one.png")).all()  # number i: the drawn seed + i
