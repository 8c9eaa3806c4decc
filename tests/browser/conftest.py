"""Headless Chromium (Debian's chromium and chromium-driver) against a live test server.

One browser serves the whole session; each test starts from a blank page without
cookies. Screenshots go to artifacts/browser/ (ignored by git, kept by CI), each page at a
laptop and at a phone width.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers import ROOT

ARTIFACTS = ROOT / "artifacts" / "browser"
LAPTOP = (1280, 900)
PHONE = (375, 812)
WAIT_SECONDS = 10
# No first-run work, no calls home: the tests must pass without internet.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def _executables() -> tuple[str, str]:
    binary = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium")
    driver = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
    if binary and driver:
        return binary, driver
    message = "Chromium not found: apt-get install chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def headless_chromium(binary: str, driver: str) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile, removed afterwards (the benchmarks use it
    too)."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    with headless_chromium(*_executables()) as browser:
        yield browser


class Browser:
    """A thin layer over the driver: open a path, wait for something, take screenshots."""

    def __init__(self, driver: webdriver.Chrome, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text

    def fill(self, values: dict[str, str]) -> None:
        """Type into inputs found by their label's text, as a user reads the form."""
        for label, value in values.items():

            def label_of(label: str = label) -> WebElement:
                return self.driver.find_element(By.XPATH, f"//label[normalize-space()={label!r}]")

            field = self.wait(label_of, f"no field labelled {label!r}").get_attribute("for")
            element = self.find(f"#{field}")
            element.clear()
            element.send_keys(value)

    def click_button(self, text: str) -> None:
        self.driver.find_element(By.XPATH, f"//button[normalize-space()={text!r}]").click()

    def wait(self, condition: Callable[[], Any], message: str = "") -> Any:
        # A page that is being replaced leaves stale elements behind: look again.
        def attempt(_: Any) -> Any:
            try:
                return condition()
            except WebDriverException as error:
                # Chromium reports an element of the page being replaced like this,
                # rather than as a stale element.
                if "does not belong to the document" in str(error):
                    return False
                raise

        return WebDriverWait(
            self.driver,
            WAIT_SECONDS,
            poll_frequency=0.1,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(attempt, message)

    def wait_for_text(self, css: str, text: str) -> None:
        self.wait(
            lambda: any(text in e.text for e in self.find_all(css)),
            f"{text!r} did not appear in {css}",
        )

    def screenshots(self, name: str) -> None:
        """The whole page at a laptop's and at a phone's width."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for label, (width, height) in (("laptop", LAPTOP), ("phone", PHONE)):
            self.driver.set_window_size(width, height)
            self.driver.execute_script("return document.fonts.ready")
            full = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(width, max(height, min(int(full), 6000)))
            self.driver.execute_script(
                "return new Promise(done => requestAnimationFrame(() => setTimeout(done, 250)))"
            )
            self.driver.save_screenshot(str(ARTIFACTS / f"{name}-{label}.png"))
        self.driver.set_window_size(*LAPTOP)


@pytest.fixture
def browser(chromium: webdriver.Chrome, live_server: Any, settings: Any) -> Browser:
    # A fast hash: the default costs a third of a second per sign-up and log-in.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    chromium.set_window_size(*LAPTOP)
    chromium.get(live_server.url + "/healthz")
    chromium.delete_all_cookies()
    return Browser(chromium, live_server.url)
