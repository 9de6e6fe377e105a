"""Sample quality without a hub network: Frechet and kernel distances in a small classifier's features.

FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) compare two image sets through the
features of an ImageNet Inception network, whose weights cannot be fetched here and which sees a
32x32 emoji as a blur anyway. This module trains a small CNN to classify images of the training
domain (for Twemoji: the 99 Unicode subcategories, ``face-smiling``, ``animal-mammal``, ``flag``,
...) and hands it to ``torchmetrics`` as the feature extractor, so the distances are torchmetrics'
own. The numbers compare models and schedules on the same feature network; they are not FID values
and do not compare with published ones.

Needs the ``eval`` extra (``torchmetrics``). Images are ``uint8`` arrays ``(N, H, W, 3)`` or float
tensors ``(N, 3, H, W)`` in ``[0, 1]``.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class FeatureNet(nn.Module):
    """A 6-convolution classifier of ``image_size`` RGB images; ``features`` is its pooled last layer.

    Input: float ``(B, 3, image_size, image_size)`` in ``[0, 1]``.
    """

    def __init__(self, num_classes: int, width: int = 32, image_size: int = 32) -> None:
        super().__init__()
        self.config = {"num_classes": num_classes, "width": width, "image_size": image_size}
        layers, channels = [], 3
        for level, out in enumerate((width, 2 * width, 4 * width)):
            if level:
                layers.append(nn.AvgPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU()]
                channels = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(channels, num_classes))
        self.num_features = channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, num_features)`` globally pooled features of images in ``[0, 1]``."""
        size = self.config["image_size"]
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise ValueError(f"the feature network takes (B, 3, {size}, {size}) images, got {tuple(x.shape)}")
        return self.body(x * 2 - 1).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes)`` logits."""
        return self.head(self.features(x))


class _Features(nn.Module):
    """The view torchmetrics' FID / KID call: images in, features out."""

    def __init__(self, net: FeatureNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` array or float ``(N, 3, H, W)`` tensor in ``[0, 1]`` -> float ``(N, 3, H, W)``."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return images.float()


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 2 pixels over a white border (emoji sit on white)."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (2, 2, 2, 2), value=1.0)
    dy, dx = torch.randint(0, 5, (2,), generator=generator).tolist()
    return padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


def train_feature_net(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int,
    epochs: int = 40,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> FeatureNet:
    """Train a :class:`FeatureNet` with AdamW, a cosine learning rate, label smoothing 0.1, flips and shifts.

    ``labels``: int ``(N,)`` in ``[0, num_classes)``. Deterministic for a given ``seed`` on one machine.
    """
    x, y = to_tensor(images), torch.as_tensor(labels, dtype=torch.long)
    if len(x) != len(y) or not len(x):
        raise ValueError(f"need as many labels as images (and at least one), got {len(y)} and {len(x)}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # parameter initialisation and dropout draw from the global generator
    net = FeatureNet(num_classes, width=width, image_size=x.shape[-1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(x) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    net.train()
    bar = tqdm(total=steps, desc="feature net", disable=not progress)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            loss = F.cross_entropy(net(_augment(x[idx], generator)), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return net.eval()


@torch.inference_mode()
def top_k_accuracy(net: FeatureNet, images, labels, k: int = 1, batch_size: int = 512) -> float:
    """Fraction of images whose label is among the ``k`` highest logits."""
    x, y = to_tensor(images), torch.as_tensor(labels, dtype=torch.long)
    hits = 0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        hits += (net(xb).topk(k, dim=1).indices == yb[:, None]).any(dim=1).sum().item()
    return hits / len(x)


def save_feature_net(net: FeatureNet, folder: str | Path, **info) -> None:
    """Write ``model.safetensors`` and ``config.json`` (the constructor's arguments plus ``info``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps({**net.config, **info}, indent=2) + "\n")


def load_feature_net(folder: str | Path) -> FeatureNet:
    """Load a network written by :func:`save_feature_net`, in eval mode; ``ValueError`` for anything else."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
        net = FeatureNet(config["num_classes"], width=config["width"], image_size=config["image_size"])
        net.load_state_dict(load_file(folder / WEIGHTS_NAME))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as error:
        raise ValueError(f"{folder}: not a feature network written by save_feature_net ({error})") from None
    return net.eval()


def _update(metric, reference: torch.Tensor, samples: torch.Tensor, batch_size: int) -> None:
    for real, images in ((True, reference), (False, samples)):
        for batch in images.split(batch_size):
            metric.update(batch, real=real)


@torch.inference_mode()
def kernel_distance(
    net: FeatureNet,
    reference: np.ndarray | torch.Tensor,
    samples: np.ndarray | torch.Tensor,
    subset_size: int = 1000,
    subsets: int = 100,
    seed: int = 0,
    batch_size: int = 500,
) -> tuple[float, float]:
    """KID of ``samples`` from ``reference`` in ``net``'s features: mean and std over ``subsets`` subsets.

    torchmetrics' unbiased estimator (cubic polynomial kernel) over random subsets of
    ``min(subset_size, both counts)`` images, drawn with the global torch generator seeded with
    ``seed`` inside a forked RNG state (the caller's is left as it was). About 0 for two draws of one
    distribution; it does not depend on the counts, so it compares sets of different sizes.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    ref, fake = to_tensor(reference), to_tensor(samples)
    if len(ref) < 2 or len(fake) < 2:
        raise ValueError("need at least 2 reference images and 2 samples")
    with warnings.catch_warnings():  # "will save all extracted features": a few thousand small vectors here
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Features(net.eval()), subsets=subsets,
                                      subset_size=min(subset_size, len(ref), len(fake)), normalize=True)
    _update(kid, ref, fake, batch_size)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return mean.item(), std.item()


@torch.inference_mode()
def sample_scores(
    net: FeatureNet,
    reference: np.ndarray | torch.Tensor,
    samples: np.ndarray | torch.Tensor,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    seed: int = 0,
    batch_size: int = 500,
) -> dict[str, float]:
    """Distances of ``samples`` from ``reference`` in ``net``'s features (lower is closer).

    Returns ``fd`` (Frechet distance; biased upwards for few images, so compare equal counts),
    ``kid`` and ``kid_std`` (:func:`kernel_distance`) and ``confidence`` (mean top softmax
    probability of the samples: how sure the classifier is of what each one shows).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    ref, fake = to_tensor(reference), to_tensor(samples)
    kid, kid_std = kernel_distance(net, ref, fake, kid_subset_size, kid_subsets, seed, batch_size)
    fd = FrechetInceptionDistance(feature=_Features(net.eval()), normalize=True)
    _update(fd, ref, fake, batch_size)
    confidence = torch.cat([net(b).softmax(dim=1).amax(dim=1) for b in fake.split(batch_size)]).mean()
    return {"fd": fd.compute().item(), "kid": kid, "kid_std": kid_std, "confidence": confidence.item()}
