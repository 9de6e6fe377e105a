"""Peak memory of one configuration in a fresh process: ``python memory_probe.py '<json>'``.

The JSON gives ``unet`` (a UNet2DModel config), ``task``, ``batch``, ``steps`` and ``threads``.
Prints one JSON line: the peak resident memory of one call above the RSS before it (model and
inputs already built) and the process's peak, in MiB, and the call's wall time.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from measure import peak_rss_during
from workloads import build_unet, cmedit_pipeline, task_call


def main(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    pipe = cmedit_pipeline(build_unet(spec["unet"]))
    call = task_call(pipe, spec["task"], spec["batch"], spec["steps"])
    start = time.perf_counter()
    memory = peak_rss_during(call)
    return {**memory, "first_call_s": time.perf_counter() - start}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
