"""The page in a real browser (Debian's headless chromium, driven by
Selenium through Debian's chromedriver): sign in at the dev provider as a
persona, sign, see "signed", see the counter move without reloading, sign
again and see "already signed". Screenshots go to test-artifacts/."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def _sign_in(driver: WebDriver, persona: str, territory_code: str) -> None:
    """From a petition's page, through the dev provider's form, back to the
    page signed in."""
    driver.find_element(By.ID, "sign-in-oidc").click()
    _until(driver, "no dev provider form", lambda d: d.find_elements(By.ID, "persona"))
    driver.find_element(By.ID, "persona").send_keys(persona)
    territory = driver.find_element(By.ID, "territory")
    territory.clear()
    territory.send_keys(territory_code)
    driver.find_element(By.ID, "sign-in").click()
    _page_ready(driver)
    _until(driver, "not signed in", lambda d: d.find_element(By.ID, "sign-button").is_displayed())


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

    _sign_in(driver, persona, "13")
    assert driver.current_url == f"{system.namespace.gateway_url}/petitions/{petition.id}"
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


class ForeignSite:
    """A page on another origin of the same site (127.0.0.1, another port),
    as an attacker's page on a sibling subdomain would be in production."""

    def __init__(self) -> None:
        self.page = ""
        site = self

        class Serve(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = site.page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="foreign-site", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def foreign_site() -> Iterator[ForeignSite]:
    site = ForeignSite()
    try:
        yield site
    finally:
        site.close()


# Both ways a page can POST without a CORS preflight, each with an empty
# body: a fetch in no-cors mode (its answer unreadable, its effect not), then
# a form, whose answer the browser shows.
FORGERY = """<!doctype html>
<html><body>
<form id="forge" method="POST" action="{action}" enctype="application/x-www-form-urlencoded"></form>
<script>
  fetch("{action}", {{ method: "POST", mode: "no-cors", credentials: "include" }})
    .catch(() => null)
    .then(() => document.getElementById("forge").submit());
</script>
</body></html>
"""


def test_a_page_of_another_origin_cannot_sign_with_the_visitors_cookie(
    system: SystemClient, chromium: WebDriver, foreign_site: ForeignSite
) -> None:
    petition = system.create_petition("Keep the library open in the evening")
    persona = f"browser-{uuid.uuid4().hex[:8]}"
    system.raw_identities.update({persona, f"dev-persona:{persona}"})
    page = f"{system.namespace.gateway_url}/petitions/{petition.id}"
    driver = chromium
    driver.get(page)
    _page_ready(driver)
    _sign_in(driver, persona, "75")

    # The visitor, signed in, opens the other page: its fetch and its form
    # carry the cookie (same site) and are refused (not the same origin).
    action = f"{system.namespace.gateway_url}/api/v1/petitions/{petition.id}/signatures"
    foreign_site.page = FORGERY.format(action=action)
    driver.get(foreign_site.url)
    _until(driver, "the forged form was not sent", lambda d: d.current_url == action)
    answer = str(driver.find_element(By.TAG_NAME, "body").text)
    assert "CROSS_ORIGIN_REQUEST" in answer, answer
    driver.save_screenshot(str(ARTIFACTS / "gateway-browser-forgery-refused.png"))

    # The real page still signs, and it is the first signature: neither the
    # fetch nor the form signed anything.
    driver.get(page)
    _page_ready(driver)
    _until(driver, "not signed in", lambda d: d.find_element(By.ID, "sign-button").is_displayed())
    driver.find_element(By.ID, "sign-button").click()
    _until(driver, "no signed result", lambda d: _attribute(d, "sign-result", "data-outcome") == "accepted")
