"""The playground page in a real headless browser (Debian's chromium, driven by selenium through
the system chromedriver) against a real server with the tiny Flux pipeline, steps paced to 50 ms:
load the page, generate, watch the progress bar move and the image appear, cancel a long job.
A screenshot of each run is kept as a test artifact (the test's tmp path)."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

from tests.support.jobs_client import KEYS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_until(predicate, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"never happened: {what}")


def open_page(browser, url: str):
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/ui")
    browser.find_element(By.ID, "key").send_keys(KEYS[0])
    browser.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")
    wait_until(lambda: browser.execute_script(
        "return [...document.querySelectorAll('#model option')].map(o => o.value).includes('tiny-flux')"),
        what="the model list")
    # The model's defaults fill the form.
    assert browser.find_element(By.ID, "width").get_attribute("value") == "64"


def set_field(browser, field: str, value) -> None:
    browser.execute_script(f"document.getElementById('{field}').value = arguments[0]", str(value))


def test_page_generates_with_live_progress_and_shows_the_image(jobs_live, browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = httpx.get(f"{jobs_live}/ui", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from elsewhere
    open_page(browser, jobs_live)
    set_field(browser, "steps", 30)
    set_field(browser, "seed", 1234)
    browser.find_element(By.ID, "generate").click()
    progress = lambda: int(browser.execute_script("return document.getElementById('progress').value"))  # noqa: E731
    seen = [wait_until(lambda: progress() > 0, what="the first progress step")]
    seen.append(wait_until(lambda: progress() > seen[0] and progress(), what="the bar moving"))
    image = wait_until(lambda: browser.execute_script(
        "const i = document.querySelector('#images img.result'); return i && i.complete && i.naturalWidth"),
        what="the image")
    assert image == 64 and seen[1] > seen[0] >= 1
    assert "seed 1234" in browser.find_element(By.ID, "images").text
    assert browser.find_element(By.ID, "state").get_attribute("data-status") == "succeeded"
    assert int(browser.execute_script("return document.getElementById('progress').value")) == 30
    browser.save_screenshot(str(tmp_path / "playground-succeeded.png"))
    assert (tmp_path / "playground-succeeded.png").stat().st_size > 1000


def test_page_cancels_a_long_job(jobs_live, browser, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, jobs_live)
    set_field(browser, "steps", 60)
    browser.find_element(By.ID, "generate").click()
    wait_until(lambda: int(browser.execute_script("return document.getElementById('progress').value")) > 0,
               what="progress")
    browser.find_element(By.ID, "cancel").click()
    wait_until(lambda: browser.find_element(By.ID, "state").get_attribute("data-status") == "cancelled",
               what="the cancelled state")
    assert browser.find_elements(By.CSS_SELECTOR, "#images img") == []
    assert int(browser.execute_script("return document.getElementById('progress').value")) < 60
    browser.save_screenshot(str(tmp_path / "playground-cancelled.png"))


def test_page_shows_live_previews_when_asked_then_the_image(jobs_live, browser, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, jobs_live)
    set_field(browser, "steps", 40)
    set_field(browser, "width", 128)
    browser.find_element(By.ID, "previews").click()
    browser.find_element(By.ID, "generate").click()
    # A preview is a decoded JPEG (the page's policy allows its data: URL), at the preview size.
    preview = wait_until(lambda: browser.execute_script(
        "const i = document.querySelector('#images img.preview');"
        "return i && i.complete && i.naturalWidth && [i.naturalWidth, i.naturalHeight, Number(i.dataset.step)]"),
        what="a preview")
    assert preview[:2] == [128, 64] and 1 <= preview[2] < 40
    browser.save_screenshot(str(tmp_path / "playground-preview.png"))
    # The latest preview replaces the one before.
    wait_until(lambda: browser.execute_script(
        "const i = document.querySelectorAll('#images img.preview');"
        "return i.length === 1 && Number(i[0].dataset.step) > arguments[0]", preview[2]), what="a later preview")
    wait_until(lambda: browser.execute_script(
        "const i = document.querySelector('#images img.result'); return i && i.complete && i.naturalWidth"),
        what="the image")
    assert browser.find_elements(By.CSS_SELECTOR, "#images img.preview") == []  # the image replaced them
    assert browser.find_element(By.ID, "state").get_attribute("data-status") == "succeeded"


def test_page_shows_stored_images_by_their_capability_url(tiny_model_dirs, tmp_path, browser):
    """With a result store the page puts the image's own URL in the <img> (no key, no fetch)."""
    from selenium.webdriver.common.by import By

    from tests.integration.server.conftest import wait_ready
    from tests.support.jobs_client import build_jobs_config
    from tinyimg.api.app import create_app
    from tinyimg.serve import BackgroundServer

    config = build_jobs_config(tiny_model_dirs, tmp_path, resultStore={"dir": str(tmp_path / "results")})
    with BackgroundServer(create_app(config)) as server:
        wait_ready(server.url)
        open_page(browser, server.url)
        set_field(browser, "steps", 2)
        browser.find_element(By.ID, "generate").click()
        width = wait_until(lambda: browser.execute_script(
            "const i = document.querySelector('#images img.result'); return i && i.complete && i.naturalWidth"),
            what="the image")
        src = browser.execute_script("return document.querySelector('#images img.result').src")
        assert width == 64 and src.startswith(f"{server.url}/v1/files/jobs/") and "sig=" in src
        # The same URL in a plain page of another origin: an <img> with no key at all.
        (tmp_path / "embed.html").write_text(f'<img id="x" src="{src}">')
        browser.get(f"file://{tmp_path / 'embed.html'}")
        assert wait_until(lambda: browser.execute_script(
            "const i = document.getElementById('x'); return i.complete && i.naturalWidth"), what="the embedded image") == 64
