"""The benchmark's headline numbers and its markdown report, from the results dictionary of ``run.py``."""

from __future__ import annotations


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def headline(results: dict) -> dict:
    """The ratios the issue asks for, per model: the worst case over steps and tasks where there are several."""
    out: dict = {}
    for name, entry in results["models"].items():
        h = out.setdefault(name, {})
        if "generate_vs_diffusers" in entry:
            h["generate_over_diffusers_max_ratio"] = max(r["ratio"] for r in entry["generate_vs_diffusers"])
            h["generate_identical_to_diffusers"] = all(r["identical_output"] for r in entry["generate_vs_diffusers"])
        if "edit_overhead" in entry:
            edits = [r for r in entry["edit_overhead"] if r["task"] != "generate"]
            h["edit_over_generate_max_ratio"] = max(r["ratio_to_generate"] for r in edits)
            h["edit_extra_outside_network_max_pct"] = max(r["extra_outside_network_pct"] for r in edits)
        if "repaint" in entry:
            best = max(entry["repaint"]["cmedit"], key=lambda r: r["steps"])
            h["repaint_over_inpaint"] = {"inpaint_steps": best["steps"], "nfe_ratio": best["nfe_ratio"],
                                         "time_ratio": best["time_ratio"],
                                         "repaint_extrapolated": entry["repaint"]["repaint"]["extrapolated"]}
        if "acceleration" in entry:
            best = max(entry["acceleration"], key=lambda r: r["speedup"])
            h["best_speed_option"] = {k: best[k] for k in ("option", "batch", "speedup")}
    if "startup" in results:
        out["startup_s"] = {r["command"]: r["wall_s"] for r in results["startup"]["rows"]}
    return out


def _headline_lines(results: dict) -> list[str]:
    lines = []
    for name, h in results["headline"].items():
        if name == "startup_s":
            lines.append("- start-up: " + "; ".join(f"`{c}` {s:.2f} s" for c, s in h.items()))
            continue
        parts = []
        if "generate_over_diffusers_max_ratio" in h:
            same = "identical output" if h["generate_identical_to_diffusers"] else "OUTPUT DIFFERS"
            parts.append(f"generate / ConsistencyModelPipeline {h['generate_over_diffusers_max_ratio']:.3f}x "
                         f"(worst over steps; {same})")
        if "edit_over_generate_max_ratio" in h:
            parts.append(f"edit / generate {h['edit_over_generate_max_ratio']:.3f}x wall (worst task and steps), "
                         f"{h['edit_extra_outside_network_max_pct']:+.2f}% extra time outside the network")
        if "repaint_over_inpaint" in h:
            r = h["repaint_over_inpaint"]
            parts.append(f"RePaint (250 steps) / inpaint ({r['inpaint_steps']} steps): {r['nfe_ratio']:.0f}x the "
                         f"network evaluations, {r['time_ratio']:.0f}x the wall time"
                         + (" (RePaint extrapolated)" if r["repaint_extrapolated"] else ""))
        if "best_speed_option" in h:
            b = h["best_speed_option"]
            parts.append(f"best speed option: {b['option']} {b['speedup']:.2f}x at batch {b['batch']}")
        lines.append(f"- **{name}**: " + "; ".join(parts))
    return lines


def markdown(results: dict) -> str:
    m, plan = results["machine"], results["plan"]
    parts = ["# cmedit benchmark results\n", "## Headline\n", "\n".join(_headline_lines(results)) + "\n",
             "## Conditions\n",
             f"{m['cpu']} ({m['cpu_count']} cores, {m['cpu_capability']}), {m['platform']}; "
             f"Python {m['python']}, torch {m['torch']}, diffusers {m['diffusers']}, "
             f"cmedit {results['cmedit_version']}; "
             f"{m['torch_threads']} torch thread(s); GPU: {m['cuda'] or 'none'}; "
             f"load average at start {m['load_average_at_start']}. "
             f"Repeats {plan['repeats']} (medians; ratios are medians of per-turn ratios of interleaved runs). "
             f"Total run time {results['total_s']:.0f} s." + (f" Note: {plan['note']}" if plan["note"] else "") + "\n",
             _table(["model", "resolution", "parameters", "weights"],
                    [[n, f"{e['resolution']}x{e['resolution']}", f"{e['parameters_m']:.1f}M", e["source"]]
                     for n, e in results["models"].items()])]
    models = results["models"].items()

    rows = [[n, r["steps"], r["batch"], _ms(r["cmedit_s"]), _ms(r["diffusers_s"]), f"{r['ratio']:.3f}",
             "yes" if r["identical_output"] else "NO"]
            for n, e in models for r in e.get("generate_vs_diffusers", [])]
    if rows:
        parts += ["## 1. `generate` vs diffusers' `ConsistencyModelPipeline`\n",
                  _table(["model", "steps", "batch", "cmedit ms", "diffusers ms", "ratio (target <= 1)",
                          "identical images"], rows)]
    rows = [[n, r["task"], r["steps"], _ms(r["wall_s"]), f"{r['ratio_to_generate']:.3f}",
             f"{r['outside_network_ms']:.2f}", f"{r['extra_outside_network_pct']:+.2f}%"]
            for n, e in models for r in e.get("edit_overhead", [])]
    if rows:
        parts += ["## 2. Cost of the projection: edits vs `generate` at the same steps (batch 1)\n",
                  "`wall ratio` compares whole calls (noisy on a shared machine); `outside network` is the call's "
                  "time minus the time inside the UNet's forward (forward hooks), and the last column is the edit's "
                  "extra time outside the network as a share of generate's whole call.\n",
                  _table(["model", "task", "steps", "wall ms", "wall ratio to generate", "outside network ms",
                          "extra outside network"], rows)]
    rows = []
    for n, e in models:
        if "repaint" not in e:
            continue
        rp = e["repaint"]["repaint"]
        how = (f"extrapolated from {rp['steps_run']} steps ({rp['nfe_run']} NFE measured) at "
               f"{rp['per_nfe_s'] * 1e3:.1f} ms/NFE" if rp["extrapolated"] else "measured")
        method = f"RePaint {rp['full_steps']} steps, jump {rp['jump_length']}, {rp['jump_n_sample']} resamplings"
        rows.append([n, method,
                     rp["full_nfe"], f"{rp['full_wall_s']:.2f}", f"{rp['per_nfe_s'] * 1e3:.1f}", how, "1", "1"])
        for r in e["repaint"]["cmedit"]:
            rows.append([n, f"cmedit inpaint, {r['steps']} steps", r["nfe"], f"{r['wall_s']:.3f}",
                         f"{r['per_nfe_s'] * 1e3:.1f}", "measured", f"{r['nfe_ratio']:.0f}x",
                         f"{r['time_ratio']:.0f}x"])
    if rows:
        parts += ["## 3. `inpaint` vs diffusers' `RePaintPipeline` (same network, batch 1)\n",
                  "Network evaluations (NFE) counted with a forward hook on the UNet; the RePaint NFE of the full "
                  "schedule is counted from `RePaintScheduler`'s timesteps exactly as `RePaintPipeline` walks them.\n",
                  _table(["model", "method", "NFE", "s / image", "ms / NFE", "how", "RePaint NFE / this",
                          "RePaint time / this"], rows)]
    rows = [[n, r["task"], r["batch"], r["steps"], f"{r['images_per_s']:.1f}", _ms(r["call_s"])]
            for n, e in models for r in e.get("throughput", [])]
    if rows:
        parts += ["## 4. Batch throughput and peak memory\n",
                  "Images/s: median over calls, the tasks of one batch size taking turns in one process.\n",
                  _table(["model", "task", "batch", "steps", "images/s", "ms / call"], rows)]
    rows = [[n, r["task"], r["batch"], r["steps"], f"{r['delta_mib']:.0f}", f"{r['peak_rss_mib']:.0f}"]
            for n, e in models for r in e.get("memory", [])]
    if rows:
        method = next(r["method"] for _, e in models for r in e.get("memory", []))
        parts += [f"Peak memory: one fresh process per row; the peak RSS during one call minus the RSS before it "
                  f"(model and inputs built), by {method}.\n",
                  _table(["model", "task", "batch", "steps", "peak memory of the call (MiB)",
                          "process peak RSS (MiB)"], rows)]
    if "startup" in results:
        s = results["startup"]
        parts += ["## 5. Start-up\n",
                  f"`cmedit --help`/`--version` import torch: {'YES' if s['help_imports_torch'] else 'no'}, "
                  f"diffusers: {'YES' if s['help_imports_diffusers'] else 'no'}. `cmedit inpaint` ran on the "
                  f"{s['inpaint_model']}; output written: {'yes' if s['output_written'] else 'NO'}.\n",
                  _table(["command", "wall s"], [[r["command"], f"{r['wall_s']:.2f}"] for r in s["rows"]])]
    rows = [[n, r["option"], r["batch"], r["steps"], _ms(r["wall_s"]), f"{r['speedup']:.2f}x",
             f"{r['max_abs_diff_8bit']:.2f}", "" if r["first_call_s"] is None else f"{r['first_call_s']:.1f}"]
            for n, e in models for r in e.get("acceleration", [])]
    if rows:
        parts += ["## 6. Speed options (`inpaint`)\n",
                  "Speed-up over float32 on the same weights (median of per-turn ratios); `max diff` is the largest "
                  "pixel difference from the float32 output in 8-bit levels; `first call` includes compilation "
                  "(cold: an empty inductor cache)."
                  + ("" if plan["compile"] else " torch.compile was not measured in this run.") + "\n",
                  _table(["model", "option", "batch", "steps", "ms / call", "speed-up", "max diff (8-bit)",
                          "first call s"], rows)]
    rows = [[n, r["case"], r["steps"], r["forward_passes"], r["images_through_network"], f"{r['wall_s']:.3f}"]
            for n, e in models for r in e.get("large_images", [])]
    if rows:
        parts += ["## 7. Images larger than the model\n",
                  "Full-resolution editing: inpainting edits each masked region in a crop at the image's scale, "
                  "super-resolution runs overlapping tiles as one batch. `images through the network` counts the "
                  "batch items of all forward passes (forward hook).\n",
                  _table(["model", "case", "steps", "forward passes", "images through the network", "s / call"],
                         rows)]
    return "\n".join(parts)
