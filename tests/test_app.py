"""``cmedit app`` in a real browser: headless Chromium (Debian's package) driven by Playwright.

One app (``cmedit app``'s, on the embedded model) and one browser page serve the whole module.
A mouse stroke painted on the image is inpainted; colorize and super-resolve run through their tabs;
a bad factor shows the library's one-line message and the app keeps serving; the API endpoints,
called with gradio_client, write exactly the file that the CLI writes.
"""

from __future__ import annotations

import io
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client", reason="the app extra (gradio) is not installed")
pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

# Gradio's queue calls pandas options that pandas 3 deprecates: not this project's to fix.
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True, scope="module")
def restore_library_logging():
    """Loading a model as the CLI does routes the "cmedit" logger to stderr (``show_library_notes``):
    put it back after this module, so that later tests' ``caplog`` sees the library's warnings."""
    import logging

    library = logging.getLogger("cmedit")
    saved = library.handlers[:], library.propagate, library.level
    yield
    library.handlers[:], library.propagate = saved[0], saved[1]
    library.setLevel(saved[2])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    """The app of ``cmedit app`` (embedded 32x32 model, preloaded) on a free port, stopped after the module."""
    from cmedit.app import build_app

    page = build_app(device="cpu", preload=True)
    page.queue(default_concurrency_limit=1)
    _, url, _ = page.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    page.close()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(60_000)  # a busy 2-core machine
    page.goto(app_url)
    page.wait_for_selector("#editor canvas")
    yield page
    page.close()


def load(page, path: Path) -> None:
    """Upload an image file, as a person does with the file box; the editor then shows it."""
    clear = page.locator("#image-file button[aria-label=Clear]")
    if clear.count():  # the box holds the previous image
        clear.click()
    page.locator("#image-file input[type=file]").set_input_files(str(path))
    page.locator("#image-file").get_by_text(path.stem).first.wait_for()
    page.wait_for_timeout(1000)  # the editor draws the new background


def run(page, button: str, tab: str | None = None) -> np.ndarray:
    """Click an edit's button (in its tab) and read back the chosen result's file as a uint8 array."""
    if tab is not None:
        page.get_by_role("tab", name=tab).click()
    link = page.locator("#chosen a[download]").first
    before = link.get_attribute("href") if link.count() else None
    page.click(f"#{button}")
    page.wait_for_function("""(before) => {
        const link = document.querySelector('#chosen a[download]');
        return link !== null && link.getAttribute('href') !== before;
    }""", arg=before, timeout=60_000)
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB")).astype(int)


def test_inpaint_a_painted_stroke(page):
    original = np.asarray(Image.open(SAMPLES / "face.png").convert("RGB")).astype(int)
    load(page, SAMPLES / "face.png")
    page.locator("#editor button[aria-label=Brush]").click()
    page.locator("#editor button[aria-label='Brush Size']").wait_for()
    box = page.locator("#editor canvas").first.bounding_box()
    # A horizontal stroke through the middle of the canvas, where the image is centred.
    x0, y = box["x"] + box["width"] / 2 - 30, box["y"] + box["height"] / 2
    page.mouse.move(x0, y)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + 6 * k, y, steps=2)
    page.mouse.up()
    result = run(page, "run-inpaint")

    assert result.shape == original.shape
    changed = (result != original).any(axis=-1)
    rows, cols = np.nonzero(changed)
    assert changed.sum() >= 10, "nothing under the stroke changed"
    # The stroke (radius-2 brush) lies around the middle row: everything above and below it is kept exactly.
    assert rows.min() >= 10 and rows.max() <= 21, (rows.min(), rows.max())
    assert not changed[:10].any() and not changed[22:].any()
    assert changed[14:18, 13:19].mean() > 0.5  # under the stroke's centre


def test_colorize_through_its_tab(page):
    grey = np.asarray(Image.open(SAMPLES / "face_gray.png").convert("L")).astype(float)
    load(page, SAMPLES / "face_gray.png")
    result = run(page, "run-colorize", tab="Colorize")
    assert result.shape[:2] == grey.shape
    assert np.ptp(result, axis=-1).max() > 20, "no colour added"
    luminance = result @ np.array([0.299, 0.587, 0.114])
    assert np.abs(luminance - grey).max() <= 2  # colorization keeps the grey levels (8-bit rounding)


def test_super_resolve_and_a_bad_factor(page):
    small = np.asarray(Image.open(SAMPLES / "face_8x8.png").convert("RGB")).astype(float)
    load(page, SAMPLES / "face_8x8.png")
    page.get_by_role("tab", name="Super-resolve").click()
    factor = page.locator("#factor input")
    factor.fill("3")
    page.click("#run-super-resolve")
    # The library's message, as the CLI prints it; the page stays usable.
    page.get_by_text("factor 3 does not divide the model resolution 32").first.wait_for(timeout=30_000)
    factor.fill("4")
    result = run(page, "run-super-resolve")
    assert result.shape == (32, 32, 3)
    # The default kernel: PIL's bicubic shrink of the result gives the input back, to the 8-bit rounding
    # and [0, 255] clipping of the output (which the bicubic's negative lobes amplify a little).
    shrunk = np.stack([np.asarray(Image.fromarray(result[..., c].astype(np.float32), "F").resize(
        (8, 8), Image.BICUBIC)) for c in range(3)], axis=-1)
    assert np.abs(shrunk - small).max() <= 3 and np.abs(shrunk - small).mean() < 0.5
    page.click("#use-as-input")  # the result becomes the image to edit
    page.locator("#image-file").get_by_text("face_8x8_x4").wait_for()  # the page shows .png apart


def test_api_endpoints_write_what_the_cli_writes(app_url, tmp_path):
    from click.testing import CliRunner

    from cmedit.cli import main

    client = gradio_client.Client(app_url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/inpaint", "/outpaint", "/colorize", "/super_resolve", "/img2img", "/generate"):
        assert name in api
    gallery, chosen, seed = client.predict(
        None, gradio_client.handle_file(str(SAMPLES / "face_gray.png")), "", 0, "", 7, 2, "", 1.0,
        api_name="/colorize")
    assert seed == 7 and len(gallery) == 2 and Path(chosen).name == "face_gray_colorized_0.png"
    cli_out = tmp_path / "cli" / "face_gray_colorized.png"
    result = CliRunner().invoke(main, ["colorize", str(SAMPLES / "face_gray.png"), "--seed", "7",
                                       "--num-samples", "2", "-o", f"{cli_out.parent}/", "--quiet"])
    assert result.exit_code == 0, result.output
    for k, item in enumerate(gallery):
        cli_file = cli_out.parent / f"face_gray_colorized_{k}.png"
        assert Path(item["image"]).read_bytes() == cli_file.read_bytes()

    # Bad input: the CLI's one-line messages, and the app keeps serving.
    black = tmp_path / "black.png"
    Image.new("L", (32, 32)).save(black)
    with pytest.raises(Exception, match=r"^face.png: the mask is empty \(all black\): nothing to inpaint$"):
        client.predict(None, gradio_client.handle_file(str(SAMPLES / "face.png")), "", 0, "", 0, 1, "",
                       gradio_client.handle_file(str(black)), False, 1.0, 0.5, 3, api_name="/inpaint")
    junk = tmp_path / "notes.png"
    junk.write_text("not a picture")
    with pytest.raises(Exception, match=r"^notes.png: not an image file that can be read$"):
        client.predict(None, gradio_client.handle_file(str(junk)), "", 0, "", 0, 1, "", 1.0, api_name="/colorize")


def test_two_tabs_get_their_own_results(app_url):
    """Two clients at once (as two browser tabs): each gets its own seed's files."""
    clients = [gradio_client.Client(app_url, verbose=False) for _ in range(2)]
    jobs = [client.submit(None, gradio_client.handle_file(str(SAMPLES / "face_gray.png")), "", 0, "", seed, 1, "",
                          1.0, api_name="/colorize") for client, seed in zip(clients, (11, 12))]
    (gallery_a, chosen_a, seed_a), (gallery_b, chosen_b, seed_b) = [job.result(timeout=120) for job in jobs]
    assert (seed_a, seed_b) == (11, 12)
    assert Path(chosen_a).read_bytes() != Path(chosen_b).read_bytes()


@pytest.mark.parametrize("edit, options, size", [
    ("outpaint", {"right": 8, "bottom": 4}, (24, 20)),
    ("img2img", {"strength": 0.5}, (16, 16)),
    ("generate", {}, (16, 16)),
])
def test_run_edit_writes_the_cli_files(model_dir, tmp_path, edit, options, size):
    """The handlers without the page, on a tiny model: the CLI's output, byte for byte."""
    from click.testing import CliRunner

    from cmedit.app.handlers import ModelCache, Sampling, run_edit
    from cmedit.cli import main

    source = tmp_path / "in.png"
    Image.open(SAMPLES / "face.png").resize((16, 16)).save(source)
    paths, seed = run_edit(ModelCache("cpu"), edit, None if edit == "generate" else source,
                           Sampling(model=str(model_dir), seed=3), out_dir=tmp_path / "app", **options)
    assert seed == 3 and len(paths) == 1
    with Image.open(paths[0]) as image:
        assert image.size == size
    flags = [f"--{key}={value}" for key, value in options.items()]
    args = [edit] + ([] if edit == "generate" else [str(source)]) + flags
    result = CliRunner().invoke(main, args + ["--model", str(model_dir), "--seed", "3", "-o",
                                              str(tmp_path / "cli" / paths[0].name), "--quiet"])
    assert result.exit_code == 0, result.output
    assert paths[0].read_bytes() == (tmp_path / "cli" / paths[0].name).read_bytes()


def test_cmedit_app_serves_on_localhost_and_prints_its_address(monkeypatch):
    import gradio as gr
    from click.testing import CliRunner

    from cmedit.cli import main

    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)  # return instead of serving forever
    port = free_port()
    result = CliRunner().invoke(main, ["app", "--port", str(port), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"cmedit app: http://127.0.0.1:{port}/" in result.output
    result = CliRunner().invoke(main, ["app", "--model", "no/such/model", "--device", "cpu"])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and len(result.output.splitlines()) == 1


def test_help_does_not_import_gradio():
    code = ("import sys; from cmedit.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
            "assert 'gradio' not in sys.modules and 'torch' not in sys.modules")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "app " in result.stdout
