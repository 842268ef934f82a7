"""Headless Chromium for the tests: the system's browser (Debian's ``chromium``) driven by
Playwright for Python, which needs no browser download of its own."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """``$OSRKIT_CHROMIUM``, else the first Chromium on the PATH."""
    env = os.environ.get("OSRKIT_CHROMIUM")
    if env:
        return env
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class PageVisit:
    """What happened while a page loaded."""

    image_widths: list[int]
    text: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: bytes = b""


def visit(html_file: Path, width: int = 1280, screenshot: Path | None = None) -> PageVisit:
    """Open ``html_file`` in headless Chromium; skips the test where there is none."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set OSRKIT_CHROMIUM)")
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url[:80]}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_file.resolve().as_uri(), wait_until="load")
            widths = page.evaluate("Array.from(document.images, i => i.complete ? i.naturalWidth : 0)")
            text = page.evaluate("document.body ? document.body.innerText : ''")
            shot = page.screenshot(full_page=True, path=screenshot)
        finally:
            browser.close()
    return PageVisit(widths, text, errors, requests, shot)
