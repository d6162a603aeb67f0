"""A real headless Chromium (Debian's ``chromium`` package) driven by Playwright, and screenshot saving.

Playwright only drives the browser here: its own browser downloads are never used. The binary is
``$DIGITSTREAM_CHROMIUM`` or the first of ``chromium`` / ``chromium-browser`` on PATH; tests using
these fixtures are skipped with the reason when there is none (``apt-get install chromium``).
Screenshots go to the test's tmp dir and to ``test-artifacts/dashboard/`` (gitignored) for people.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ENV_VAR = "DIGITSTREAM_CHROMIUM"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"


def find_chromium() -> str | None:
    """The Chromium binary to drive, or None when none is installed."""
    configured = os.environ.get(CHROMIUM_ENV_VAR)
    if configured:
        return configured if Path(configured).exists() else shutil.which(configured)
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (a launch costs ~1 s); each test gets its own page."""
    executable = find_chromium()
    if executable is None:
        pytest.skip(f"no Chromium found (install Debian's `chromium` package or set {CHROMIUM_ENV_VAR})")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """``open_page(url, width=1280, height=1000, csp=False)``: a fresh page; JavaScript errors fail the test.

    Playwright's ``wait_for_function`` evaluates its predicate with ``eval``, which the dashboard's
    Content-Security-Policy forbids; pages are therefore opened with the CSP bypassed unless
    ``csp=True`` (tests/test_security_writes.py uses the dashboard under its CSP).
    """
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(url: str, width: int = 1280, height: int = 1000, csp: bool = False) -> Any:
        context = browser.new_context(
            viewport={"width": width, "height": height}, service_workers="block", bypass_csp=not csp
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """``screenshot(page, name)``: a full-page PNG in the tmp dir and in test-artifacts/dashboard/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = tmp_path / "screenshots" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        shutil.copyfile(path, ARTIFACTS / path.name)
        return path

    return take
