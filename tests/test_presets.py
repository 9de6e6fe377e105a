"""The table of released models, names to hub ids / local copies / default timesteps, and class names.

No network: hub downloads are replaced by the error they raise offline, and a tiny model stands in
for a released one where a whole command runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import CMStochasticIterativeScheduler
from PIL import Image

from cmedit import ConsistencyEditPipeline
from cmedit.cli import main
from cmedit.models.imagenet_classes import IMAGENET_CLASSES, imagenet_class_index
from cmedit.models.loading import ModelLoadError, load_pipeline, resolve_model
from cmedit.models.presets import IMAGENET64, LSUN256, PRESETS, Family, Preset, checkpoint_dir, preset_for, preset_table
from conftest import tiny_scheduler, tiny_unet
from test_checkpoints import HEAD_CHANNELS, IMAGENET_LIKE, SIZE, openai_state_dict

# From the issue and openai/consistency_models scripts/launch.sh (--ts 0,T,N-1 there is timesteps [T, 0]).
EXPECTED = {
    "cd_imagenet64_l2": (64, 1000, 40, (22, 0)),
    "cd_imagenet64_lpips": (64, 1000, 40, (22, 0)),
    "ct_imagenet64": (64, 1000, 201, (106, 0)),
    "cd_bedroom256_l2": (256, None, 40, (18, 0)),
    "cd_bedroom256_lpips": (256, None, 40, (17, 0)),
    "ct_bedroom256": (256, None, 151, (67, 0)),
    "ct_cat256": (256, None, 151, (62, 0)),
}


def test_the_seven_released_models():
    assert {name: (p.resolution, p.num_classes, p.num_train_timesteps, p.timesteps)
            for name, p in PRESETS.items()} == EXPECTED
    for name, preset in PRESETS.items():
        assert preset.hub_id == f"openai/diffusers-{name}"
        assert preset.url == f"https://openaipublic.blob.core.windows.net/consistency/{name}.pt"
        assert preset.training == name[:2].upper()
        scheduler = CMStochasticIterativeScheduler(num_train_timesteps=preset.num_train_timesteps)
        scheduler.set_timesteps(timesteps=list(preset.timesteps))  # valid on the model's grid
        assert scheduler.sigmas[0] == pytest.approx(80.0) and 0.002 < scheduler.sigmas[1] < 80
        assert f"`{name}`" in preset_table()


def test_the_two_architectures():
    """launch.sh: ImageNet-64 192 channels x (1,2,3,4), 3 blocks; LSUN-256 256 x (1,1,2,2,4,4), 2 blocks;
    attention at 32, 16 and 8 pixels, 64 channels per head."""
    assert IMAGENET64.block_channels == (192, 384, 576, 768) and IMAGENET64.num_res_blocks == 3
    assert IMAGENET64.attention_levels == (False, True, True, True) and IMAGENET64.use_scale_shift_norm
    assert LSUN256.block_channels == (256, 256, 512, 512, 1024, 1024) and LSUN256.num_res_blocks == 2
    assert LSUN256.attention_levels == (False, False, False, True, True, True) and not LSUN256.use_scale_shift_norm


@pytest.mark.parametrize("model, name", [
    ("cd_imagenet64_l2", "cd_imagenet64_l2"),
    ("openai/diffusers-ct_cat256", "ct_cat256"),
    ("/data/models/ct_imagenet64.pt", "ct_imagenet64"),
    ("models/cd_bedroom256_lpips/", "cd_bedroom256_lpips"),
    ("hub_cache/diffusers-ct_bedroom256", "ct_bedroom256"),
    ("cd_imagenet64", None),
    ("my_model.pt", None),
    (None, None),
])
def test_preset_for(model, name):
    preset = preset_for(model)
    assert (preset.name if preset else None) == name


def test_a_name_resolves_to_a_local_copy_else_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert checkpoint_dir() == tmp_path / "cmedit"
    assert resolve_model("cd_imagenet64_l2") == "openai/diffusers-cd_imagenet64_l2"
    (tmp_path / "cmedit" / "ct_cat256" / "unet").mkdir(parents=True)
    assert resolve_model("ct_cat256") == str(tmp_path / "cmedit" / "ct_cat256")
    (tmp_path / "cmedit" / "ct_cat256.pt").write_bytes(b"")
    assert resolve_model("ct_cat256") == str(tmp_path / "cmedit" / "ct_cat256.pt")
    assert resolve_model("some/folder") == "some/folder"


def test_offline_a_name_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    asked = []

    def offline(source, **kwargs):  # what from_pretrained raises without network or hub cache
        asked.append(source)
        raise OSError(f"Cannot load model {source}: the model is not fully cached locally")

    monkeypatch.setattr(ConsistencyEditPipeline, "from_pretrained", offline)
    # The latent-model check's hub request fails offline as from_pretrained does (without waiting on it here).
    monkeypatch.setattr("cmedit.latent.loading.read_model_index", offline)
    with pytest.raises(ModelLoadError) as info:
        load_pipeline("ct_imagenet64")
    message = str(info.value)
    assert asked == ["openai/diffusers-ct_imagenet64"] and "\n" not in message  # a released model: no latent check
    assert "https://openaipublic.blob.core.windows.net/consistency/ct_imagenet64.pt" in message
    assert str(tmp_path / "cmedit" / "ct_imagenet64.pt") in message
    with pytest.raises(ModelLoadError, match="cannot be loaded from the Hugging Face hub"):
        load_pipeline("someone/some-model")


# ----------------------------------------------------------------- a stand-in released model, end to end

TINY = Family("tiny test", resolution=SIZE, num_classes=10, model_channels=32, channel_mult=(1, 2), num_res_blocks=2,
              attention_resolutions=(SIZE // 2,), num_head_channels=HEAD_CHANNELS, use_scale_shift_norm=True)


@pytest.fixture
def tiny_preset(tmp_path, monkeypatch):
    """A released model named ``tiny_cd``, its original .pt in the local checkpoint folder."""
    preset = Preset("tiny_cd", TINY, "nothing", "CD", 40, (30, 0))
    monkeypatch.setitem(PRESETS, preset.name, preset)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "cmedit").mkdir(parents=True)
    state, _ = openai_state_dict(**IMAGENET_LIKE)
    torch.save(state, tmp_path / "cache" / "cmedit" / "tiny_cd.pt")
    return preset


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_name_runs_its_local_checkpoint_with_its_timesteps(tmp_path, tiny_preset):
    pipe = load_pipeline("tiny_cd")  # the .pt, converted in memory; no resolution etc. needed
    assert pipe.resolution == SIZE and pipe.scheduler.config.num_train_timesteps == 40

    result = run("generate", "--model", "tiny_cd", "--seed", 0, "--class-label", 3, "-o", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    assert "tiny_cd: timesteps 30,0" in result.output
    result = run("generate", "--model", "tiny_cd", "--seed", 0, "--class-label", 3, "--timesteps", "30,0", "-q",
                 "-o", tmp_path / "b.png")
    assert result.exit_code == 0 and result.output == ""
    result = run("generate", "--model", tiny_preset.local_paths()[0], "--seed", 0, "--class-label", 3, "--steps", 1,
                 "-q", "-o", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    a, b, c = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "abc")
    assert (a == b).all() and not (a == c).all()


def test_convert_a_released_checkpoint_by_its_name(tmp_path, tiny_preset):
    result = run("convert", tiny_preset.local_paths()[0], tmp_path / "converted")
    assert result.exit_code == 0, result.output
    pipe = load_pipeline(tmp_path / "converted")
    assert pipe.unet.config.sample_size == SIZE and pipe.unet.config.attention_head_dim == HEAD_CHANNELS


# ----------------------------------------------------------------- ImageNet class names

def test_imagenet_class_names():
    assert len(IMAGENET_CLASSES) == len(set(IMAGENET_CLASSES)) == 1000
    assert IMAGENET_CLASSES[0] == "tench" and IMAGENET_CLASSES[145] == "king penguin"
    assert IMAGENET_CLASSES[207] == "golden retriever" and IMAGENET_CLASSES[999] == "toilet tissue"
    assert imagenet_class_index("King  Penguin ") == 145
    with pytest.raises(ValueError, match="did you mean 'king penguin'"):
        imagenet_class_index("king pengiun")


@pytest.fixture(scope="module")
def imagenet_like_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cond")
    ConsistencyEditPipeline(unet=tiny_unet(num_class_embeds=1000), scheduler=tiny_scheduler()).save_pretrained(path)
    return path


def test_class_label_by_name_or_index(tmp_path, imagenet_like_dir):
    common = ["--model", imagenet_like_dir, "--seed", 0, "--steps", 1, "-q"]
    assert run("generate", "--class-label", "king penguin", *common, "-o", tmp_path / "a.png").exit_code == 0
    assert run("generate", "--class-label", 145, *common, "-o", tmp_path / "b.png").exit_code == 0
    assert run("generate", "--class-label", 146, *common, "-o", tmp_path / "c.png").exit_code == 0
    a, b, c = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "abc")
    assert (a == b).all() and not (a == c).all()


@pytest.mark.parametrize("label, message", [("king pengiun", "did you mean 'king penguin'"),
                                            ("-1", "class index must be >= 0"),
                                            ("1000", "class labels must lie in [0, 999]")])
def test_bad_class_labels_one_line(tmp_path, imagenet_like_dir, label, message):
    result = run("generate", "--class-label", label, "--model", imagenet_like_dir, "--steps", 1, "-q",
                 "-o", tmp_path / "x.png")
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "x.png").exists()
