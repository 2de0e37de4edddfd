"""Spoken replies in a real browser (CONTRACT 2b): headless Chromium plays a reply through the
page's AudioWorklet, and the user talking over it (Chromium's fake microphone) stops it.

Uses the server and browser of ``test_browser.py`` (the fake microphone says "remind me to buy
milk tomorrow"). The worklet posts how many samples it played and how many it holds, so the
test sees that audio really went through it, and that an interruption emptied it.
"""

import time

import pytest

from tests.live.test_browser import SCREENSHOTS, _console_errors, _wait, browser, server

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]
pytest.importorskip("piper", reason="spoken replies need requirements-voice.txt")
__all__ = ["browser", "server"]  # the fixtures


def _voice(driver) -> dict:
    return driver.execute_script(
        "const v = window.voicePlayback; return {played: v.played, queued: v.queued,"
        " flushed: v.flushed, chunks: v.chunks, stray: v.stray, started: v.started,"
        " interrupted: v.interrupted, done: v.done, player: !!v.player};"
    )


def test_the_page_speaks_a_reply_and_stops_when_the_user_talks_over_it(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.http + "/")
    browser.execute_script("localStorage.removeItem('voice.on')")  # voice is on by default
    browser.get(server.http + "/")
    browser.find_element(By.ID, "new").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text == "connected", what="socket")
    _wait(browser, lambda d: d.find_element(By.ID, "voice").text == "Voice on", what="voice")
    _wait(browser, lambda d: _voice(d)["player"], what="the worklet")

    browser.find_element(By.ID, "text").send_keys("remind me to buy milk tomorrow")
    browser.find_element(By.ID, "send").click()
    # The worklet plays: more than 0.5 s of the reply's samples went through it.
    _wait(browser, lambda d: _voice(d)["played"] > 12000, what="the worklet to play the reply")
    tasks = browser.find_element(By.ID, "tasks").text
    assert "buy milk" in tasks and "draft" in tasks, tasks
    assert browser.find_elements(By.CSS_SELECTOR, "#tasks button[name^=confirm-]")
    before = _voice(browser)
    assert before["interrupted"] == 0 and before["done"] == 0, "still speaking"

    browser.find_element(By.ID, "mic").click()  # the user talks over the reply
    _wait(browser, lambda d: _voice(d)["interrupted"] >= 1, what="the barge-in")
    _wait(browser, lambda d: _voice(d)["flushed"] >= 1, what="the worklet to drop its audio")
    stopped = _voice(browser)
    assert stopped["queued"] == 0, "nothing left to play after the interruption"
    assert stopped["done"] == 0, "the interrupted reply never finished"
    time.sleep(0.5)
    assert _voice(browser)["stray"] == 0, "no reply audio outside a reply's started..done"
    assert "interrupted after" in browser.find_element(By.ID, "speaking").text
    browser.find_element(By.ID, "mic").click()  # microphone off

    def confirm(driver) -> bool:
        # The microphone's own "remind me to buy milk tomorrow" re-renders the task list, and
        # a button found before that is gone (stale): find it again.
        driver.find_element(By.CSS_SELECTOR, "#tasks button[name^=confirm-]").click()
        return True

    _wait(browser, confirm, what="a confirm button to click")
    _wait(browser, lambda d: "queued" in d.find_element(By.ID, "tasks").text, what="confirm")
    browser.save_screenshot(str(SCREENSHOTS / "client-voice.png"))
    assert _console_errors(browser) == []
