"""The first federation, end to end, as its people live it: in headless Chromium against
the real web app, with a real coordinator worker and real site workers.

The demo's admin runs a federation that two fleets have joined already and signs in
with the password the demo printed; a new owner signs up, creates a site and asks to
join; the admin approves; the owner copies the credential and starts the worker with
the command the page shows; the admin starts the federation and watches it train; a
visitor follows it without an account; the owner's page says when no more work will
come; the admin runs more rounds, in which the new site takes part, and the owner sees
that round on the site's page.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from federation.models import Contribution, Federation, Round, Site
from tests.browser.conftest import LAPTOP, Browser
from tests.stack import Stack
from turbofan.data.files import read_engine_file
from turbofan.data.partition import plan_iid, write_partition
from worker.demo import ADMIN_PASSWORD_FILE, DEMO_ADMIN, DemoConfig, setup_federation

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-unusual-passphrase-42"
COMMAND = re.compile(
    r"SITE_CREDENTIAL=(tfs_[A-Za-z0-9_-]{20,}) \.venv/bin/python manage\.py site_worker "
    r"--coordinator (\S+) --data-dir PATH"
)


@pytest.fixture
def folders(tmp_path: Path, cmapss_dir: Path) -> list[Path]:
    units = read_engine_file(cmapss_dir / "train_FD001.txt")["unit"].to_numpy()
    plan = plan_iid("FD001", units, 3, seed=5)
    out = write_partition(plan, cmapss_dir, tmp_path / "data")
    return [out / share.name for share in plan.sites]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path) as running:
        running.start_web()
        running.start("coordinator", "coordinator_worker")
        yield running


@pytest.fixture
def people(chromium: webdriver.Chrome, stack: Stack) -> Browser:
    chromium.set_window_size(*LAPTOP)
    chromium.get(stack.url + "healthz")
    chromium.delete_all_cookies()
    return Browser(chromium, stack.url.rstrip("/"))


def sign_in(browser: Browser, username: str, lands_on: str, password: str = PASSWORD) -> None:
    browser.driver.delete_all_cookies()
    browser.open("/accounts/login/")
    browser.fill({"Username:": username, "Password:": password})
    browser.click_button("Log in")
    browser.wait_for_text("h1", lands_on)


def wait_until(condition, seconds: float, what: str, stack: Stack):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    logs = "\n".join(f"--- {name}\n{stack.log(name)[-3000:]}" for name in stack.processes)
    raise AssertionError(f"{what} within {seconds} s:\n{logs}")


def test_an_admin_an_owner_and_a_visitor_through_a_first_federation(
    people: Browser, stack: Stack, folders: list[Path], tmp_path: Path
):
    browser = people
    # The demo's federation, which two fleets have joined; its admin's password is the
    # one the demo prints and keeps in var/.
    config = DemoConfig(sites=3, rounds=1, deadline=120)  # three sites, east-hangar to come
    federation, credentials = setup_federation(
        config, {"west-hangar": folders[1], "south-hangar": folders[2]}
    )
    for index, name in enumerate(("west-hangar", "south-hangar")):
        stack.start_site(name, folders[index + 1], credentials[name])
    admin_password = (Path(settings.VAR_DIR) / ADMIN_PASSWORD_FILE).read_text().strip()
    fleet = federation.name

    # A new owner signs up, creates a site and asks to join.
    browser.open("/accounts/signup/")
    browser.fill({"Username:": "nina", "Password:": PASSWORD, "Password confirmation:": PASSWORD})
    browser.click_button("Sign up")
    browser.wait_for_text("h1", "My sites")
    browser.driver.find_element(By.LINK_TEXT, "Create a site").click()
    browser.fill({"Name:": "east hangar"})  # a space: refused, saying what to type
    browser.click_button("Create site")
    browser.wait_for_text(".errorlist", "Use only letters, digits, hyphens (-)")
    browser.fill({"Name:": "east-hangar"})
    browser.click_button("Create site")
    browser.wait_for_text("h1", "east-hangar")
    assert browser.find_all("#credential-not-yet")  # no credential before approval
    Select(browser.find("#id_federation")).select_by_visible_text(fleet)
    browser.click_button("Request to join")
    browser.wait_for_text(".work", "the federation's admin has not approved the request")

    # The admin lands on the federation with the request waiting, and approves it.
    sign_in(browser, DEMO_ADMIN, fleet, admin_password)
    browser.driver.find_element(By.CSS_SELECTOR, "[aria-label='Approve east-hangar']").click()
    browser.wait_for_text(".messages", "east-hangar is approved")

    # The owner gets the credential and the command that starts the worker.
    sign_in(browser, "nina", "My sites")
    browser.driver.find_element(By.LINK_TEXT, "east-hangar").click()
    browser.wait_for_text(".work", "Waiting for the federation's admin to start it")
    browser.click_button("Get the site's credential")
    browser.wait_for_text("h1", "Credential for east-hangar")
    browser.driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"], "origin": stack.url},
    )
    browser.find("button[data-copy='credential']").click()
    browser.wait_for_text("#credential-copied", "Copied.")
    copied = browser.driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[arguments.length - 1])"
    )
    assert copied == browser.text("#credential")
    command = COMMAND.search(browser.text("#worker-command"))
    assert command, browser.text("#worker-command")
    credential, coordinator = command.groups()
    assert coordinator == stack.url
    # The owner runs the command shown, with the site's folder for PATH.
    stack.start_site("east-hangar", folders[0], credential)
    names = ["east-hangar", "west-hangar", "south-hangar"]
    wait_until(
        lambda: (
            Site.objects.filter(name__in=names, data_summary__isnull=False)
            .exclude(identity_key="")
            .count()
            == 3
        ),
        120,
        "the three site workers did not report",
        stack,
    )

    # The admin starts the federation and watches it train, without reloading.
    sign_in(browser, DEMO_ADMIN, fleet, admin_password)
    browser.click_button("Start the federation")
    browser.wait_for_text(".messages", "Start requested")
    wait_until(
        lambda: "Finished" in browser.text("#live-headline"),
        240,
        "the federation did not finish on the admin's page",
        stack,
    )
    assert browser.text("#overall-progress-text") == "1 of 1 training rounds done"

    # A visitor, signed in as no one, follows it too.
    browser.driver.delete_all_cookies()
    browser.open(f"/federations/{federation.id}/")
    browser.wait_for_text("#live-headline", "Finished: 1 training rounds done.")
    assert not browser.find_all("#extend-federation")  # no admin controls for a visitor

    # The owner hears that no more work will come, until the admin runs more rounds.
    sign_in(browser, "nina", "My sites")
    browser.driver.find_element(By.LINK_TEXT, "east-hangar").click()
    browser.wait_for_text(".work", "The federation has finished: no work will come")
    sign_in(browser, DEMO_ADMIN, fleet, admin_password)
    more = browser.find("#more-rounds")
    more.clear()
    more.send_keys("1")
    browser.click_button("Run more rounds")
    browser.wait_for_text(".messages", "1 more rounds requested: training round 2 is open")
    wait_until(
        lambda: Federation.objects.get(id=federation.id).status == Federation.Status.FINISHED,
        240,
        "the extended federation did not finish",
        stack,
    )
    second = Round.objects.get(federation=federation, kind="train", number=2)
    taking_part = Contribution.objects.filter(round=second).values_list("site__name", flat=True)
    assert sorted(taking_part) == sorted(names)
    assert second.status == Round.Status.DONE
    browser.open(f"/federations/{federation.id}/")
    browser.wait_for_text("#live-headline", "Finished: 2 training rounds done.")
    # The owner sees the new round among what the coordinator received from the site.
    sign_in(browser, "nina", "My sites")
    browser.driver.find_element(By.LINK_TEXT, "east-hangar").click()
    browser.wait_for_text("#sent-log", "training 2")
