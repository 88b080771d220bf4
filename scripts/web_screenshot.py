"""A screenshot of voxtral-serve's page (docs/web.png, shown in docs/server.md), in the browser the tests use.

    voxtral-serve ENGINE_OR_MODEL_DIR --port 8080 &
    python scripts/web_screenshot.py http://127.0.0.1:8080 docs/web.png [--text "..."] [--chromium PATH]

The page speaks the text once (Speak), then the whole page is saved as a PNG. Needs Playwright for
Python and a Chromium (Debian's by default; never ``playwright install``).
"""

from __future__ import annotations

import argparse
import time

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]


def wait(page, expression: str, timeout: float = 60) -> None:
    """Polls from Python: the page's Content-Security-Policy forbids the eval Playwright's waiting uses."""
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        if time.time() > deadline:
            raise TimeoutError(f"{expression}: {page.inner_text('#status')}")
        time.sleep(0.05)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8080")
    p.add_argument("png", help="where the screenshot goes")
    p.add_argument("--text", default="Hello! This is Voxtral, speaking from your own server. "
                                     "The audio plays while it is generated.")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--width", type=int, default=900)
    args = p.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 700})
        page.goto(args.url.rstrip("/") + "/")
        wait(page, "voxtralPage.state === 'idle'")
        page.fill("#text", args.text)
        page.fill("#seed", "1")
        page.click("#speak")
        wait(page, "['done', 'error'].includes(voxtralPage.state)")
        page.screenshot(path=args.png, full_page=True)
        browser.close()
    print(args.png)


if __name__ == "__main__":
    main()
