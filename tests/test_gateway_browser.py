"""The page in a real browser (Debian's headless chromium, driven by
Selenium through Debian's chromedriver): sign in at the dev provider as a
persona, sign, see "signed", see the counter move without reloading, sign
again and see "already signed". Screenshots go to test-artifacts/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from petitions.v1 import petition_pb2
from tests.harness import REPO
from tests.system import SystemClient

pytestmark = pytest.mark.stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"
# The network is closed: without these, chromium waits on connections to
# Google's services (sync, updates, QUIC probes) and can hang.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,1600",
)
WAIT_SECONDS = 20


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `python -m deploy.local.browser` as root (make test does)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    ARTIFACTS.mkdir(exist_ok=True)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def _attribute(driver: WebDriver, element_id: str, name: str) -> str:
    return str(driver.find_element(By.ID, element_id).get_attribute(name) or "")


def _until(driver: WebDriver, condition: str, check: object) -> None:
    # An element read while the browser moves to the next page goes stale:
    # look again on the next poll.
    WebDriverWait(
        driver, WAIT_SECONDS, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    ).until(
        check,  # type: ignore[arg-type]
        message=condition,
    )


def _page_ready(driver: WebDriver) -> None:
    """The page's script has loaded the petition and the session."""
    _until(
        driver,
        "the page did not finish loading",
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
    )


def test_a_person_signs_in_signs_and_watches_the_counter_move(system: SystemClient, chromium: WebDriver) -> None:
    petition = system.create_petition(
        "Plant trees along every school street",
        text="Shade for pupils.\n\nCleaner air for everyone.",
        thresholds=[petition_pb2.Threshold(id="response", label="Government response", signatures=10)],
    )
    persona = f"browser-{uuid.uuid4().hex[:8]}"
    system.raw_identities.update({persona, f"dev-persona:{persona}"})
    driver = chromium

    driver.get(f"{system.namespace.gateway_url}/petitions/{petition.id}")
    _page_ready(driver)
    driver.find_element(By.ID, "lang-en").click()
    _until(driver, "no English", lambda d: _text(d, "sign-heading") == "Sign this petition")
    assert _text(driver, "petition-title") == "Plant trees along every school street"
    _until(driver, "the live counter did not start", lambda d: _attribute(d, "count", "data-total") == "0")

    driver.find_element(By.ID, "sign-in-oidc").click()
    _until(driver, "no dev provider form", lambda d: d.find_elements(By.ID, "persona"))
    driver.find_element(By.ID, "persona").send_keys(persona)
    territory = driver.find_element(By.ID, "territory")
    territory.clear()
    territory.send_keys("13")
    driver.find_element(By.ID, "sign-in").click()

    _page_ready(driver)
    assert driver.current_url == f"{system.namespace.gateway_url}/petitions/{petition.id}"
    _until(driver, "not signed in", lambda d: d.find_element(By.ID, "sign-button").is_displayed())
    assert "FR 13" in _text(driver, "session-status")
    # Marks this document: a reload would lose the mark.
    driver.execute_script("window.sameDocument = true;")

    driver.find_element(By.ID, "sign-button").click()
    _until(driver, "no signed result", lambda d: _attribute(d, "sign-result", "data-outcome") == "accepted")
    assert _text(driver, "sign-result") == "Signed. Thank you!"
    _until(driver, "the counter did not move", lambda d: _attribute(d, "count", "data-total") == "1")
    assert _text(driver, "count-word") == "signature"
    assert driver.execute_script("return window.sameDocument === true;"), "the page was reloaded"
    _until(driver, "no territory row", lambda d: "13" in _text(d, "territory-table"))
    driver.save_screenshot(str(ARTIFACTS / "gateway-browser-signed.png"))

    driver.find_element(By.ID, "sign-button").click()
    _until(
        driver, "no already-signed result", lambda d: _attribute(d, "sign-result", "data-outcome") == "already_signed"
    )
    assert _text(driver, "sign-result") == "You had already signed this petition: your signature counts once."
    assert _attribute(driver, "count", "data-total") == "1"

    driver.find_element(By.ID, "lang-fr").click()
    _until(driver, "no French", lambda d: _text(d, "sign-heading") == "Signer cette pétition")
    # What was already said is said again in French.
    assert _text(driver, "sign-result") == "Vous aviez déjà signé cette pétition : votre signature compte une fois."
    assert _text(driver, "live-state") == "Compteur en direct."
    assert _text(driver, "count-word") == "signature"
    driver.save_screenshot(str(ARTIFACTS / "gateway-browser-french.png"))
