"""A real browser for the portal's tests: Debian's chromium driven by Playwright for Python.

Playwright's sync API runs an event loop in the test's thread while a page is open, so Django refuses
ORM calls there (SynchronousOnlyOperation): tests read and write the database outside `browser_page()`
blocks, and carry a signed-in session from one block to the next with `storage_state`.
"""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1200, "height": 800}
MOBILE_VIEWPORT = {"width": 390, "height": 844}
# Set to a directory to have the browser tests save full-page screenshots there (for the README).
SCREENSHOTS_ENV = "PORTAL_SCREENSHOTS"

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is not installed (apt-get install -y chromium)"
)


@contextmanager
def browser_page(*, storage_state: dict | None = None, viewport: dict | None = None):
    """A page in a fresh chromium (closed on exit), optionally with the cookies of an earlier block."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=viewport or VIEWPORT, storage_state=storage_state)
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def session_state(site_url: str, session_key: str) -> dict:
    """A `storage_state` holding a Django session made outside the browser (e.g. by Client.force_login)."""
    from django.conf import settings

    cookie = {"name": settings.SESSION_COOKIE_NAME, "value": session_key, "url": site_url}
    return {"cookies": [cookie], "origins": []}


def sign_in(page, site_url: str, *, email: str, password: str) -> None:
    """Log in through the portal's login page; lands on the key list."""
    page.goto(f"{site_url}/portal/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{site_url}/portal/keys")


def screenshot(page, name: str, *, mobile: bool = False) -> None:
    """Save a full-page PNG `<name>.png` into $PORTAL_SCREENSHOTS when it is set; otherwise nothing."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    if mobile:
        page.set_viewport_size(MOBILE_VIEWPORT)
    try:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
    finally:
        if mobile:
            page.set_viewport_size(VIEWPORT)
