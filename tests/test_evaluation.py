"""``cmedit.evaluation.runner`` and ``cmedit eval`` on a tiny random model: structure, counts, masks, baselines."""

from __future__ import annotations

import json
import os
import math

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cmedit import ConsistencyEditPipeline
from cmedit.cli.eval import TASK_NAMES, eval as eval_command
from cmedit.evaluation.masks import box_mask, stroke_mask
from cmedit.evaluation.runner import (TASKS, colourfulness, evaluate, format_table, pooled_psnr, prepare_task, run_cmedit,
                               score, ssim, to_json)
from conftest import RESOLUTION, tiny_scheduler, tiny_unet

STEPS = 2


@pytest.fixture(scope="module")
def tiny_pipe() -> ConsistencyEditPipeline:
    pipe = ConsistencyEditPipeline(unet=tiny_unet(), scheduler=tiny_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Smooth random colour images (noise would make every method equally bad)."""
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(3)]
    return [cv2.resize(s, (RESOLUTION, RESOLUTION), interpolation=cv2.INTER_CUBIC) for s in small]


@pytest.fixture(scope="module")
def results(tiny_pipe, images) -> dict:
    return evaluate(tiny_pipe, images, seeds=(0, 1), num_inference_steps=STEPS, batch_size=2)


def test_results_have_every_task_method_and_metric(results):
    methods = {"inpaint_box": {"cmedit", "telea", "navier_stokes"},
               "inpaint_stroke": {"cmedit", "telea", "navier_stokes"},
               "colorize": {"cmedit", "grey", "ground_truth"}, "sr4": {"cmedit", "bicubic", "nearest"}}
    assert set(results["tasks"]) == set(TASKS) == set(methods)
    assert results["config"]["seeds"] == [0, 1] and results["config"]["num_images"] == 3
    for task, entry in results["tasks"].items():
        assert set(entry["methods"]) == methods[task]
        metrics = entry["methods"]["cmedit"]
        expected = {"psnr", "ssim", "nfe", "seconds_per_image"}
        expected |= {"colourfulness"} if task == "colorize" else set()
        expected |= {"block_error_max", "block_error_mean"} if task == "sr4" else set()
        assert set(metrics) == expected
        for summary in metrics.values():
            assert len(summary["values"]) == 2 and summary["mean"] == pytest.approx(np.mean(summary["values"]))
            assert summary["std"] == pytest.approx(np.std(summary["values"], ddof=1), abs=1e-12)
    assert set(results["tasks"]["colorize"]["methods"]["ground_truth"]) == {"colourfulness"}
    assert results["tasks"]["colorize"]["methods"]["grey"]["colourfulness"]["mean"] == 0
    assert json.loads(to_json(results))["tasks"]["sr4"]["methods"]["nearest"]["psnr"]["values"]
    table = format_table(results)
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # under the header
    assert len(rows) == 3 * 4 and "± " in rows[0]


def test_nfe_counts_network_evaluations_per_image(results, tiny_pipe, images):
    for entry in results["tasks"].values():
        assert entry["methods"]["cmedit"]["nfe"]["values"] == [STEPS, STEPS]
        baselines = [m for name, m in entry["methods"].items() if name not in ("cmedit", "ground_truth")]
        assert baselines and all(m["nfe"]["mean"] == 0 for m in baselines)
    # Explicit timesteps and uneven batches (2 + 1 images) count the same way.
    three = evaluate(tiny_pipe, images, seeds=(0,), timesteps=[30, 10, 0], tasks=("sr4",), batch_size=2)
    assert three["tasks"]["sr4"]["methods"]["cmedit"]["nfe"]["mean"] == 3
    assert three["config"]["timesteps"] == [30, 10, 0]


def test_super_resolution_keeps_block_means_to_rounding(results):
    methods = results["tasks"]["sr4"]["methods"]
    assert max(methods["cmedit"]["block_error_max"]["values"]) < 0.51
    assert methods["nearest"]["block_error_max"]["mean"] == 0  # nearest upsampling repeats the input pixel
    assert methods["bicubic"]["block_error_max"]["mean"] > 0.51


def test_opencv_baselines_are_used(results, images):
    task = prepare_task("inpaint_box", images)
    for i, (image, mask) in enumerate(zip(images, task.masks)):
        telea, ns = task.baselines["telea"](i), task.baselines["navier_stokes"](i)
        assert not np.array_equal(telea, ns)
        keep = mask == 0
        assert np.array_equal(telea[keep], image[keep]) and np.array_equal(ns[keep], image[keep])
        assert (task.inputs[i][mask > 0] == 0).all()  # no method sees the pixels to fill
    methods = results["tasks"]["inpaint_stroke"]["methods"]
    assert methods["telea"]["psnr"]["mean"] != methods["navier_stokes"]["psnr"]["mean"]
    sr = prepare_task("sr4", images)
    assert sr.inputs[0].shape == (RESOLUTION // 4, RESOLUTION // 4, 3)
    assert not np.array_equal(sr.baselines["bicubic"](0), sr.baselines["nearest"](0))


def test_identical_images_give_infinite_psnr_and_strict_json(images):
    assert pooled_psnr(images, images) == math.inf
    other = [images[0], 255 - images[1], images[2]]
    assert math.isfinite(pooled_psnr(images, other))  # one exact image does not make the set infinite
    mask = box_mask(RESOLUTION, RESOLUTION)
    outside = [np.where(mask[..., None] > 0, image, 0).astype(np.uint8) for image in images]
    assert pooled_psnr(images, outside, [mask] * 3) == math.inf  # only the masked pixels count
    assert ssim(images[0], images[0], mask) == pytest.approx(1.0)
    assert ssim(images[0], outside[0], mask) > ssim(images[0], outside[0])  # the kept pixels count less
    text = to_json({"psnr": {"mean": math.inf, "values": [math.inf, -math.inf, math.nan]}})
    assert json.loads(text) == {"psnr": {"mean": "inf", "values": ["inf", "-inf", "nan"]}}


def test_colourfulness_formula():
    grey = np.full((8, 8, 3), 77, dtype=np.uint8)
    assert colourfulness(grey) == 0
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255  # rg = 255, yb = 127.5, no spread: M = 0.3 * sqrt(255^2 + 127.5^2)
    assert colourfulness(red) == pytest.approx(0.3 * math.hypot(255, 127.5))
    half = red.copy()
    half[:4] = 0  # rg and yb each take two values: std = half the range
    assert colourfulness(half) == pytest.approx(math.hypot(127.5, 63.75) + 0.3 * math.hypot(127.5, 63.75))


@pytest.mark.parametrize("size", [16, 32, 64])
def test_masks_cover_the_intended_fraction(size):
    assert np.count_nonzero(box_mask(size, size)) == size * size // 4
    assert box_mask(size, size)[size // 2, size // 2] == 255 and box_mask(size, size)[0, 0] == 0
    masks = [stroke_mask(size, size, index) for index in range(8)]
    for mask in masks:
        assert set(np.unique(mask)) == {0, 255}
        assert 0.25 <= np.count_nonzero(mask) / mask.size < 0.4
    assert len({mask.tobytes() for mask in masks}) == len(masks)
    assert np.array_equal(stroke_mask(size, size, 3), masks[3])
    assert not np.array_equal(stroke_mask(size, size, 3, mask_seed=1), masks[3])


def test_results_do_not_depend_on_the_batch_size(tiny_pipe, images):
    task = prepare_task("inpaint_stroke", images[:2])
    schedule = {"num_inference_steps": STEPS, "timesteps": None}
    one_by_one = run_cmedit(tiny_pipe, task, 0, 1, schedule)
    together = run_cmedit(tiny_pipe, task, 0, 2, schedule)
    for a, b in zip(one_by_one, together):
        assert np.abs(a.astype(int) - b).max() <= 1  # batched convolutions round differently


def test_bad_inputs_are_refused(tiny_pipe, images):
    with pytest.raises(ValueError, match="one size"):
        evaluate(tiny_pipe, [images[0], images[0][:8]], seeds=(0,))
    with pytest.raises(ValueError, match="unknown task"):
        evaluate(tiny_pipe, images, tasks=("deblur",))
    with pytest.raises(ValueError, match="uint8"):
        evaluate(tiny_pipe, [images[0] / 255.0])


def saved_model_and_folder(tmp_path, images):
    """A tiny model saved as a folder, and a folder of ``images`` as PNGs, under ``tmp_path``."""
    model = tmp_path / "model"
    ConsistencyEditPipeline(unet=tiny_unet(), scheduler=tiny_scheduler()).save_pretrained(model)
    folder = tmp_path / "heldout"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    return model, folder


def test_cli_prints_the_table_and_writes_json(tmp_path, images):
    model, folder = saved_model_and_folder(tmp_path, images)
    (folder / "notes.md").write_text("not an image")
    out = tmp_path / "out" / "eval.json"
    args = [str(folder), "--model", str(model), "--steps", "1", "--seeds", "0", "--tasks", "inpaint_box,sr4",
            "--limit", "2", "--json", str(out), "-q"]
    result = CliRunner().invoke(eval_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "| inpaint_box (25% masked) | telea |" in result.output and "| sr4 | nearest |" in result.output
    written = json.loads(out.read_text())
    assert set(written["tasks"]) == {"inpaint_box", "sr4"}
    assert written["config"]["num_images"] == 2 and written["config"]["model"] == str(model)
    assert written["tasks"]["sr4"]["methods"]["cmedit"]["nfe"]["mean"] == 1
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    again = CliRunner().invoke(eval_command, args)
    assert again.exit_code == 1 and "already exists" in again.output
    Image.fromarray(images[0][:8]).save(folder / "small.png")
    mixed = CliRunner().invoke(eval_command, [str(folder), "--model", str(model), "-q"])
    assert mixed.exit_code == 1 and "one size" in mixed.output and "Traceback" not in mixed.output
    bad = CliRunner().invoke(eval_command, [str(folder), "--tasks", "deblur"])
    assert bad.exit_code == 2 and "unknown task deblur" in bad.output
    assert TASK_NAMES == TASKS


def test_features_add_a_kernel_distance_to_every_method_but_the_reference(tiny_pipe, images, tmp_path):
    pytest.importorskip("torchmetrics")
    from cmedit.evaluation.features import FeatureNet, save_feature_net

    torch.manual_seed(0)
    net = FeatureNet(num_classes=2, width=8, image_size=RESOLUTION).eval()
    results = evaluate(tiny_pipe, images, seeds=(0,), num_inference_steps=1, tasks=("colorize", "sr4"), features=net)
    for task, entry in results["tasks"].items():
        for method, metrics in entry["methods"].items():
            assert ("kid_x1000" in metrics) == (method != "ground_truth"), (task, method)
    assert results["config"]["features"] == net.config
    assert "| KID x1000 |" in format_table(results)
    # a set of the originals themselves scores below the grey set on the same features
    task = prepare_task("colorize", images)
    same = score(task, images, images, "cmedit", net)["kid_x1000"]
    grey = results["tasks"]["colorize"]["methods"]["grey"]["kid_x1000"]["mean"]
    assert same < grey
    with pytest.raises(ValueError, match="takes 8x8 images"):
        evaluate(tiny_pipe, images, seeds=(0,), features=FeatureNet(num_classes=2, width=8, image_size=8))

    model = tmp_path / "model"
    tiny_pipe.save_pretrained(model)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    save_feature_net(net, tmp_path / "features")
    args = [str(folder), "--model", str(model), "--steps", "1", "--seeds", "0", "--tasks", "sr4", "-q"]
    result = CliRunner().invoke(eval_command, args + ["--features", str(tmp_path / "features")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "KID x1000" in result.output
    bad = CliRunner().invoke(eval_command, args + ["--features", str(model)])
    assert bad.exit_code == 1 and "not a feature network" in bad.output and "Traceback" not in bad.output


def test_strength_starts_cmedit_part_way_down_the_grid_as_the_pipeline_does(tiny_pipe, images):
    from cmedit.io.files import encode
    from cmedit.core.schedules import strength_timesteps

    results = evaluate(tiny_pipe, images, seeds=(0,), num_inference_steps=STEPS, strength=0.5, tasks=("colorize",))
    config = results["config"]
    assert config["strength"] == 0.5 and config["num_inference_steps"] is None
    assert config["timesteps"] == strength_timesteps(tiny_pipe.scheduler.config.num_train_timesteps, STEPS, 0.5)
    assert "(strength 0.5)" in format_table(results)
    cmedit = results["tasks"]["colorize"]["methods"]["cmedit"]
    assert cmedit["nfe"]["mean"] == STEPS
    # the same numbers as the pipeline's own edit at that strength, and not those of strength 1
    task = prepare_task("colorize", images)
    direct = tiny_pipe.colorize(task.inputs, num_inference_steps=STEPS, strength=0.5, output_type="np",
                                generator=[torch.Generator().manual_seed(0) for _ in images]).images
    expected = pooled_psnr(images, list(encode(direct, None, 8, False, "PNG")))
    assert cmedit["psnr"]["values"] == [pytest.approx(expected)]
    full = evaluate(tiny_pipe, images, seeds=(0,), num_inference_steps=STEPS, tasks=("colorize",))
    assert full["config"]["strength"] == 1.0
    assert full["tasks"]["colorize"]["methods"]["cmedit"]["psnr"]["values"] != cmedit["psnr"]["values"]

    with pytest.raises(ValueError, match="strength or timesteps"):
        evaluate(tiny_pipe, images, seeds=(0,), timesteps=[2, 0], strength=0.5, tasks=("colorize",))
    with pytest.raises(ValueError, match="strength must be in"):
        evaluate(tiny_pipe, images, seeds=(0,), strength=1.5, tasks=("colorize",))


def test_cli_strength_is_passed_on_and_checked(tmp_path, images):
    model, folder = saved_model_and_folder(tmp_path, images)
    out = tmp_path / "eval.json"
    args = [str(folder), "--model", str(model), "--seeds", "0", "--tasks", "sr4", "-q"]
    result = CliRunner().invoke(eval_command, args + ["--steps", "2", "--strength", "0.5", "--json", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 steps" not in result.output and "(strength 0.5)" in result.output
    assert json.loads(out.read_text())["config"]["strength"] == 0.5
    both = CliRunner().invoke(eval_command, args + ["--timesteps", "2,0", "--strength", "0.5"])
    assert both.exit_code == 2 and "not both" in both.output and "Traceback" not in both.output
    zero = CliRunner().invoke(eval_command, args + ["--strength", "0"])
    assert zero.exit_code == 2 and "--strength" in zero.output


def test_cli_composites_transparent_pixels_on_white(tmp_path, images):
    model, folder = saved_model_and_folder(tmp_path, images[:2])
    stickers = tmp_path / "stickers"
    stickers.mkdir()
    for i, image in enumerate(images[:2]):
        rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        rgba[: len(image) // 2] = 0  # top half transparent black
        Image.fromarray(rgba, "RGBA").save(stickers / f"{i}.png")
        on_white = image.copy()
        on_white[: len(image) // 2] = 255
        Image.fromarray(on_white).save(folder / f"{i}.png")
    tables = []
    for source in (folder, stickers):
        out = tmp_path / f"{source.name}.json"
        args = [str(source), "--model", str(model), "--steps", "1", "--seeds", "0", "--tasks", "sr4",
                "--json", str(out), "-q"]
        assert CliRunner().invoke(eval_command, args, catch_exceptions=False).exit_code == 0
        methods = json.loads(out.read_text())["tasks"]["sr4"]["methods"]
        tables.append({method: {metric: value for metric, value in scores.items() if metric != "seconds_per_image"}
                       for method, scores in methods.items()})
    assert tables[0] == tables[1] and set(tables[0]) == {"cmedit", "bicubic", "nearest"}
