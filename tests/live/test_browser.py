"""The pages in a real browser: headless Chromium (Debian's) driven by Selenium.

The web client at ``/`` hears a committed WAV through Chromium's fake microphone and must show
the transcript and the task; the operators' page closes that session and the client must say
so. Screenshots are kept under ``artifacts/screenshots/`` (CI keeps them as artifacts).
Without Chromium these tests skip, unless ``CI`` or ``REQUIRE_BROWSER`` is set.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.live.servers import ROOT, base_env, uvicorn

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
WAV = ROOT / "tests" / "fixtures" / "audio" / "remind_buy_milk_tomorrow.wav"
STAFF = ("operator", "operator-password-1")


def _require_browser() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    reason = (
        "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    )
    if os.environ.get("CI") or os.environ.get("REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_browser()
    tmp = tmp_path_factory.mktemp("browser")
    # The operator logs in over plain http://127.0.0.1: cookies without Secure, as with DEBUG.
    env = {"SQLITE_PATH": str(tmp / "auth.sqlite3"), "SECURE_COOKIES": "0"}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=base_env(**env), check=True,
                   capture_output=True)  # fmt: skip
    create = (
        "from django.contrib.auth.models import User; "
        f"User.objects.create_superuser({STAFF[0]!r}, 'ops@example.com', {STAFF[1]!r})"
    )
    subprocess.run([*manage, "shell", "-c", create], cwd=ROOT, env=base_env(**env), check=True,
                   capture_output=True)  # fmt: skip
    with uvicorn(tmp, "web", **env) as srv:  # what `make serve` runs
        yield srv


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={WAV}", "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,900",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, predicate, timeout: float = 30, what: str = "condition"):
    """``predicate(driver)`` once it is true. An element the page re-rendered meanwhile (the
    task list does at every task event) counts as not yet."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = predicate(driver)
        except StaleElementReferenceException:
            result = None
        if result:
            return result
        time.sleep(0.2)
    driver.save_screenshot(str(SCREENSHOTS / "failure.png"))
    raise AssertionError(f"timed out waiting for {what}")


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_web_client_hears_the_microphone_and_shows_transcript_and_task(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.http + "/")
    browser.find_element(By.ID, "new").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text == "connected", what="socket")
    browser.find_element(By.ID, "mic").click()
    _wait(
        browser,
        lambda d: "remind me to buy milk tomorrow" in d.find_element(By.ID, "transcripts").text,
        what="the transcript",
    )
    _wait(
        browser,
        lambda d: "reminder" in d.find_element(By.ID, "tasks").text,
        what="the reminder task",
    )
    assert "Say confirm" in browser.find_element(By.ID, "replies").text
    browser.save_screenshot(str(SCREENSHOTS / "client.png"))
    assert _console_errors(browser) == []


def test_an_operator_closes_the_session_and_the_client_says_it_closed(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.http + "/")
    browser.find_element(By.ID, "new").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text == "connected", what="socket")
    short_id = browser.find_element(By.ID, "session").text
    client_tab = browser.current_window_handle

    browser.switch_to.new_window("tab")
    browser.get(server.http + "/ops/")
    browser.find_element(By.ID, "id_username").send_keys(STAFF[0])
    browser.find_element(By.ID, "id_password").send_keys(STAFF[1])
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    _wait(browser, lambda d: short_id in d.page_source, what="the session on /ops/")
    browser.save_screenshot(str(SCREENSHOTS / "ops.png"))
    browser.find_element(By.NAME, f"close-{short_id}").click()
    _wait(browser, lambda d: f"Session {short_id} closed." in d.page_source, what="ops message")
    browser.close()

    browser.switch_to.window(client_tab)
    _wait(
        browser,
        lambda d: d.find_element(By.ID, "status").text.startswith("closed"),
        what="the client to report the close",
    )
    assert "deleted" in browser.find_element(By.ID, "status").text
    browser.save_screenshot(str(SCREENSHOTS / "client-closed.png"))
    assert _console_errors(browser) == []
