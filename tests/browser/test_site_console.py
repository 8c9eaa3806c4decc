"""The site's console in headless Chromium, served by a real ``site_console`` process
from a site's folders: its owner signs in with the printed address, reads the fleet and
its plan, changes a cost and sees the plan change, reads what joining is worth, what left
the site and its peers' fingerprints."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from federation.core.secagg.primitives import fingerprint
from tests.app.test_site_console import write_history
from tests.browser.conftest import LAPTOP, Browser
from tests.helpers import ROOT
from tests.site_state import FLEET_UNITS, make_site_state
from worker.keystore import Keystore

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def console(tmp_path_factory, cmapss_dir) -> Iterator[tuple[str, Path]]:
    """A site's console process; yields its printed address and the site's state folder."""
    data, state = make_site_state(tmp_path_factory.mktemp("site"), cmapss_dir)
    Keystore(state).identity()
    write_history(state)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "site_console", "--state-dir", str(state)]
        + ["--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "Console of site site-7: " in line, line
    try:
        yield line.split(": ", 1)[1].strip(), state
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def owner(chromium: webdriver.Chrome, console) -> Browser:
    address, _ = console
    chromium.set_window_size(*LAPTOP)
    base = address.split("?")[0]
    chromium.get(base + "sent/")
    chromium.delete_all_cookies()
    return Browser(chromium, base)


def plan_summary(owner: Browser) -> str:
    return owner.text("#plan-summary")


def test_the_owner_reads_the_fleet_and_the_plan_follows_the_costs(owner, console):
    address, _ = console
    owner.open("/sent/")
    owner.wait_for_text("main", "Open the address site_console printed")
    owner.driver.get(address)  # the printed address signs the owner in
    owner.wait_for_text("h1", "Your fleet today")
    units = [int(row.get_attribute("data-unit")) for row in owner.find_all("#fleet tbody tr")]
    assert sorted(units) == sorted(FLEET_UNITS)
    before = plan_summary(owner)
    assert before.startswith("Pull ")
    owner.screenshots("console-fleet")

    owner.find("details.box summary").click()
    owner.fill({"Failure cost ($)": "30000"})
    owner.click_button("Apply")
    owner.wait(lambda: plan_summary(owner) != before, "the plan did not change with the cost")
    assert "failure_cost=30000" in owner.driver.current_url

    owner.find("#filter input[name=show]").click()
    owner.click_button("Filter")
    owner.wait(lambda: "show=pull" in owner.driver.current_url)
    rows = owner.find_all("#fleet tbody tr")
    assert rows and all("pull" in (r.get_attribute("class") or "") for r in rows)
    owner.find("#fleet thead th:nth-child(2) a").click()  # sort by unit
    owner.wait(lambda: "sort=unit" in owner.driver.current_url)
    shown = [int(r.get_attribute("data-unit")) for r in owner.find_all("#fleet tbody tr")]
    assert shown == sorted(shown)


def test_the_owner_reads_the_worth_what_left_and_the_fingerprints(owner, console):
    address, state = console
    owner.driver.get(address)
    owner.wait_for_text("h1", "Your fleet today")

    owner.driver.find_element("link text", "What joining is worth").click()
    owner.wait_for_text("#worth-headline", "than your local model, per factory of 4 engines")
    assert "90% interval" in owner.text("#worth-headline")
    owner.screenshots("console-worth")

    owner.driver.find_element("link text", "What left").click()
    owner.wait_for_text("main", "Demo FD001 fleet, train round 3")
    assert "its input under masks (the coordinator sees only the sum)" in owner.text("main")
    assert "the model's hash did not match" in owner.text("#refused")
    owner.screenshots("console-sent")

    owner.driver.find_element("link text", "Who it talks to").click()
    own = fingerprint(Keystore(state).identity().public)
    owner.wait_for_text("#own-fingerprint", own)
    assert "site 2's identity key changed" in owner.text("main")
    owner.screenshots("console-peers")
