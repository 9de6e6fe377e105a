"""``scripts/held_level_gap.py``: RMS distances between models' denoisers at fixed noise levels."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cmedit import ConsistencyEditPipeline
from conftest import RESOLUTION, run_script, tiny_scheduler, tiny_unet

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "held_level_gap.py"


def run(*args) -> subprocess.CompletedProcess:
    return run_script(SCRIPT, *args)


def rows(stdout: str) -> dict[str, list[float]]:
    """The table's rows: model name -> its numbers."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and re.fullmatch(r"[0-9.]+", cells[-1]):
            out[cells[0].removesuffix(" (reference)")] = [float(c) for c in cells[1:]]
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gap")
    models = []
    for seed in (0, 1):
        path = root / f"model{seed}"
        ConsistencyEditPipeline(unet=tiny_unet(seed=seed), scheduler=tiny_scheduler()).save_pretrained(path)
        models.append(path)
    images = root / "images.npy"
    rng = np.random.default_rng(0)
    np.save(images, rng.integers(0, 256, size=(10, RESOLUTION, RESOLUTION, 3), dtype=np.uint8))
    return models, images


def test_distances_are_zero_to_itself_and_symmetric(setup):
    (a, b), images = setup
    one = run("--reference", a, a, b, "--images", images, "--sigmas", "2,0.5", "--batch-size", "4")
    assert one.returncode == 0, one.stderr
    table = rows(one.stdout)
    assert set(table) == {str(a), str(b)} and len(table[str(b)]) == 4
    assert table[str(a)][0] == table[str(a)][2] == 0.0
    assert min(table[str(b)][0], table[str(b)][2]) > 0
    other = rows(run("--reference", b, a, "--images", images, "--sigmas", "2,0.5").stdout)
    assert other[str(a)][0] == pytest.approx(table[str(b)][0], abs=1e-4)  # same noise, whatever the batch size
    assert other[str(b)][1] == pytest.approx(table[str(b)][1], abs=1e-4)  # b's own error from the images


def test_bad_input_fails_cleanly(setup, tmp_path):
    """A non-zero exit with an error line on stderr, no traceback and no table."""
    (a, _), images = setup
    for args in (["--reference", a, tmp_path / "missing"], ["--reference", a, a, "--sigmas", "0"],
                 ["--reference", a, a, "--images", tmp_path / "none.npy"]):
        result = run(*args, *([] if "--images" in args else ["--images", images]))
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert "error: " in result.stderr.strip().splitlines()[-1] and result.stdout == "", result
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, RESOLUTION * 2, RESOLUTION * 2, 3), dtype=np.uint8))
    result = run("--reference", a, a, "--images", wrong)
    assert result.returncode != 0 and "px" in result.stderr and "Traceback" not in result.stderr
