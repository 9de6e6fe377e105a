"""The results of ``cmedit eval``: mean and spread over seeds, the markdown table, the JSON record."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import torch

# Columns of the table: metric key, header, number format.
COLUMNS = (("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"), ("colourfulness", "colourfulness", "{:.1f}"),
           ("kid_x1000", "KID x1000", "{:.1f}"), ("block_error_max", "block err. max", "{:.2f}"),
           ("block_error_mean", "block err. mean", "{:.3f}"),
           ("nfe", "NFE", "{:.0f}"), ("seconds_per_image", "s / image", "{:.4f}"))


def summarize(runs: list[dict[str, float]]) -> dict[str, dict]:
    """Per metric, the mean and sample standard deviation over runs (0 for one run or equal values)."""
    summary = {}
    for metric in runs[0]:
        values = [run[metric] for run in runs]
        std = 0.0 if len(set(values)) == 1 else float(np.std(values, ddof=1))
        summary[metric] = {"mean": float(np.mean(values)), "std": std, "values": values}
    return summary


def versions() -> dict[str, str]:
    """Versions of the libraries whose code computes the numbers."""
    import diffusers
    import skimage

    from .. import __version__

    return {"cmedit": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "scikit-image": skimage.__version__, "opencv": cv2.__version__, "numpy": np.__version__}


def to_json(results: dict) -> str:
    """``results`` as strict JSON; infinite and NaN values become the strings "inf", "-inf", "nan"."""

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, list):
            return [finite(item) for item in value]
        return value

    return json.dumps(finite(results), indent=2, allow_nan=False) + "\n"


def format_table(results: dict) -> str:
    """A markdown table of ``results``: ``mean ± std`` over seeds (cmedit), one value (deterministic baselines)."""
    config = results["config"]
    schedule = (f"timesteps {','.join(map(str, config['timesteps']))}" if config["timesteps"] is not None
                else f"{config['num_inference_steps']} steps")
    if config.get("strength", 1) != 1:  # files written before the key existed ran at strength 1
        schedule += f" (strength {config['strength']:g})"
    height, width = config["image_size"]
    lines = [f"{config['num_images']} images of {width}x{height}, {schedule}, seeds "
             f"{','.join(map(str, config['seeds']))}: mean ± std over seeds (baselines: one deterministic run).",
             "",
             "| task | method | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for name, entry in results["tasks"].items():
        label = name if "mask_fraction" not in entry else f"{name} ({entry['mask_fraction']:.0%} masked)"
        for method, metrics in entry["methods"].items():
            cells = []
            for key, _, fmt in COLUMNS:
                if key not in metrics:
                    cells.append("")
                    continue
                cell = fmt.format(metrics[key]["mean"])
                if len(metrics[key]["values"]) > 1 and key != "nfe":
                    cell += " ± " + fmt.format(metrics[key]["std"])
                cells.append(cell)
            lines.append(f"| {label} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
