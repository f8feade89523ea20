"""A headless Chromium for browser tests (Debian's ``chromium`` + ``chromium-driver``, Selenium).

``.ci/run`` installs the two Debian packages when they are absent. Where they (or Selenium)
are missing on a developer's machine the browser tests are skipped, never silently passed:
under CI (``CI`` set) a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import time

import pytest

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)
DRIVER = next((p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver") if p and os.path.exists(p)), None)


def require_browser():
    """Skips (or, under CI, fails) the calling test when no headless Chromium is available."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing = "selenium is not installed"
    else:
        missing = None if CHROMIUM and DRIVER else "chromium / chromium-driver are not installed"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test under CI: {missing}")
        pytest.skip(missing)


def headless_chromium(width: int = 1280, height: int = 900):
    """A Selenium WebDriver on a headless Chromium; the caller quits it."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture
def browser():
    driver = headless_chromium()
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 90.0, what: str = "the page", poll: float = 0.02):
    """``condition()``'s first truthy value, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
