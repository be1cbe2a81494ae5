"""Headless Chromium for the browser tests, driven by selenium; artifacts (screenshots) kept for CI."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tests.support import IN_CI, require

#: Where the browser tests keep their screenshots (git-ignored; CI may upload it).
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")

#: Flags that keep Chromium off the network and quiet in a sandboxed, screenless machine.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,900",
)


def chromium(test: Any) -> Any:
    """A selenium WebDriver on headless Chromium with a fresh profile, quit at the end of ``test``.

    Skips when Chromium, chromedriver or selenium is missing (fails in CI).
    """
    binary = require("chromium")
    driver_path = require("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        if IN_CI:
            raise AssertionError("selenium is not installed (pip install -e '.[test]')") from e
        from twisted.trial.unittest import SkipTest

        raise SkipTest("selenium is not installed") from e
    profile = tempfile.mkdtemp(prefix="rtmpd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    test.addCleanup(shutil.rmtree, profile, True)
    test.addCleanup(driver.quit)
    return driver


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` (a page has no event a test can await) until it returns something true."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not true within {timeout}s (last: {last!r})")


def screenshot(driver: Any, name: str) -> str:
    """Save a PNG of the page as ``tests/artifacts/NAME.png``; return its path."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, f"{name}.png")
    driver.save_screenshot(path)
    return path
