"""``benchmarks/run.py --quick`` runs end to end and writes every section; timings are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("generate_vs_diffusers", "edit_overhead", "repaint", "throughput", "memory", "acceleration",
            "large_images")
TASKS = {"generate", "inpaint", "colorize", "super_resolve"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--threads", "1",
                    "--out", str(out)], check=True, capture_output=True, timeout=600)
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_results_record_the_machine_and_the_plan(quick_run):
    results, _ = quick_run
    assert {"platform", "cpu", "cpu_count", "torch", "diffusers", "torch_threads"} <= set(results["machine"])
    assert results["machine"]["torch_threads"] == 1
    assert results["plan"]["quick"] is True
    assert {"models", "startup", "headline", "total_s"} <= set(results)


def test_every_section_is_measured_for_the_model(quick_run):
    results, _ = quick_run
    (entry,) = results["models"].values()
    assert set(SECTIONS) <= set(entry)
    for row in entry["generate_vs_diffusers"]:
        assert {"steps", "cmedit_s", "diffusers_s", "ratio", "identical_output"} <= set(row)
        assert row["identical_output"]  # the comparison is of the same computation
    assert {row["task"] for row in entry["edit_overhead"]} == TASKS
    for row in entry["edit_overhead"]:
        assert {"ratio_to_generate", "outside_network_ms", "extra_outside_network_pct"} <= set(row)
    assert {row["task"] for row in entry["throughput"]} == TASKS
    for row in entry["throughput"]:
        assert {"task", "batch", "steps", "images_per_s"} <= set(row) and row["images_per_s"] > 0
    for row in entry["memory"]:
        assert {"task", "batch", "delta_mib", "peak_rss_mib", "method"} <= set(row)
        assert 0 <= row["delta_mib"] <= row["peak_rss_mib"]
    assert {"option", "batch", "speedup", "max_abs_diff_8bit"} <= set(entry["acceleration"][0])
    for row in entry["large_images"]:
        assert {"case", "wall_s", "forward_passes", "images_through_network"} <= set(row)
        assert row["images_through_network"] >= row["forward_passes"] >= row["steps"]


def test_network_evaluations_are_counted_not_assumed(quick_run):
    results, _ = quick_run
    (entry,) = results["models"].values()
    repaint = entry["repaint"]["repaint"]
    assert repaint["nfe_run"] == repaint["nfe_expected_run"]  # forward hook agrees with RePaint's schedule
    assert repaint["full_nfe"] == 2410  # 250 steps, jump length 10, 10 resamplings
    assert repaint["extrapolated"] == (repaint["steps_run"] != 250)
    for row in entry["repaint"]["cmedit"]:
        assert row["nfe"] == row["steps"]


def test_startup_section_and_markdown_report(quick_run):
    results, report = quick_run
    startup = results["startup"]
    assert startup["output_written"]
    assert not startup["help_imports_torch"]
    assert {row["command"] for row in startup["rows"]} >= {"cmedit --help", "cmedit --version"}
    for heading in ("## Headline", "## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7."):
        assert heading in report
