"""``cmedit.evaluation.features``: the feature network learns, the distances order image sets, weights round-trip,
the level split runs each network on its own levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")

from conftest import tiny_scheduler, tiny_unet
from diffusers.utils.torch_utils import randn_tensor

from cmedit.evaluation.features import (FeatureNet, load_feature_net, sample_scores, save_feature_net,
                                   to_tensor, top_k_accuracy, train_feature_net)
from cmedit.core.sampler import sample

SIZE = 16


def shapes(n: int, seed: int, colour_shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """White uint8 images with a red disc (label 0) or a blue square (label 1) of random place and size."""
    rng = np.random.default_rng(seed)
    images = np.full((n, SIZE, SIZE, 3), 255, np.uint8)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for image, label in zip(images, labels):
        r = rng.integers(3, 6)
        cy, cx = rng.integers(r, SIZE - r, 2)
        if label == 0:
            image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (220, 40 + colour_shift, 40)
        else:
            image[(abs(yy - cy) < r) & (abs(xx - cx) < r)] = (40, 40 + colour_shift, 220)
    return images, labels


def test_feature_net_learns_shapes_it_was_not_shown():
    images, labels = shapes(96, seed=0)
    net = train_feature_net(images, labels, num_classes=2, epochs=12, batch_size=16, width=8, progress=False)
    test_images, test_labels = shapes(64, seed=1)
    assert top_k_accuracy(net, test_images, test_labels) >= 0.9
    assert top_k_accuracy(net, test_images, test_labels, k=2) == 1.0


def test_training_is_reproducible_for_a_seed():
    images, labels = shapes(32, seed=0)
    nets = [train_feature_net(images, labels, num_classes=2, epochs=2, batch_size=16, width=8, seed=3,
                              progress=False) for _ in range(2)]
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)


def test_distances_are_zero_for_the_same_set_and_larger_for_a_different_one():
    torch.manual_seed(0)
    net = FeatureNet(num_classes=2, width=8, image_size=SIZE).eval()
    reference, _ = shapes(200, seed=0)
    same_kind, _ = shapes(200, seed=1)
    other_kind, _ = shapes(200, seed=2, colour_shift=150)  # green-tinted shapes
    identical = sample_scores(net, reference, reference, kid_subset_size=100, kid_subsets=20)
    near = sample_scores(net, reference, same_kind, kid_subset_size=100, kid_subsets=20)
    far = sample_scores(net, reference, other_kind, kid_subset_size=100, kid_subsets=20)
    assert abs(identical["fd"]) < 1e-6 * max(1.0, far["fd"])
    assert near["fd"] < far["fd"]
    assert near["kid"] < far["kid"]
    for scores in (identical, near, far):
        assert 0.5 <= scores["confidence"] <= 1.0  # the top of two softmax probabilities
    state = torch.random.get_rng_state()
    again = sample_scores(net, reference, other_kind, kid_subset_size=100, kid_subsets=20)
    assert again == far  # KID's subsets come from a fixed seed...
    assert torch.equal(torch.random.get_rng_state(), state)  # ...without touching the caller's generator


def test_save_and_load_give_the_same_features(tmp_path):
    torch.manual_seed(0)
    net = FeatureNet(num_classes=3, width=8, image_size=SIZE).eval()
    save_feature_net(net, tmp_path / "features", note="test")
    loaded = load_feature_net(tmp_path / "features")
    x = to_tensor(shapes(4, seed=0)[0])
    assert torch.equal(net.features(x), loaded.features(x))


def test_bad_inputs_are_refused():
    net = FeatureNet(num_classes=2, width=8, image_size=SIZE)
    with pytest.raises(ValueError, match="takes"):
        net.features(torch.zeros(1, 3, SIZE * 2, SIZE * 2))
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((1, SIZE, SIZE, 3), np.float32))
    images, labels = shapes(4, seed=0)
    with pytest.raises(ValueError, match="labels must lie"):
        train_feature_net(images, labels + 5, num_classes=2, epochs=1, width=8, progress=False)
    with pytest.raises(ValueError, match="as many labels"):
        train_feature_net(images, labels[:2], num_classes=2, epochs=1, width=8, progress=False)


def level_split_unet():
    """The research diagnostic lives in scripts/sample_quality.py, outside the package."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "sample_quality.py"
    spec = importlib.util.spec_from_file_location("sample_quality_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LevelSplitUNet


def test_level_split_runs_each_network_on_its_own_levels():
    LevelSplitUNet = level_split_unet()
    high, low = tiny_unet(seed=1), tiny_unet(seed=2)
    calls = []
    for name, network in (("high", high), ("low", low)):
        network.register_forward_hook(lambda module, args, output, name=name: calls.append((name, float(args[1]))))
    scheduler = tiny_scheduler()

    def run(unet, timesteps):
        scheduler.set_timesteps(timesteps=timesteps)
        generator = torch.Generator().manual_seed(0)
        x = randn_tensor((2, 3, 16, 16), generator=generator) * scheduler.init_noise_sigma
        return sample(unet, scheduler, x, generator=generator)

    split = LevelSplitUNet(high, low, split=10.0)
    both = run(split, [30, 0])  # levels 0 then 30 of the 40-level grid: sigma 80, then 0.131
    assert [name for name, _ in calls] == ["high", "low"]
    sigmas = [np.exp(t / 250) for _, t in calls]
    assert sigmas[0] >= 10 > sigmas[1]
    # The same as running the high network alone when the split is below every level, and the low one above.
    torch.testing.assert_close(run(LevelSplitUNet(high, low, split=1e-3), [30, 0]), run(high, [30, 0]))
    torch.testing.assert_close(run(LevelSplitUNet(high, low, split=100.0), [30, 0]), run(low, [30, 0]))
    assert not torch.allclose(both, run(high, [30, 0]))
    with pytest.raises(ValueError, match="positive"):
        LevelSplitUNet(high, low, split=0)
