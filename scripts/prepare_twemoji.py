#!/usr/bin/env python
"""Build the 32x32 Twemoji training set and its fixed held-out split.

Source: the npm package ``emoji-datasource-twitter`` (``emoji.json`` and the
64x64 PNGs in ``img/twitter/64/``); graphics by Twitter, Inc and other
contributors, CC-BY 4.0.

Processing: each RGBA PNG is composited on white, then resized 64 -> 32 with
PIL's LANCZOS filter, giving uint8 RGB.

Split (fixed, by design): an emoji and all of its ``skin_variations`` go to
the same side. An emoji is held out when
``int(sha256(base_unified.upper()).hexdigest()[:8], 16) % 100 < 8``
(about 8%), where ``base_unified`` is the ``unified`` code of the base emoji
(e.g. ``1F385``). The rule depends on nothing else, so it does not change
with the package version for emojis that exist in both.

Outputs:
  data/twemoji32_train.npy    uint8 (N, 32, 32, 3)
  data/twemoji32_train_groups.npy  int64 (N,): one id per design (an emoji and its skin-tone
      variants share one), for `cmedit train --groups` (People & Body is 349 of 1,761 training
      designs but 2,054 of 3,466 images; drawing designs equally rebalances it)
  data/twemoji32_heldout.npy  uint8 (M, 32, 32, 3)
  data/twemoji32_heldout_groups.npy  int64 (M,): the same design ids for the held-out images
  data/twemoji32_{train,heldout}_labels.npy  int64 (N,), (M,): each image's Unicode subcategory
      (``face-smiling``, ``animal-mammal``, ``flag``, ...), an index into
      data/twemoji32_subcategories.json, for the sample-quality feature network
      (`scripts/sample_quality.py`)
  samples/heldout/<unified>.png + ATTRIBUTION.md  (the held-out set)
  samples/{face,heart,animal,object}.png  (first held-out emoji by sort order
      in subcategory face-*, heart, animal-*, and category Objects)

Usage:
  python scripts/prepare_twemoji.py                      # runs `npm pack`
  python scripts/prepare_twemoji.py --tarball emoji-datasource-twitter-16.0.0.tgz
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HELDOUT_PERCENT = 8
SIZE = 32

ATTRIBUTION = """# Attribution

The images in this folder (and `samples/face.png`, `samples/heart.png`,
`samples/animal.png`, `samples/object.png`, and the derived `samples/face_gray.png`,
`samples/heart_gray.png` (greyscale), `samples/face_8x8.png`, `samples/animal_8x8.png`
(box-downsampled to 8x8), `samples/face_painted.png` (two red ellipses painted over the
eyes)) are Twemoji graphics,
Copyright Twitter, Inc and other contributors, licensed under
CC-BY 4.0: https://creativecommons.org/licenses/by/4.0/

Source: npm package `{package}` (file `img/twitter/64/<code>.png`).
Changes: each 64x64 RGBA image was composited on a white background and
resized to 32x32 RGB (PIL LANCZOS) by `scripts/prepare_twemoji.py`.
File names are the emoji's `unified` code point sequence.

These images form the held-out split: they are never used for training
(rule: sha256 of the base emoji's `unified` code, first 8 hex digits as an
integer, modulo 100, below {percent}; skin-tone variants follow their base).
"""


def is_heldout(base_unified: str) -> bool:
    """Deterministic split rule on the base emoji's unified code (see module docstring)."""
    digest = hashlib.sha256(base_unified.upper().encode()).hexdigest()
    return int(digest[:8], 16) % 100 < HELDOUT_PERCENT


def npm_pack(dest: Path) -> Path:
    """Download the package tarball with `npm pack` into dest and return its path."""
    out = subprocess.run(
        ["npm", "pack", "emoji-datasource-twitter", "--silent"],
        cwd=dest, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    return dest / out


def to_rgb32(png_bytes: bytes) -> np.ndarray:
    """Composite an RGBA PNG on white and resize to 32x32 RGB uint8."""
    img = Image.open(io.BytesIO(png_bytes)).convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, img).convert("RGB")
    return np.asarray(rgb.resize((SIZE, SIZE), Image.LANCZOS), dtype=np.uint8)


def variants(entry: dict) -> list[dict]:
    """The base emoji followed by its skin-tone variations (all share one split side)."""
    return [entry] + list((entry.get("skin_variations") or {}).values())


def main() -> None:
    """Parse arguments, read the tarball, write the split arrays and PNGs."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tarball", type=Path, help="already downloaded emoji-datasource-twitter-*.tgz")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--samples-dir", type=Path, default=Path("samples"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or npm_pack(Path(tmp))
        with tarfile.open(tarball) as tar:
            package = json.load(tar.extractfile("package/package.json"))
            emojis = json.load(tar.extractfile("package/emoji.json"))
            members = {m.name: m for m in tar.getmembers()}

            def load(image: str) -> np.ndarray | None:
                m = members.get(f"package/img/twitter/64/{image}")
                return None if m is None else to_rgb32(tar.extractfile(m).read())

            subcategories = sorted({e["subcategory"] for e in emojis})
            train, train_groups, train_labels = [], [], []
            held, held_groups, held_meta, held_labels = [], [], [], []
            for group, e in enumerate(sorted(emojis, key=lambda e: e["sort_order"])):
                side = is_heldout(e["unified"])
                for v in variants(e):
                    if not v.get("has_img_twitter", True):
                        continue
                    arr = load(v["image"])
                    if arr is None:
                        continue
                    label = subcategories.index(e["subcategory"])
                    if side:
                        held.append(arr)
                        held_groups.append(group)
                        held_meta.append((v["unified"], e))
                        held_labels.append(label)
                    else:
                        train.append(arr)
                        train_groups.append(group)
                        train_labels.append(label)

    args.data_dir.mkdir(parents=True, exist_ok=True)
    np.save(args.data_dir / "twemoji32_train.npy", np.stack(train))
    np.save(args.data_dir / "twemoji32_train_groups.npy", np.array(train_groups, dtype=np.int64))
    np.save(args.data_dir / "twemoji32_heldout.npy", np.stack(held))
    np.save(args.data_dir / "twemoji32_heldout_groups.npy", np.array(held_groups, dtype=np.int64))
    np.save(args.data_dir / "twemoji32_train_labels.npy", np.array(train_labels, dtype=np.int64))
    np.save(args.data_dir / "twemoji32_heldout_labels.npy", np.array(held_labels, dtype=np.int64))
    (args.data_dir / "twemoji32_subcategories.json").write_text(json.dumps(subcategories, indent=0) + "\n")

    out = args.samples_dir / "heldout"
    out.mkdir(parents=True, exist_ok=True)
    for arr, (code, _) in zip(held, held_meta):
        Image.fromarray(arr).save(out / f"{code.lower()}.png", optimize=True)
    version = package.get("version", "?")
    (out / "ATTRIBUTION.md").write_text(ATTRIBUTION.format(
        package=f"emoji-datasource-twitter@{version}", percent=HELDOUT_PERCENT))

    picks = {
        "face": lambda e: e.get("subcategory", "").startswith("face-"),
        "heart": lambda e: e.get("subcategory") == "heart",
        "animal": lambda e: e.get("subcategory", "").startswith("animal-"),
        "object": lambda e: e.get("category") == "Objects",
    }
    for name, pred in picks.items():
        for arr, (code, base) in zip(held, held_meta):
            if code == base["unified"] and pred(base):
                Image.fromarray(arr).save(args.samples_dir / f"{name}.png")
                print(f"{name}.png <- {code} {base['name']}")
                break
    print(f"train {len(train)} ({len(set(train_groups))} designs)  held-out {len(held)} images "
          f"({len({m[1]['unified'] for m in held_meta})} base emojis)")


if __name__ == "__main__":
    main()
