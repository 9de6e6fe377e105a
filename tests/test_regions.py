"""Region inpainting at full resolution: crops, one batch, exact pixels outside the mask, the feathered seam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cmedit.core.arguments import EditOptions
from cmedit.io.tensors import tensor_to_uint8
from cmedit.fullres.crops import feather_weights, inpaint_regions, plan_crops
from conftest import RESOLUTION

HEIGHT, WIDTH = 45, 70  # a 70x45 image, larger than the model's 16x16


def photo(seed=0) -> torch.Tensor:
    """A ``(1, 3, 45, 70)`` image in [-1, 1] that is exactly 8-bit (as a decoded file is)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, HEIGHT, WIDTH), generator=generator).float() / 127.5 - 1


def regions_mask() -> torch.Tensor:
    """Two small separate regions on the right and one large region (25x20, larger than R) on the left."""
    mask = torch.zeros(1, 1, HEIGHT, WIDTH)
    mask[..., 10:30, 2:27] = 1
    mask[..., 5:9, 55:59] = 1
    mask[..., 33:37, 56:59] = 1
    return mask


def seed(n=0):
    return torch.Generator().manual_seed(n)


class ForwardCounter:
    """Records the batch size and class labels of every UNet forward pass."""

    def __init__(self, unet):
        self.batches, self.labels = [], []
        self.handle = unet.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs, output):
        self.batches.append(args[0].shape[0])
        self.labels.append(kwargs.get("class_labels"))


def test_plan_one_crop_per_separate_region_disjoint_and_covering():
    mask = regions_mask()
    crops = plan_crops(mask, context=0.25, min_crop_size=RESOLUTION)
    assert len(crops) == 3
    covered = torch.zeros(HEIGHT, WIDTH, dtype=torch.int64)
    for crop in crops:
        rows, cols, _, _ = crop.inside(HEIGHT, WIDTH)
        covered[rows, cols] += 1
        assert crop.size >= RESOLUTION
    assert covered.max() == 1  # no pixel in two crops
    assert (covered[mask[0, 0] > 0] == 1).all()  # every masked pixel in one
    assert max(crop.size for crop in crops) > RESOLUTION  # the large region's crop is downscaled


def test_plan_merges_regions_whose_crops_overlap():
    mask = torch.zeros(1, 1, HEIGHT, WIDTH)
    mask[..., 5:8, 40:43] = 1
    mask[..., 12:15, 48:51] = 1  # 5 pixels away: the two 16x16 squares would overlap
    crops = plan_crops(mask, context=0.5, min_crop_size=RESOLUTION)
    assert len(crops) == 1
    rows, cols, _, _ = crops[0].inside(HEIGHT, WIDTH)
    assert rows.start <= 5 and rows.stop >= 15 and cols.start <= 40 and cols.stop >= 51


def test_outside_mask_byte_identical_inside_changed_with_candidates(pipe):
    image, mask = photo(), regions_mask()
    out = inpaint_regions(pipe, image, mask, EditOptions(num_inference_steps=2, num_images_per_prompt=2, generator=seed()), context=0.25)
    assert out.shape == (2, 3, HEIGHT, WIDTH)
    before, after = tensor_to_uint8(image), tensor_to_uint8(out)
    keep = mask[0, 0].numpy() < 0.5
    assert (after[:, keep] == before[:, keep]).all()
    assert np.abs(after[:, ~keep].astype(int) - before[:, ~keep]).mean() > 10
    for region in (np.s_[10:30, 2:27], np.s_[5:9, 55:59], np.s_[33:37, 56:59]):  # every region regenerated
        assert np.abs(after[(0, *region)].astype(int) - before[(0, *region)]).mean() > 10
    assert not np.array_equal(after[0], after[1])  # candidates differ


@pytest.mark.parametrize("candidates", [1, 2])
def test_one_forward_pass_per_step_for_all_crops(pipe, candidates):
    counter = ForwardCounter(pipe.unet)
    inpaint_regions(pipe, photo(), regions_mask(), EditOptions(num_inference_steps=3, num_images_per_prompt=candidates, generator=seed()), context=0.25)
    assert counter.batches == [3 * candidates] * 3  # 3 steps, 3 crops x candidates each


def test_class_label_shared_by_all_crops_of_an_image(class_pipe):
    counter = ForwardCounter(class_pipe.unet)
    images = torch.cat([photo(1), photo(2)])
    inpaint_regions(class_pipe, images, regions_mask(), EditOptions(num_inference_steps=1, class_labels=[3, 7], generator=seed()), context=0.25)
    assert counter.batches == [6]
    assert counter.labels[0].tolist() == [3, 3, 3, 7, 7, 7]
    counter.labels.clear()
    inpaint_regions(class_pipe, images, regions_mask(), EditOptions(num_inference_steps=1, generator=seed()), context=0.25)
    labels = counter.labels[0].tolist()  # random, one per image
    assert labels[:3] == [labels[0]] * 3 and labels[3:] == [labels[3]] * 3


def test_max_batch_size_bounds_the_forward_passes_not_the_result(class_pipe):
    """Six crops (two images x three regions) under a bound of 4: passes of 4 and 2 per step, the class
    labels follow their crops, and the draws (whole batch) and the image are the same as unbounded."""
    images = torch.cat([photo(1), photo(2)])
    run = lambda: inpaint_regions(class_pipe, images, regions_mask(), EditOptions(num_inference_steps=2, class_labels=[3, 7], generator=seed()), context=0.25)
    whole = run()
    counter = ForwardCounter(class_pipe.unet)
    class_pipe.max_batch_size = 4
    bounded = run()
    assert counter.batches == [4, 2, 4, 2]
    assert [labels.tolist() for labels in counter.labels[:2]] == [[3, 3, 3, 7], [7, 7]]
    # float32 convolutions of a batch of 4 and of 6 may round differently (1.4e-5 measured with one thread)
    assert torch.allclose(bounded, whole, atol=1e-4)
    for bad, error in [(0, ValueError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="max_batch_size"):
            class_pipe.max_batch_size = bad  # refused when set, not at the next edit
    assert class_pipe.max_batch_size == 4


def test_the_model_never_sees_the_masked_content(pipe):
    image, mask = photo(), regions_mask()
    other = torch.where(mask > 0.5, photo(seed=5), image)  # same kept pixels, other content under the mask
    run = lambda x: inpaint_regions(pipe, x, mask, EditOptions(num_inference_steps=2, generator=seed()), context=0.25, feather=0)
    assert torch.equal(run(image), run(other))


def test_same_as_pipe_inpaint_for_an_image_of_the_model_size(pipe):
    # one crop, the whole image, no resize: the same draws and the same edit as the pipeline's own
    image, mask = photo()[..., :RESOLUTION, :RESOLUTION], regions_mask()[..., 20:36, 48:64]
    ours = inpaint_regions(pipe, image, mask, EditOptions(num_inference_steps=3, generator=seed()), feather=0)
    theirs = pipe.inpaint(image / 2 + 0.5, mask, num_inference_steps=3, generator=seed(), output_type="pt").images
    assert (ours - (theirs * 2 - 1)).abs().max() < 1e-5


def test_feather_blends_only_the_inner_rings_of_the_mask(pipe):
    image, mask = photo(), regions_mask()
    run = lambda feather: inpaint_regions(pipe, image, mask, EditOptions(num_inference_steps=2, generator=seed()), context=0.25, feather=feather)
    hard, soft = run(0), run(3)
    distance = torch.from_numpy(ndimage.distance_transform_edt(mask[0, 0].numpy())).float()
    keep, deep, rim = distance == 0, distance >= 4, distance == 1
    assert torch.equal(soft[..., keep], image[..., keep]) and torch.equal(hard[..., keep], image[..., keep])
    assert torch.equal(soft[..., deep], hard[..., deep])
    # the outermost ring of the mask is a quarter generated, three quarters original
    assert torch.allclose(soft[..., rim], torch.lerp(image, hard, 0.25)[..., rim], atol=1e-6)
    assert (soft[..., rim] - hard[..., rim]).abs().mean() > 0.05


def test_feather_weights_are_zero_outside_and_ramp_inside():
    mask = torch.zeros(1, 1, 12, 12)
    mask[..., 2:11, 2:11] = 1
    weights = feather_weights(mask, 2)
    assert (weights[mask == 0] == 0).all() and (weights[mask == 1] > 0).all()
    assert weights[0, 0, 2, 6] == pytest.approx(1 / 3) and weights[0, 0, 3, 6] == pytest.approx(2 / 3)
    assert weights[0, 0, 6, 6] == 1
    assert torch.equal(feather_weights(mask, 0), mask)
    assert torch.equal(feather_weights(torch.ones(1, 1, 4, 4), 3), torch.ones(1, 1, 4, 4))


def test_image_smaller_than_the_model_and_a_region_at_the_border(pipe):
    image = photo()[..., :9, :13]
    mask = torch.zeros(1, 1, 9, 13)
    mask[..., 0:4, 9:13] = 1
    out = inpaint_regions(pipe, image, mask, EditOptions(num_inference_steps=1, generator=seed()))
    assert out.shape == image.shape
    keep = mask[0, 0] < 0.5
    assert torch.equal(out[..., keep], image[..., keep]) and not torch.equal(out[..., ~keep], image[..., ~keep])


def test_empty_mask_returns_the_input_without_running_the_model(pipe):
    counter = ForwardCounter(pipe.unet)
    out = inpaint_regions(pipe, photo(), torch.zeros(1, 1, HEIGHT, WIDTH), EditOptions(num_images_per_prompt=2))
    assert counter.batches == [] and torch.equal(out, photo().repeat(2, 1, 1, 1))


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="mask"):
        inpaint_regions(pipe, photo(), torch.zeros(1, 1, 10, 10), EditOptions())
    with pytest.raises(ValueError, match="2 generators for a batch of 1"):
        inpaint_regions(pipe, photo(), regions_mask(), EditOptions(generator=[seed(), seed()]))


def test_a_generator_per_image_makes_each_result_independent_of_its_batch(pipe):
    """With one generator per image and candidate, the crops of two images edited together give what
    each image gives alone, as the whole-image path does (so the CLI need not know which path runs)."""
    images, mask = torch.cat([photo(1), photo(2)]), regions_mask()
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    options = lambda *seeds: EditOptions(num_inference_steps=2, num_images_per_prompt=2, generator=gens(*seeds))  # noqa: E731
    together = inpaint_regions(pipe, images, mask, options(5, 6, 7, 8), context=0.25)
    first = inpaint_regions(pipe, images[:1], mask, options(5, 6), context=0.25)
    second = inpaint_regions(pipe, images[1:], mask, options(7, 8), context=0.25)
    assert (together - torch.cat([first, second])).abs().max() < 1e-5
    assert not torch.equal(together[0], together[1])  # the candidates differ
