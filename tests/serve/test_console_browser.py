"""The web console in a real headless Chromium (Debian's ``chromium`` driven by Selenium
through ``/usr/bin/chromedriver``), against a real Service with tokens and two looping
cameras whose defect opens one event per loop.

What a person at the page would see is checked: no console errors, live frames that
change, a new event arriving in the list with its snapshot, a false-positive label stored,
a threshold change that stops the events (seen in ``/api/stats`` and in the events), a
viewer who can change nothing, and a phone-sized screen with no sideways scrolling.
Screenshots go to ``$ADEDGE_SCREENSHOTS`` (default: a tmp folder); one set is kept in
``docs/console/``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_scenes import camera, running_service, service_config, write_scene

pytestmark = [pytest.mark.runtime]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_ABSENT = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
if _ABSENT:
    pytest.skip(
        f"{' and '.join(_ABSENT)} missing: apt-get install chromium chromium-driver",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402 - only once the browser is known to be there
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service as DriverService  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ADMIN = "Zm9v+YmFy/console-admin=="  # base64 characters: sent as they are in the cookie
VIEWER = "dmlld2Vy+wall/screen-token="
WAIT_S = 20.0
LOOP_FRAMES = 100  # 4 s at 25 fps
DEFECT = range(50, 62)  # one event per loop
SIDE = 192
DESKTOP = (1280, 900)
CARD_THRESHOLD = 0.5  # the bundle's (score = the brightest pixel)
PHONE = (390, 844)


@dataclass
class Console:
    service: Any
    url: str
    http: httpx.Client  # as the admin
    shots: Path

    def stats_camera(self, name: str) -> dict[str, Any]:
        cameras = self.http.get("/api/stats").raise_for_status().json()["cameras"]
        return next(c for c in cameras if c["name"] == name)

    def events(self, **filters: Any) -> list[dict[str, Any]]:
        answer = self.http.get("/api/events", params={"limit": 100, **filters})
        return answer.raise_for_status().json()["events"]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    (tmp / "admin.token").write_text(ADMIN + "\n")
    (tmp / "viewer.token").write_text(VIEWER + "\n")
    cameras = {
        name: camera(write_scene(tmp / f"{name}.avi", LOOP_FRAMES, DEFECT, SIDE), loop=True)
        for name in ("line1", "line2")
    }
    api = {
        "enabled": True,
        "port": 0,
        "tokens": [
            {"name": "ops", "scope": "admin", "file": str(tmp / "admin.token")},
            {"name": "wall-screen", "scope": "viewer", "file": str(tmp / "viewer.token")},
        ],
    }
    shots = Path(os.environ.get("ADEDGE_SCREENSHOTS") or tmp / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with running_service(service_config(tmp, cameras, bundle, api=api)) as service:
        url = f"http://127.0.0.1:{service.api.port}"
        headers = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=WAIT_S) as http:
            yield Console(service, url, http, shots)


@pytest.fixture
def browser(tmp_path_factory) -> Iterator[Callable[..., WebDriver]]:
    """``open(size=DESKTOP)``: a fresh headless Chromium (its own profile), quit at the end.
    Selenium Manager is kept offline: the driver and the browser are Debian's. Chromium's
    temporary folders go under pytest's (left in /tmp they piled up, one per browser)."""
    drivers: list[WebDriver] = []
    os.environ["SE_OFFLINE"] = "true"
    scratch = tmp_path_factory.mktemp("chromium")
    environment = {**os.environ, "TMPDIR": str(scratch)}

    def open_browser(size: tuple[int, int] = DESKTOP) -> WebDriver:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(argument)
        options.add_argument(f"--window-size={size[0]},{size[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = DriverService(str(CHROMEDRIVER), env=environment)
        driver = webdriver.Chrome(service=service, options=options)
        drivers.append(driver)
        return driver

    yield open_browser
    for driver in drivers:
        driver.quit()


# --- helpers -----------------------------------------------------------------------------


def until(driver: WebDriver, check: Callable[[WebDriver], Any], what: str) -> Any:
    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(check)
    except TimeoutException:
        raise AssertionError(f"timed out after {WAIT_S:g} s waiting for {what}") from None


def js_until(driver: WebDriver, script: str, what: str) -> Any:
    """``script``'s (a JS expression) first truthy value."""
    return until(driver, lambda d: d.execute_script(f"return {script}"), what)


def signed_in(driver: WebDriver, console: Console, token: str, route: str = "#/") -> None:
    """The page opened at ``route`` with ``token`` already stored, as after a sign-in (put
    in place before the page's scripts run, so no request goes out without it)."""
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": f"localStorage.setItem('adedge_token', {token!r});"
            f"document.cookie = 'adedge_token={token}; path=/; SameSite=Strict';"
        },
    )
    driver.get(f"{console.url}/{route}")


def threshold_shows(value: str) -> Callable[[WebDriver], bool]:
    """The camera page's threshold field exists and shows ``value`` (looked up at every
    poll: the page renders after its first fetch)."""

    def check(driver: WebDriver) -> bool:
        return driver.find_element(By.ID, "threshold-input").get_attribute("value") == value

    return check


def go(driver: WebDriver, route: str) -> None:
    driver.execute_script("location.hash = arguments[0]", route)


def severe(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def image_loaded(selector: str) -> str:
    return (
        f"[...document.querySelectorAll({selector!r})].some(i => i.complete && i.naturalWidth > 0)"
    )


def screenshot(driver: WebDriver, console: Console, name: str) -> Path:
    path = console.shots / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    return path


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def new_event(console: Console, camera_name: str, after: float, ended: bool = False) -> Any:
    """The newest event of ``camera_name`` that started after ``after`` (ended, if asked)."""
    for event in console.events(camera=camera_name):
        if unix(event["start"]) > after and (event["end"] is not None or not ended):
            return event
    return None


def wait(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S:g} s waiting for {what}")
        time.sleep(0.1)
    return value


# --- tests -------------------------------------------------------------------------------


def test_cameras_page_loads_clean_with_live_frames_that_change(console: Console, browser) -> None:
    driver = browser()
    signed_in(driver, console, ADMIN)
    js_until(driver, "document.querySelectorAll('.camera-card').length === 2", "two camera cards")
    js_until(driver, image_loaded("img.live"), "a live frame")
    js_until(
        driver,
        "[...document.querySelectorAll('.camera-card')].every(c => "
        "c.querySelector('[data-state=online]') && c.querySelector('svg.spark path.score'))",
        "both cameras online with a sparkline",
    )
    assert driver.find_element(By.ID, "who").text == "admin · ops"
    live = driver.find_element(By.CSS_SELECTOR, ".camera-card[data-camera=line1] img.live")
    first = live.screenshot_as_png
    until(driver, lambda d: live.screenshot_as_png != first, "the live view to show a new frame")
    js_until(
        driver,
        "document.querySelector('.camera-card[data-camera=line1] svg.spark path.alarm')",
        "the sparkline to mark an event's stretch",
    )
    screenshot(driver, console, "main")
    assert severe(driver) == []


def test_new_event_arrives_with_snapshot_and_is_labelled_false_positive(
    console: Console, browser
) -> None:
    driver = browser()
    signed_in(driver, console, ADMIN, "#/events?camera=line1")
    js_until(driver, "document.getElementById('event-list') !== null", "the events list")
    opened = time.time()
    event = wait(lambda: new_event(console, "line1", opened), "a new event of line1")
    row = f".event-row[data-event='{event['id']}']"
    js_until(driver, image_loaded(f"{row} img.thumb"), "the new event's row with its snapshot")
    assert driver.find_element(By.CSS_SELECTOR, f"{row} .badge").text == "unlabelled"
    listed = "return [...document.querySelectorAll('.event-row')].map(r => r.dataset.event)"
    until(
        driver,
        lambda d: d.execute_script(listed) == [e["id"] for e in console.events(camera="line1")],
        "the list in the API's order, newest first",
    )

    wait(lambda: new_event(console, "line1", opened, ended=True), "the event to end")
    driver.find_element(By.CSS_SELECTOR, f"{row} a.event-link").click()
    js_until(driver, image_loaded("#event-snapshot"), "the event's snapshot")
    js_until(driver, image_loaded("#event-heatmap"), "the event's heatmap")
    js_until(driver, "document.querySelector('#event-chart path.score')", "the score chart")
    driver.set_window_size(DESKTOP[0], 1400)
    screenshot(driver, console, "event")
    assert severe(driver) == []

    driver.find_element(By.CSS_SELECTOR, "button[data-label=false_positive]").click()
    js_until(
        driver,
        "document.querySelector('button[data-label=false_positive]')"
        ".getAttribute('aria-pressed') === 'true'",
        "the false-positive button pressed",
    )
    stored = console.http.get(f"/api/events/{event['id']}").raise_for_status().json()
    assert stored["label"] == "false_positive"

    driver.find_element(By.LINK_TEXT, "← Events").click()
    js_until(
        driver,
        f'document.querySelector("{row} .badge[data-label=false_positive]")',
        "the list's badge to say false positive",
    )
    go(driver, "#/events?label=none&camera=line1")
    js_until(driver, "document.querySelectorAll('.event-row').length > 0", "unlabelled events")
    assert not driver.find_elements(By.CSS_SELECTOR, row), "a labelled event listed as unlabelled"

    go(driver, "#/events?label=false_positive&camera=line1")
    js_until(driver, f'document.querySelector("{row}")', "the event under its label's filter")
    csv = console.http.get(driver.find_element(By.ID, "export-csv").get_attribute("href"))
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert event["id"] in csv.text and "false_positive" in csv.text


def test_admin_deletes_an_event_from_its_page_after_confirming(console: Console, browser) -> None:
    event = wait(lambda: new_event(console, "line2", 0, ended=True), "an ended event of line2")
    driver = browser()
    signed_in(driver, console, ADMIN, f"#/event/{event['id']}")
    js_until(driver, image_loaded("#event-snapshot"), "the event page")
    driver.find_element(By.ID, "delete-event").click()
    driver.switch_to.alert.dismiss()  # changed their mind: nothing happens
    assert console.http.get(f"/api/events/{event['id']}").status_code == 200
    driver.find_element(By.ID, "delete-event").click()
    driver.switch_to.alert.accept()
    until(driver, lambda d: d.execute_script("return location.hash") == "#/events", "the list")
    assert console.http.get(f"/api/events/{event['id']}").status_code == 404
    js_until(driver, "document.querySelector('.event-row')", "the remaining events")
    assert not driver.find_elements(By.CSS_SELECTOR, f".event-row[data-event='{event['id']}']")
    assert severe(driver) == []


def test_threshold_set_on_the_camera_page_changes_the_decisions(console: Console, browser) -> None:
    driver = browser((DESKTOP[0], 1500))
    signed_in(driver, console, ADMIN, "#/camera/line2")
    until(driver, threshold_shows("0.5"), "the card's threshold")  # the page has rendered
    field = driver.find_element(By.ID, "threshold-input")
    js_until(driver, "document.querySelector('#histogram rect.bar')", "the histogram")
    js_until(driver, image_loaded("img.live"), "the live view")
    js_until(driver, "document.getElementById('threshold-share').textContent", "the share above")
    screenshot(driver, console, "camera")
    assert severe(driver) == []

    field.clear()
    field.send_keys("1.5")  # above every score: the defect no longer raises an event
    js_until(driver, "document.querySelector('#histogram line.proposed')", "the proposed line")
    driver.find_element(By.ID, "threshold-apply").click()
    wait(lambda: console.stats_camera("line2")["threshold"] == 1.5, "threshold 1.5 in /api/stats")
    changed = time.time()
    info = console.http.get("/api/cameras/line2").json()
    assert info["threshold_source"] == "runtime"
    until(
        driver,
        lambda d: "from the runtime" in d.find_element(By.ID, "threshold-note").text,
        "the page to show the runtime threshold",
    )

    def scores_since(since: float) -> list[dict[str, Any]]:
        answer = console.http.get("/api/cameras/line2/scores", params={"seconds": 60})
        return [p for p in answer.raise_for_status().json()["points"] if p["t"] > since]

    start = changed + 0.5  # an event open at the change may take its cooldown to end
    normal = wait(
        lambda: [p for p in scores_since(start) if p["score"] < CARD_THRESHOLD],
        "a normal frame after the change",
    )
    calm = normal[0]["t"]  # the next defect is a whole one, from its first frame
    defects = wait(
        lambda: [p for p in scores_since(calm) if p["score"] > CARD_THRESHOLD],
        "a defect frame scored",
    )
    settled = max(p["t"] for p in defects) + 1.0  # past its last frame, k of n and the cooldown
    wait(lambda: scores_since(settled), "frames scored after the defect")
    defects = [p for p in scores_since(calm) if p["score"] > CARD_THRESHOLD]
    # k of n (2 of 3) frames above 0.5 used to open an event; above 1.5 none does
    assert len(defects) >= 3 and not any(p["alarm"] for p in defects), defects
    assert new_event(console, "line2", start) is None, "an event opened above 1.5"

    driver.find_element(By.ID, "threshold-reset").click()
    wait(lambda: console.stats_camera("line2")["threshold"] == 0.5, "the card's threshold back")
    restored = time.time()
    wait(lambda: new_event(console, "line2", restored), "an event once the threshold is back")


def test_viewer_token_shows_no_edit_controls_and_cannot_patch(console: Console, browser) -> None:
    driver = browser()
    driver.get(f"{console.url}/#/camera/line1")
    dialog = driver.find_element(By.ID, "token-dialog")
    until(driver, lambda d: dialog.get_attribute("open") is not None, "the token prompt")
    driver.find_element(By.ID, "token-input").send_keys(VIEWER)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[value=save]").click()
    until(driver, lambda d: d.find_element(By.ID, "who").text == "viewer · wall-screen", "viewer")

    until(driver, threshold_shows("0.5"), "the camera's settings")
    field = driver.find_element(By.ID, "threshold-input")
    assert not field.is_enabled()
    assert not driver.find_element(By.ID, "detect-input").is_enabled()
    for button in ("threshold-apply", "threshold-reset", "alarm-apply"):
        element = driver.find_element(By.ID, button)
        assert not element.is_displayed() and not element.is_enabled(), button
    assert driver.find_element(By.CSS_SELECTOR, ".viewer-only").is_displayed()

    event = wait(lambda: new_event(console, "line1", 0, ended=True), "an ended event")
    go(driver, f"#/event/{event['id']}")
    js_until(driver, image_loaded("#event-snapshot"), "the event page")
    for label in ("true_anomaly", "false_positive", "unsure"):
        button = driver.find_element(By.CSS_SELECTOR, f"button[data-label={label}]")
        assert not button.is_displayed() and not button.is_enabled(), label
    assert not driver.find_element(By.ID, "delete-event").is_displayed()

    status = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.adedge.api.patch('/api/cameras/line1', {threshold: 0.9}, {quiet: true})"
        ".then(() => done(200), (error) => done(error.status));"
    )
    assert status == 403
    assert console.stats_camera("line1")["threshold"] == 0.5


def test_phone_screen_has_no_sideways_scrolling(console: Console, browser) -> None:
    driver = browser()
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True},
    )
    signed_in(driver, console, ADMIN)
    js_until(driver, image_loaded("img.live"), "a live frame")
    assert driver.execute_script("return innerWidth") == PHONE[0]
    screenshot(driver, console, "phone")
    event = wait(lambda: new_event(console, "line1", 0, ended=True), "an ended event")
    routes = {
        "#/": image_loaded("img.live"),
        "#/events": "document.querySelector('.event-row')",
        f"#/event/{event['id']}": image_loaded("#event-snapshot"),
        "#/camera/line1": "document.querySelector('#histogram svg')",
        "#/node": "document.querySelector('#models table')",
    }
    for route, ready in routes.items():
        go(driver, route)
        js_until(driver, ready, f"{route} on a phone")
        width = driver.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
        assert width[0] <= width[1], f"{route} scrolls sideways on a phone: {width}"
        nav = driver.find_element(By.CSS_SELECTOR, "nav a[data-nav=events]")
        assert nav.is_displayed() and nav.rect["x"] + nav.rect["width"] <= PHONE[0], route
