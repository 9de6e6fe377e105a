"""A model folder's own edit schedule (``cmedit.json``: ``edit_timesteps``), used when none is given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cmedit import ConsistencyEditPipeline, Inpainting, load_pipeline
from cmedit.cli import main
from cmedit.evaluation import evaluate
from cmedit.loading import ModelLoadError
from cmedit.pipeline import EDIT_CONFIG_NAME
from conftest import RESOLUTION, tiny_scheduler, tiny_unet

OWN = [26, 22, 18, 14]


def tiny_pipe() -> ConsistencyEditPipeline:
    pipe = ConsistencyEditPipeline(unet=tiny_unet(), scheduler=tiny_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A saved tiny model that names its edit schedule."""
    path = tmp_path_factory.mktemp("own_schedule")
    pipe = tiny_pipe()
    pipe.edit_timesteps = OWN
    pipe.save_pretrained(path)
    return path


def fill(pipe, **schedule) -> torch.Tensor:
    image = torch.rand(1, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, RESOLUTION, RESOLUTION)
    mask[..., 4:12, 4:12] = 1
    return pipe.edit(image, Inpainting(mask), generator=torch.Generator().manual_seed(1), output_type="pt",
                     **schedule).images


def test_edits_without_a_schedule_take_the_models_own():
    pipe = tiny_pipe()
    four_steps = fill(pipe)
    assert torch.equal(four_steps, fill(pipe, num_inference_steps=4))  # no schedule of its own: 4 steps
    pipe.edit_timesteps = OWN
    own = fill(pipe)
    assert torch.equal(own, fill(pipe, timesteps=OWN)) and not torch.allclose(own, four_steps)
    assert torch.equal(fill(pipe, num_inference_steps=4), four_steps)  # an explicit schedule wins
    # strength sets its own timesteps from the steps (4 by default), not from the model's schedule
    assert torch.equal(fill(pipe, strength=0.5), fill(pipe, strength=0.5, num_inference_steps=4))
    assert pipe.edit_schedule(None, None, 0.5) == (None, [35, 30, 25, 20])


def test_saved_and_loaded_with_the_folder(folder):
    assert json.loads((folder / EDIT_CONFIG_NAME).read_text()) == {"edit_timesteps": OWN}
    assert load_pipeline(folder).edit_timesteps == OWN
    assert ConsistencyEditPipeline.from_pretrained(folder).edit_timesteps == OWN


def test_a_folder_without_one_has_none(tmp_path):
    tiny_pipe().save_pretrained(tmp_path)
    assert not (tmp_path / EDIT_CONFIG_NAME).exists()
    assert load_pipeline(tmp_path).edit_timesteps is None


def test_the_embedded_model_names_a_schedule_valid_for_it():
    pipe = load_pipeline()
    assert pipe.edit_timesteps is not None
    pipe._check_schedule(None, pipe.edit_timesteps)  # raises if it does not fit the model's grid


@pytest.mark.parametrize("content, message", [
    ('{"edit_timesteps": [14, 18]}', "strictly descending"),
    ('{"edit_timesteps": [45, 10]}', "must lie in [0, 39]"),
    ('{"edit_timesteps": []}', "non-empty"),
    ('{"edit_timesteps": "26,22"}', "must be a list"),
    ('{"edit_timesteps": null}', "must be a list"),
    ('{"steps": 4}', "not a valid edit schedule"),
    ("not json", "not a valid edit schedule"),
])
def test_a_bad_schedule_is_one_clear_error(tmp_path, content, message):
    tiny_pipe().save_pretrained(tmp_path)
    (tmp_path / EDIT_CONFIG_NAME).write_text(content)
    with pytest.raises(ModelLoadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_pipeline(tmp_path)
    Image.fromarray(np.zeros((RESOLUTION, RESOLUTION, 3), np.uint8)).save(tmp_path / "img.png")
    result = CliRunner().invoke(main, ["colorize", str(tmp_path / "img.png"), "--model", str(tmp_path), "-q",
                                       "-o", str(tmp_path / "out.png")])
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and EDIT_CONFIG_NAME in errors[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.png").exists()


def test_cli_edits_use_it_unless_told_otherwise(folder, tmp_path):
    image = np.random.RandomState(0).randint(0, 256, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    outputs = {}
    for name, schedule in (("default", []), ("own", ["--timesteps", "26,22,18,14"]), ("four", ["--steps", "4"])):
        result = CliRunner().invoke(main, ["colorize", str(tmp_path / "img.png"), "--model", str(folder), "--seed", "0",
                                           "-q", "-o", str(tmp_path / f"{name}.png"), *schedule])
        assert result.exit_code == 0, result.output
        outputs[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    assert (outputs["default"] == outputs["own"]).all() and not (outputs["default"] == outputs["four"]).all()


def test_eval_records_the_schedule_it_used(folder):
    images = [np.random.RandomState(i).randint(0, 256, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8) for i in range(2)]
    pipe = load_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    results = evaluate(pipe, images, seeds=(0,), tasks=("sr4",))
    assert results["config"]["timesteps"] == OWN and results["config"]["num_inference_steps"] is None
    assert results["tasks"]["sr4"]["methods"]["cmedit"]["nfe"]["mean"] == len(OWN)
