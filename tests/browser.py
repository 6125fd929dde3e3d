"""A real headless Chromium for the console's tests (Debian's chromium and chromium-driver,
driven by Selenium), kept to loopback: it resolves no name but 127.0.0.1, talks to no
Google service, and Selenium Manager never runs (the driver's path is given), so nothing
is downloaded. ``tests/install_browser.sh`` installs both; ``make test`` calls it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts"  # screenshots of each test; gitignored
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--disable-features=MediaRouter,OptimizationHints,Translate,DnsOverHttps,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--dns-prefetch-disable", "--window-size=1280,900",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)  # fmt: skip


def chromium(profile: Path):
    """A new headless Chromium with a fresh profile in ``profile``; the caller quits it."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: run sh tests/install_browser.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_AVOID_STATS"] = "true"  # Selenium Manager does not run; if it did: no stats
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def screenshot(driver, name: str) -> Path:
    """Keep what the browser shows as ``tests/artifacts/NAME.png``; its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / (re.sub(r"[^\w.-]+", "_", name) + ".png")
    driver.save_screenshot(str(path))
    return path
