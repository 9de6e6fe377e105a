"""``scripts/average_weights.py``: the output is a loadable model whose tensors are the weighted mean."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file

from cmedit import ConsistencyEditPipeline, load_pipeline
from conftest import run_script, tiny_scheduler, tiny_unet

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"
WEIGHTS = Path("unet") / SAFETENSORS_WEIGHTS_NAME


def run(*args) -> subprocess.CompletedProcess:
    return run_script(SCRIPT, *args)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    paths = []
    for seed in (0, 1):
        path = tmp_path_factory.mktemp(f"model{seed}")
        ConsistencyEditPipeline(unet=tiny_unet(seed=seed), scheduler=tiny_scheduler()).save_pretrained(path)
        paths.append(path)
    return paths


def test_average_is_the_weighted_mean_and_loads(folders, tmp_path):
    a, b = (load_file(f / WEIGHTS) for f in folders)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    out = tmp_path / "avg"
    result = run(*folders, "-o", out, "--weights", "3,1")
    assert result.returncode == 0, result.stderr
    averaged = load_file(out / WEIGHTS)
    assert averaged.keys() == a.keys()
    for name in a:
        torch.testing.assert_close(averaged[name], 0.75 * a[name] + 0.25 * b[name])
    pipe = load_pipeline(str(out))
    assert isinstance(pipe, ConsistencyEditPipeline)
    # The first folder's scheduler and configs are carried over.
    assert (out / "scheduler" / "scheduler_config.json").read_text() == \
        (folders[0] / "scheduler" / "scheduler_config.json").read_text()


def test_refuses_other_architectures_and_existing_output(folders, tmp_path):
    other = tmp_path / "other"
    ConsistencyEditPipeline(unet=tiny_unet(num_class_embeds=10), scheduler=tiny_scheduler()).save_pretrained(other)
    result = run(folders[0], other, "-o", tmp_path / "out")
    assert result.returncode != 0 and "architecture" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    result = run(*folders, "-o", existing)
    assert result.returncode != 0 and "--overwrite" in result.stderr
    assert not any(existing.iterdir())
    assert run(*folders, "-o", existing, "--overwrite").returncode == 0
