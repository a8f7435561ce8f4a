"""One way to start the real headless Chromium for browser tests (Debian chromium + chromedriver via Selenium).

Without chromium the tests using it FAIL (so CI cannot pass silently); CALCINOSIS_SKIP_BROWSER=1 skips them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def headless_chromium(window: tuple[int, int], *, needs: Iterable[str] = (), flags: Iterable[str] = (),
                      why: str = "browser test") -> Iterator[Any]:
    """A Selenium driver for headless Chromium with a fresh profile; nothing is downloaded (explicit driver).

    ``needs``: further files or commands the test requires (e.g. a font); ``flags``: extra Chromium flags.
    """
    if os.environ.get("CALCINOSIS_SKIP_BROWSER") == "1":
        pytest.skip("CALCINOSIS_SKIP_BROWSER=1")
    required = (CHROMIUM, CHROMEDRIVER, *needs)
    missing = [path for path in required if not shutil.which(path) and not Path(path).exists()]
    if missing:
        pytest.fail(f"{why} needs {', '.join(missing)}: apt-get install chromium chromium-driver fonts-liberation "
                    "(or set CALCINOSIS_SKIP_BROWSER=1 to skip)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="test-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}", *flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
