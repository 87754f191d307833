"""A real headless browser for the operator page: Debian's chromium driven by playwright
(`make browser` installs both). Where either is missing, ``why_no_browser`` says so."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("WAIMAI_CHROMIUM", "/usr/bin/chromium"))


def why_no_browser() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (make install: pip install -e '.[dev]')"
    if not CHROMIUM.is_file():
        return f"chromium is not at {CHROMIUM} (make browser: apt-get install chromium, as root)"
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless chromium; the system's build, never one playwright downloads."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def log_in(page: Page, base_url: str, key: str) -> None:
    """Open the operator page and log in with ``key`` through its form."""
    page.goto(f"{base_url}/admin/")
    page.get_by_label("Admin API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
