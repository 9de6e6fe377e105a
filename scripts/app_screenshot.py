"""Screenshot of the web app with an inpainting result, for docs/figures/app.png.

    python scripts/app_screenshot.py -o docs/figures/app.png

Starts the app (embedded model) on a free port, loads samples/face.png, paints a stroke across the
mouth with the mouse in headless Chromium (Debian's ``chromium``), inpaints four candidates with
seed 0 and saves the page, reduced to a small palette PNG.
"""

from __future__ import annotations

import argparse
import shutil
import socket
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "figures" / "app.png")
    parser.add_argument("--width", type=int, default=1000, help="Width of the saved PNG in pixels.")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from cmedit.app import build_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = build_app(device="cpu", preload=True)
    app.queue(default_concurrency_limit=1)
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#editor canvas")
            page.locator("#image-file input[type=file]").set_input_files(str(ROOT / "samples" / "face.png"))
            page.locator("#image-file").get_by_text("face.png").wait_for()
            page.wait_for_timeout(1000)
            page.locator("#editor button[aria-label=Brush]").click()
            box = page.locator("#editor canvas").first.bounding_box()
            x0, y = box["x"] + box["width"] / 2 - 70, box["y"] + box["height"] / 2 + 55
            page.mouse.move(x0, y)
            page.mouse.down()
            for k in range(1, 29):
                page.mouse.move(x0 + 5 * k, y, steps=2)
            page.mouse.up()
            page.mouse.move(5, 5)
            page.locator("#seed input").fill("0")
            page.locator("input[aria-label='number input for Candidates']").fill("4")
            page.locator("input[aria-label='number input for Candidates']").press("Enter")
            page.click("#run-inpaint")
            page.locator("#chosen a[download]").first.wait_for(timeout=120_000)
            page.wait_for_timeout(1500)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output), full_page=True)
            browser.close()
    finally:
        app.close()
    image = Image.open(args.output).convert("RGB")
    image = image.resize((args.width, round(image.height * args.width / image.width)), Image.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.output, optimize=True)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
