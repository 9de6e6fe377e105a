"""cmedit speed benchmark: ``python benchmarks/run.py [--quick] [--out DIR]``.

Measures, in one run on one machine and on the same ``UNet2DModel`` weights:
1. cmedit ``generate`` vs diffusers' ``ConsistencyModelPipeline`` at the same steps;
2. the cost of the projection: ``inpaint`` / ``colorize`` / ``super_resolve`` vs ``generate``;
3. ``inpaint`` vs diffusers' ``RePaintPipeline`` (network evaluations and wall time per image);
4. throughput (images/s) per task and batch size, and peak memory in one fresh process each;
5. start-up: ``cmedit --help`` / ``--version`` and the time to the first output of ``cmedit inpaint``;
6. speed options (channels_last, bfloat16, torch.compile) on ``inpaint``;
7. images larger than the model: region-crop inpainting and tiled super-resolution.
Writes ``results.json`` and ``results.md`` to ``--out``. ``--quick`` is a smoke run on a tiny model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

from measure import NetworkClock, interleaved, machine_info, median, paired_ratio
from report import headline, markdown
from workloads import (TASKS, build_unet, cmedit_pipeline, diffusers_cm_pipeline, diffusers_generate_call,
                       model_configs, repaint_call, repaint_network_evaluations, repaint_pipeline,
                       save_model_folder, task_call)

from cmedit import __version__
from cmedit.models.acceleration import accelerate_pipeline
from cmedit.models.loading import DEFAULT_MODEL_DIR
from cmedit.core.schedules import DEFAULT_EDIT_STEPS

HERE = Path(__file__).resolve().parent
REPAINT_FULL = {"steps": 250, "jump_length": 10, "jump_n_sample": 10}


def generate_vs_diffusers(unet, steps_list, repeats) -> list[dict]:
    """Section 1: the same sampling loop through cmedit and through diffusers."""
    ours, theirs = cmedit_pipeline(unet), diffusers_cm_pipeline(unet)
    rows = []
    for steps in steps_list:
        calls = {"cmedit": task_call(ours, "generate", 1, steps),
                 "diffusers": diffusers_generate_call(theirs, 1, steps)}
        identical = bool(np.array_equal(calls["cmedit"](), calls["diffusers"]()))
        times = interleaved(calls, repeats)
        rows.append({"steps": steps, "batch": 1, "cmedit_s": median(times["cmedit"]),
                     "diffusers_s": median(times["diffusers"]),
                     "ratio": paired_ratio(times["cmedit"], times["diffusers"]), "identical_output": identical})
    return rows


def edit_overhead(unet, steps_list, repeats) -> list[dict]:
    """Section 2: each edit vs generation at the same steps; time outside the network from forward hooks."""
    pipe = cmedit_pipeline(unet)
    rows = []
    with NetworkClock(pipe.unet) as clock:
        for steps in steps_list:
            network: dict[str, list[float]] = {task: [] for task in TASKS}

            def clocked(task, call):
                def run():
                    clock.reset()
                    call()
                    network[task].append(clock.seconds)
                return run

            times = interleaved({task: clocked(task, task_call(pipe, task, 1, steps)) for task in TASKS}, repeats)
            outside = {task: median([t - n for t, n in zip(times[task], network[task][-repeats:])]) for task in TASKS}
            for task in TASKS:
                rows.append({
                    "task": task, "steps": steps, "batch": 1, "wall_s": median(times[task]),
                    "ratio_to_generate": paired_ratio(times[task], times["generate"]),
                    "outside_network_ms": outside[task] * 1e3,
                    "extra_outside_network_pct": (outside[task] - outside["generate"])
                    / median(times["generate"]) * 100,
                })
    return rows


def repaint_comparison(unet, repaint_steps, steps_list, repeats) -> dict:
    """Section 3: cmedit inpaint vs RePaint on the same network, batch 1, NFE counted by a forward hook."""
    pipe, repaint = cmedit_pipeline(unet), repaint_pipeline(unet)
    jumps = {k: REPAINT_FULL[k] for k in ("jump_length", "jump_n_sample")}
    repaint_call(repaint, 10, **jumps)()  # warm-up (one-off kernel set-up)
    with NetworkClock(unet) as clock:
        start = time.perf_counter()
        repaint_call(repaint, repaint_steps, **jumps)()
        measured_s, measured_nfe = time.perf_counter() - start, clock.calls
        full_nfe = repaint_network_evaluations(REPAINT_FULL["steps"], **jumps)
        result = {
            "repaint": {"steps_run": repaint_steps, **jumps, "nfe_run": measured_nfe,
                        "nfe_expected_run": repaint_network_evaluations(repaint_steps, **jumps),
                        "wall_s_run": measured_s, "per_nfe_s": measured_s / measured_nfe,
                        "full_steps": REPAINT_FULL["steps"], "full_nfe": full_nfe,
                        "full_wall_s": measured_s / measured_nfe * full_nfe,
                        "extrapolated": repaint_steps != REPAINT_FULL["steps"]},
            "cmedit": [],
        }
        for steps in steps_list:
            call = task_call(pipe, "inpaint", 1, steps)
            call()
            clock.reset()
            times = interleaved({"inpaint": call}, repeats, warmup=0)["inpaint"]
            nfe = clock.calls // repeats
            wall = median(times)
            result["cmedit"].append({"steps": steps, "nfe": nfe, "wall_s": wall, "per_nfe_s": wall / nfe,
                                     "nfe_ratio": full_nfe / nfe,
                                     "time_ratio": result["repaint"]["full_wall_s"] / wall})
    return result


def throughput(unet, tasks, batches, steps, repeats) -> list[dict]:
    """Section 4a: images/s per task and batch size; the tasks of one batch size take turns."""
    pipe = cmedit_pipeline(unet)
    rows = []
    for batch in batches:
        times = interleaved({task: task_call(pipe, task, batch, steps) for task in tasks}, repeats)
        rows += [{"task": task, "batch": batch, "steps": steps, "call_s": median(times[task]),
                  "images_per_s": batch / median(times[task])} for task in tasks]
    return rows


def memory(unet_config, tasks, batches, steps, threads) -> list[dict]:
    """Section 4b: peak memory of one call, in a fresh process per (task, batch)."""
    rows = []
    for task in tasks:
        for batch in batches:
            spec = {"unet": unet_config, "task": task, "batch": batch, "steps": steps, "threads": threads}
            out = subprocess.run([sys.executable, str(HERE / "memory_probe.py"), json.dumps(spec)],
                                 capture_output=True, text=True, check=True)
            rows.append({"task": task, "batch": batch, "steps": steps, **json.loads(out.stdout.splitlines()[-1])})
    return rows


def startup(unet_config, repeats, threads, workdir: Path, reference: bool = True) -> dict:
    """Section 5: wall time of ``cmedit --help`` / ``--version`` and of a whole ``cmedit inpaint``."""
    from PIL import Image

    exe = shutil.which("cmedit", path=str(Path(sys.executable).parent)) or shutil.which("cmedit")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    run = lambda args: subprocess.run(args, env=env, capture_output=True, check=True)  # noqa: E731
    commands = {"cmedit --help": [exe, "--help"], "cmedit --version": [exe, "--version"]}
    if reference:
        commands["python -c 'import torch' (reference)"] = [sys.executable, "-c", "import torch"]
    times = interleaved({name: (lambda a=args: run(a)) for name, args in commands.items()}, repeats)
    probe = ("import sys\nfrom cmedit.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    torch_loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                  check=True).stdout.split()[-2:]

    if (DEFAULT_MODEL_DIR / "unet").is_dir():
        model_args, model = [], "embedded default model (cmedit/default_model/)"
        size = json.loads((DEFAULT_MODEL_DIR / "unet" / "config.json").read_text())["sample_size"]
    else:
        model_args = ["--model", str(save_model_folder(unet_config, workdir / "model"))]
        model = "random UNet of the default size saved to a temporary folder (--model)"
        size = unet_config["sample_size"]
    inputs = np.random.RandomState(0).randint(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    Image.fromarray(inputs).save(workdir / "image.png")
    Image.fromarray(mask).save(workdir / "mask.png")
    args = [exe, "inpaint", *model_args, "--mask", str(workdir / "mask.png"), str(workdir / "image.png"),
            "-o", str(workdir / "out.png"), "--steps", str(DEFAULT_EDIT_STEPS), "--seed", "0", "--overwrite", "--quiet"]
    inpaint_times = []
    for _ in range(max(1, repeats // 3)):
        start = time.perf_counter()
        run(args)
        inpaint_times.append(time.perf_counter() - start)
    rows = [{"command": name, "wall_s": median(t)} for name, t in times.items()]
    rows.append({"command": f"cmedit inpaint (first output, {DEFAULT_EDIT_STEPS} steps, {size}x{size})",
                 "wall_s": median(inpaint_times)})
    return {"rows": rows, "inpaint_model": model, "help_imports_torch": torch_loaded[0] == "True",
            "help_imports_diffusers": torch_loaded[1] == "True", "output_written": (workdir / "out.png").is_file()}


def acceleration(unet, batches, steps, repeats, compile_unet: bool) -> list[dict]:
    """Section 6: speed options on ``inpaint``, against float32 on the same weights, interleaved."""
    rows = []
    for batch in batches:
        base = cmedit_pipeline(unet)
        pipes = {
            "float32 (baseline)": base,
            "channels_last": accelerate_pipeline(cmedit_pipeline(unet, copy_unet=True), channels_last=True),
            "bfloat16 weights (--dtype bfloat16)": cmedit_pipeline(unet, dtype=torch.bfloat16),
        }
        calls = {name: task_call(pipe, "inpaint", batch, steps) for name, pipe in pipes.items()}
        base_call = calls["float32 (baseline)"]

        def autocast_call(call=base_call):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return call()

        calls["bfloat16 autocast"] = autocast_call
        first_call_s = {}
        if compile_unet:
            torch._dynamo.reset()  # a fresh compilation for this batch size, no shapes marked dynamic
            compiled = accelerate_pipeline(cmedit_pipeline(unet, copy_unet=True), compile=True)
            calls["torch.compile"] = task_call(compiled, "inpaint", batch, steps)
            # An empty inductor cache, so that the first call is a cold compile, not a hit from an earlier run.
            with tempfile.TemporaryDirectory() as cache, temporary_cache_dir(cache):
                start = time.perf_counter()
                calls["torch.compile"]()
                first_call_s["torch.compile"] = time.perf_counter() - start
        reference = base_call()
        error = {name: float(np.abs(call() - reference).max() * 255) for name, call in calls.items()}
        times = interleaved(calls, repeats)
        for name in calls:
            rows.append({"option": name, "batch": batch, "steps": steps, "wall_s": median(times[name]),
                         "speedup": paired_ratio(times["float32 (baseline)"], times[name]),
                         "max_abs_diff_8bit": error[name], "first_call_s": first_call_s.get(name)})
    return rows


def large_images(unet, steps, repeats) -> list[dict]:
    """Section 7: edits of images larger than the model (region crops, tiles) vs the model-size edit."""
    pipe = cmedit_pipeline(unet)
    size, rows = pipe.resolution, []
    g = torch.Generator().manual_seed(0)
    big = torch.rand(1, 3, 4 * size, 4 * size, generator=g)
    region = torch.zeros(4 * size, 4 * size)
    region[size: size + size // 2, 2 * size: 2 * size + size // 2] = 1  # one hole, half the model's side
    cases = {
        f"inpaint {size}x{size} (model size, reference)": task_call(pipe, "inpaint", 1, steps),
        f"inpaint {4 * size}x{4 * size}, one {size // 2}x{size // 2} hole (region crop)":
            lambda: pipe.inpaint(big, region, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                                 output_type="np").images,
        f"super_resolve x4 to {size}x{size} (model size, reference)": task_call(pipe, "super_resolve", 1, steps),
        f"super_resolve x4 to {4 * size}x{4 * size} (tiled)":
            lambda: pipe.super_resolve(big[..., :size, :size], factor=4, kernel="box", num_inference_steps=steps,
                                       generator=torch.Generator().manual_seed(0), output_type="np").images,
    }
    with NetworkClock(pipe.unet) as clock:
        for name, call in cases.items():
            clock.reset()
            call()
            calls, items = clock.calls, clock.items
            times = interleaved({name: call}, repeats, warmup=0)[name]
            rows.append({"case": name, "steps": steps, "wall_s": median(times), "forward_passes": calls,
                         "images_through_network": items})
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, few repeats: a smoke run in seconds")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for results.json and results.md")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement")
    parser.add_argument("--repaint-steps", type=int, default=None,
                        help="RePaint steps actually run (full: 250); fewer are extrapolated per network evaluation")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on a CPU)")
    parser.add_argument("--sections", default="generate,edits,repaint,throughput,startup,acceleration,large",
                        help="comma-separated subset of the sections to run")
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. 'machine shared')")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    from diffusers.utils import logging as diffusers_logging

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")
    sections = set(args.sections.split(","))
    quick = args.quick
    repeats = args.repeats or (2 if quick else 15)
    steps_list = (1, 2) if quick else (1, DEFAULT_EDIT_STEPS)
    plan = {"repeats": repeats, "steps": list(steps_list), "threads": args.threads, "quick": quick,
            "memory_tasks": ["inpaint"] if quick else list(TASKS),
            "throughput_batches": [1] if quick else [1, 8, 32], "throughput_steps": 1,
            "acceleration_batches": [1] if quick else [1, 8], "acceleration_steps": 1,
            "repaint_steps": args.repaint_steps or (10 if quick else REPAINT_FULL["steps"]),
            "compile": not (quick or args.no_compile), "note": args.note}
    results = {"cmedit_version": __version__, "machine": machine_info(args.threads), "plan": plan, "models": {}}
    start = time.perf_counter()
    for name, model in model_configs(quick).items():
        unet = build_unet(model["unet"])
        entry = results["models"][name] = {
            "source": model["source"], "resolution": unet.config.sample_size,
            "parameters_m": sum(p.numel() for p in unet.parameters()) / 1e6, "unet_config": model["unet"]}

        def log(section: str, name: str = name) -> None:
            print(f"[{time.perf_counter() - start:7.1f}s] {name}: {section}", file=sys.stderr)

        if "generate" in sections:
            log("generate vs ConsistencyModelPipeline")
            entry["generate_vs_diffusers"] = generate_vs_diffusers(unet, steps_list, repeats)
        if "edits" in sections:
            log("edit overhead")
            entry["edit_overhead"] = edit_overhead(unet, steps_list, repeats)
        if "repaint" in sections:
            log(f"RePaint ({plan['repaint_steps']} steps)")
            entry["repaint"] = repaint_comparison(unet, plan["repaint_steps"], steps_list, max(3, repeats // 3))
        if "throughput" in sections:
            log("throughput")
            entry["throughput"] = throughput(unet, list(TASKS), plan["throughput_batches"], plan["throughput_steps"],
                                             max(2, repeats // 3))
            log("memory")
            entry["memory"] = memory(model["unet"], plan["memory_tasks"], plan["throughput_batches"],
                                     plan["throughput_steps"], args.threads)
        if "acceleration" in sections:
            log("speed options")
            entry["acceleration"] = acceleration(unet, plan["acceleration_batches"], plan["acceleration_steps"],
                                                 max(2, repeats // 2), plan["compile"])
        if "large" in sections:
            log("large images")
            entry["large_images"] = large_images(unet, DEFAULT_EDIT_STEPS if not quick else 1, max(2, repeats // 5))
    if "startup" in sections:
        print(f"[{time.perf_counter() - start:7.1f}s] start-up", file=sys.stderr)
        with tempfile.TemporaryDirectory() as workdir:
            first = next(iter(model_configs(quick).values()))["unet"]
            results["startup"] = startup(first, max(3, repeats), args.threads, Path(workdir), reference=not quick)
    results["total_s"] = time.perf_counter() - start
    results["headline"] = headline(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
