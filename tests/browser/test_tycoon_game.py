"""Turbofan Tycoon, played in headless Chromium: keyboard, an unlock, a whole race.

The game runs in the browser; these tests check it against the analyst replay's core
(turbofan/tycoon.py) on the same pack: every engine a rival ran, it ran as that rival's
model says, and a rival's money at the end is the analyst replay's to the dollar.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.app.test_tycoon_pages import LIVES, fake_pack
from tests.browser.conftest import ARTIFACTS, PHONE, Browser
from turbofan.tycoon import Economics, outcomes, predictive_triggers, simulate
from turbofan.tycoon_pack import PredictionPack

pytestmark = pytest.mark.django_db(transaction=True)

GAME_SECONDS = 60  # a whole race at top speed takes a few seconds


def game_pack() -> PredictionPack:
    """The page tests' pack, with a federated model that predicts exactly as the
    centralised one on engines 0-2 and a few hours later on engines 3 and 4."""
    pack = fake_pack()
    predicted = pack.holdout.predicted
    federated = predicted["centralised"].copy()
    federated[3:] += 2
    predicted["federated"] = federated
    return pack


@pytest.fixture
def pack(settings, tmp_path) -> PredictionPack:
    pack = game_pack()
    settings.TYCOON_PACK = tmp_path / "pack.npz"
    pack.save(settings.TYCOON_PACK)
    return pack


def js(browser: Browser, script: str) -> Any:
    return browser.driver.execute_script(script)


def dialog_open(browser: Browser, name: str) -> bool:
    return bool(js(browser, f"return document.getElementById('{name}-dialog').open"))


def open_game(browser: Browser) -> None:
    browser.open("/tycoon/play/")
    browser.wait(lambda: dialog_open(browser, "intro"), "the welcome dialog did not open")


def strategy(browser: Browser) -> str:
    return str(js(browser, "return window.tycoonGame.game.factories[0].strategy"))


def hour(browser: Browser) -> int:
    return int(js(browser, "return window.tycoonGame.game.hour"))


def press(browser: Browser, *keys: str) -> None:
    """Keys as a user types them: to whatever has the focus."""
    ActionChains(browser.driver).send_keys(*keys).perform()


def test_the_keyboard_plays_pauses_sets_the_speed_and_closes_dialogs(browser: Browser, pack):
    open_game(browser)
    press(browser, Keys.ESCAPE)  # closes the welcome without starting
    browser.wait(lambda: not dialog_open(browser, "intro"), "Esc did not close the dialog")
    assert browser.find("#play").get_attribute("aria-pressed") == "false"
    assert hour(browser) == 0

    press(browser, "8")
    assert Select(browser.find("#speed")).first_selected_option.text.startswith("8: 500 hours")
    press(browser, Keys.SPACE)
    browser.wait(lambda: hour(browser) > 50, "Space did not start the game")
    assert browser.find("#play").get_attribute("aria-pressed") == "true"
    # Play on until the first unlock: its dialog holds the game.
    browser.wait(lambda: dialog_open(browser, "unlock"), "no unlock dialog")
    paused_at = hour(browser)
    wait_ms(browser, 300)
    assert hour(browser) == paused_at
    press(browser, Keys.ESCAPE)  # Esc is "not now": the strategy stays, the game goes on
    browser.wait(lambda: not dialog_open(browser, "unlock"), "Esc did not close the unlock")
    assert js(browser, "return window.tycoonGame.game.factories[0].strategy") == "corrective"
    browser.wait(lambda: hour(browser) > paused_at, "the game did not go on")
    press(browser, Keys.SPACE)  # pause
    browser.wait(lambda: browser.find("#play").get_attribute("aria-pressed") == "false")
    stopped = hour(browser)
    wait_ms(browser, 300)
    assert hour(browser) == stopped
    press(browser, "1")
    assert Select(browser.find("#speed")).first_selected_option.text.startswith("1: 1 hour")


def money(value: float) -> str:
    """Dollars as the pages write them (a minus sign, not a hyphen)."""
    return ("−$" if value < 0 else "$") + f"{abs(value):,.0f}"


def wait_ms(browser: Browser, ms: int) -> None:
    browser.driver.execute_script(f"return new Promise(done => setTimeout(done, {ms}))")


def test_a_whole_race_at_top_speed_ends_in_the_standings_and_matches_the_analyst(
    browser: Browser, pack: PredictionPack
):
    open_game(browser)
    browser.find("#intro-dialog button").click()  # "Start playing"
    # Rivals on the federation's model and on the oracle: they face the same engines.
    js(browser, "window.tycoonGame.setPlaying(false)")
    browser.find("#setup summary").click()
    Select(browser.find("#id_rival_1")).select_by_visible_text("Federated predictive")
    Select(browser.find("#id_rival_2")).select_by_visible_text("Centralised (oracle)")
    browser.click_button("New game with these settings")
    browser.wait(
        lambda: js(browser, "return window.tycoonGame.game.factories[1].strategy") == "federated",
        "the new game did not start with the chosen rivals",
    )
    Select(browser.find("#speed")).select_by_index(7)
    js(browser, "window.tycoonGame.recording = window.tycoonGame.game.recordEpisodes = true")
    browser.click_button("Play")

    # The first unlock: its dialog, its advice, and the player's choice.
    browser.wait(lambda: dialog_open(browser, "unlock"), "no unlock dialog after 4 failures")
    assert browser.text("#unlock-title") == "Preventive maintenance unlocked"
    assert "maintained after 193 hours" in browser.text("#unlock-body")
    assert js(browser, "return window.tycoonGame.game.factories[0].failures") >= 4
    browser.screenshots("tycoon-game-unlock")
    browser.find("#unlock-auto").click()
    browser.find("#unlock-switch").click()
    browser.wait(  # a dialog's close event comes in a task of its own
        lambda: strategy(browser) == "preventive", "the player did not switch to preventive"
    )

    WebDriverWait(browser.driver, GAME_SECONDS, poll_frequency=0.2).until(
        lambda _: dialog_open(browser, "end"), "the race did not end"
    )
    game = js(
        browser,
        """var g = window.tycoonGame.game;
        return {hour: g.hour, finished: g.finished, unlocked: g.unlocked,
          profits: g.factories.map(function (f) { return f.profit[g.hour]; }),
          strategies: g.factories.map(function (f) { return f.strategy; }),
          episodes: g.episodes, target: g.settings.target};""",
    )
    frames = js(browser, "return window.tycoonGame.frameTimes")
    hours = js(browser, "return window.tycoonGame.frameHours")
    browser.screenshots("tycoon-game-end")

    # The end: a winner at the target, the standings with each main strategy and share.
    assert max(game["profits"]) >= game["target"]
    assert game["finished"]["hour"] == game["hour"]
    assert set(game["unlocked"]) == {"corrective", "preventive", "local", "federated"}
    assert game["strategies"][0] == "federated"  # upgraded automatically
    rows = browser.find_all("#end-standings tbody tr")
    assert len(rows) == 4
    first = rows[0].find_elements(By.TAG_NAME, "td")
    assert first[0].text == "1" and first[1].text.startswith("$")
    assert "%" in first[2].text
    winner = int(game["finished"]["winner"])
    assert rows[0].get_attribute("data-factory") == str(winner)

    # Every engine a rival ran, it ran as its own model's rule says: federated and the
    # oracle differ exactly where their predictions lead to different outcomes.
    runs = {}
    for name, rival, key in (("federated", 1, "federated"), ("oracle", 2, "centralised")):
        run, maintained = outcomes(LIVES, predictive_triggers(pack.holdout.predicted[key], 10))
        played = {}
        for _slot, _row, engine, _start, length, kept in game["episodes"][rival]:
            assert (length, bool(kept)) == (run[engine], maintained[engine]), (name, engine)
            played[engine] = length
        runs[name] = played
    differ = {e for e in runs["federated"] if runs["federated"][e] != runs["oracle"].get(e)}
    assert differ == {3, 4}

    # A rival's money at the end is the analyst replay's over the same hours, to the dollar.
    economics = Economics(horizon=game["hour"], seed=0)
    rules = {
        "federated": predictive_triggers(pack.holdout.predicted["federated"], 10),
        "centralised": predictive_triggers(pack.holdout.predicted["centralised"], 10),
        "local": predictive_triggers(pack.holdout.predicted["local:site-1"], 10),
    }
    replay = simulate(LIVES, rules, economics, curve_points=2)
    assert game["profits"][1] == replay.strategies["federated"].profit
    assert game["profits"][2] == replay.strategies["centralised"].profit
    assert game["profits"][3] == replay.strategies["local"].profit

    # Frame times at top speed, 4 factories x 4 turbofans with every sparkline drawn.
    busy = [t for t, h in zip(frames, hours, strict=True) if h > 0]
    report = {
        "frames": len(busy),
        "median_ms": round(float(np.median(busy)), 2),
        "p95_ms": round(float(np.percentile(busy, 95)), 2),
        "max_ms": round(float(np.max(busy)), 2),
        "hours_per_frame": round(float(np.mean([h for h in hours if h > 0])), 1),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "tycoon-game-frames.json").write_text(json.dumps(report, indent=2))
    print("Tycoon game frame times:", report)
    assert len(busy) > 30
    # The goal (under 16 ms) is checked by benchmarks/tycoon_game.py; here, only that a
    # frame's work stays well within what a browser can show on a loaded test machine.
    assert report["median_ms"] < 16, report

    # After the game, the same run in the analyst view: the rivals' strategies there
    # earn what they earned here.
    link = browser.find("#end-analyst").get_attribute("href") or ""
    assert f"horizon={game['hour']}" in link
    browser.driver.get(link)
    browser.wait(lambda: browser.find_all("#profit-table .profit"), "no analyst table")
    shown = {
        row.get_attribute("data-strategy"): row.find_element(By.CSS_SELECTOR, ".profit").text
        for row in browser.find_all("#profit-table tbody tr")
    }
    assert shown["federated"] == money(game["profits"][1])
    assert shown["centralised"] == money(game["profits"][2])
    assert shown["local"] == money(game["profits"][3])


def test_the_game_fits_a_phone_and_the_solo_view_shows_only_your_factory(browser: Browser, pack):
    browser.driver.set_window_size(*PHONE)
    open_game(browser)
    browser.find("#intro-dialog button").click()
    browser.wait(lambda: hour(browser) > 20, "the game did not start")
    overflow = js(browser, "return document.documentElement.scrollWidth")
    assert overflow <= PHONE[0], f"the page is {overflow} px wide at {PHONE[0]} px"
    browser.find("#solo").click()
    visible = [r for r in browser.find_all("#standings tbody tr") if r.is_displayed()]
    assert [r.get_attribute("data-factory") for r in visible] == ["0"]
    browser.driver.set_window_size(*PHONE)
    browser.screenshots("tycoon-game")


def test_unlocks_with_no_wait_come_at_hour_0_and_esc_never_repeats_an_earlier_click(
    browser: Browser, pack
):
    open_game(browser)
    press(browser, Keys.ESCAPE)
    browser.find("#setup summary").click()
    browser.fill(
        {
            "Failures before preventive maintenance unlocks": "0",
            "Hours from preventive to the data scientist (local predictive)": "0",
            "Hours from the data scientist to the federation's offer (federated predictive)": "0",
            "Profit that wins the race ($)": "10000",
        }
    )
    browser.click_button("New game with these settings")

    # Every unlock is due at hour 0: one dialog each, before the first hour.
    browser.wait(lambda: dialog_open(browser, "unlock"), "no unlock at hour 0")
    assert browser.text("#unlock-title") == "Preventive maintenance unlocked"
    browser.find("#unlock-switch").click()
    browser.wait(lambda: strategy(browser) == "preventive", "the switch did not happen")
    browser.wait(lambda: "data scientist" in browser.text("#unlock-title"), "no second unlock")
    press(browser, Keys.ESCAPE)  # "not now", although the last click here was "switch"
    browser.wait(lambda: "federation" in browser.text("#unlock-title"), "no third unlock")
    assert strategy(browser) == "preventive"
    browser.find("#unlock-keep").click()
    browser.wait(lambda: not dialog_open(browser, "unlock"))
    assert strategy(browser) == "preventive" and hour(browser) == 0

    # A race to $10,000: it ends on the hour the target is reached, not an hour later.
    browser.find("#play").click()
    browser.wait(lambda: dialog_open(browser, "end"), "the race did not end")
    finished = js(browser, "return window.tycoonGame.game.finished.hour")
    assert finished == hour(browser)

    # "New game" from the end: a fresh game, and the old one's end does not come back.
    js(browser, "window.tycoonGame.game.marked = true")
    browser.find("#end-dialog button[value=new]").click()
    browser.wait(lambda: not js(browser, "return window.tycoonGame.game.marked"), "no new game")
    browser.wait(lambda: dialog_open(browser, "unlock"), "the new game's unlocks are not offered")
    assert not dialog_open(browser, "end")
    assert hour(browser) == 0
