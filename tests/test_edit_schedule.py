"""A model folder's own schedules (``cmedit.json``: ``edit_timesteps``, ``generate_timesteps``), used when none
is given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cmedit import ConsistencyEditPipeline, Inpainting, load_pipeline
from cmedit.cli import main
from cmedit.evaluation.runner import evaluate
from cmedit.models.loading import ModelLoadError
from cmedit.core.schedules import EDIT_CONFIG_NAME
from conftest import RESOLUTION, tiny_scheduler, tiny_unet

OWN = [26, 22, 18, 14]
OWN_GENERATE = [14, 0]


def tiny_pipe() -> ConsistencyEditPipeline:
    pipe = ConsistencyEditPipeline(unet=tiny_unet(), scheduler=tiny_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A saved tiny model that names its edit and generation schedules."""
    path = tmp_path_factory.mktemp("own_schedule")
    pipe = tiny_pipe()
    pipe.edit_timesteps, pipe.generate_timesteps = OWN, OWN_GENERATE
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


def sample(pipe, **schedule) -> torch.Tensor:
    return pipe.generate(batch_size=2, generator=torch.Generator().manual_seed(3), output_type="pt", **schedule).images


def test_generation_without_a_schedule_takes_the_models_own():
    pipe = tiny_pipe()
    one_step = sample(pipe)
    assert torch.equal(one_step, sample(pipe, num_inference_steps=1))  # none of its own: 1 step, as diffusers
    pipe.generate_timesteps = OWN_GENERATE
    own = sample(pipe)
    assert torch.equal(own, sample(pipe, timesteps=OWN_GENERATE)) and not torch.allclose(own, one_step)
    assert torch.equal(sample(pipe, num_inference_steps=1), one_step)  # an explicit schedule wins
    assert torch.equal(fill(pipe), fill(pipe, num_inference_steps=4))  # edits keep their own default


def test_saved_and_loaded_with_the_folder(folder):
    both = {"edit_timesteps": OWN, "generate_timesteps": OWN_GENERATE}
    assert json.loads((folder / EDIT_CONFIG_NAME).read_text()) == both
    for pipe in (load_pipeline(folder), ConsistencyEditPipeline.from_pretrained(folder)):
        assert (pipe.edit_timesteps, pipe.generate_timesteps) == (OWN, OWN_GENERATE)


def test_either_key_alone(tmp_path):
    pipe = tiny_pipe()
    pipe.generate_timesteps = OWN_GENERATE
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / EDIT_CONFIG_NAME).read_text()) == {"generate_timesteps": OWN_GENERATE}
    loaded = load_pipeline(tmp_path)
    assert (loaded.edit_timesteps, loaded.generate_timesteps) == (None, OWN_GENERATE)


def test_a_folder_without_one_has_none(tmp_path):
    tiny_pipe().save_pretrained(tmp_path)
    assert not (tmp_path / EDIT_CONFIG_NAME).exists()
    pipe = load_pipeline(tmp_path)
    assert pipe.edit_timesteps is None and pipe.generate_timesteps is None


def test_the_embedded_model_names_a_schedule_valid_for_it():
    pipe = load_pipeline()
    assert pipe.edit_timesteps is not None
    pipe._check_schedule(None, pipe.edit_timesteps)  # raises if it does not fit the model's grid
    if pipe.generate_timesteps is not None:
        pipe._check_schedule(None, pipe.generate_timesteps)


@pytest.mark.parametrize("content, message", [
    ('{"edit_timesteps": [14, 18]}', "strictly descending"),
    ('{"edit_timesteps": [45, 10]}', "must lie in [0, 39]"),
    ('{"edit_timesteps": []}', "non-empty"),
    ('{"edit_timesteps": "26,22"}', "must be a list"),
    ('{"edit_timesteps": null}', "must be a list"),
    ('{"generate_timesteps": [0, 14]}', "strictly descending"),
    ('{"edit_timesteps": [26, 14], "steps": 4}', "some of edit_timesteps, generate_timesteps"),
    ('{}', "not a valid schedule file"),
    ('[26, 14]', "not a valid schedule file"),
    ("not json", "not a valid schedule file"),
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


def test_cli_generate_uses_it_unless_told_otherwise(folder, tmp_path):
    outputs = {}
    for name, schedule in (("default", []), ("own", ["--timesteps", "14,0"]), ("one", ["--steps", "1"])):
        result = CliRunner().invoke(main, ["generate", "--model", str(folder), "--seed", "0", "-q",
                                           "-o", str(tmp_path / f"{name}.png"), *schedule])
        assert result.exit_code == 0, result.output
        outputs[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    assert (outputs["default"] == outputs["own"]).all() and not (outputs["default"] == outputs["one"]).all()
