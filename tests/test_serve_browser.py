"""`malm serve` in a real browser: the command started as a subprocess on a free port, the page
driven by headless Chromium through Selenium (system chromium + chromium-driver, Debian packages:
`bash scripts/install_browser.sh`). Upload a photo through the file input, wait for the k results,
compare them with malm.search.search(); the attention map appears; a broken file and a too-large
file show readable errors. A screenshot of the results goes under tmp_path and,
with MALM_SERVE_SCREENSHOT=PATH.png, to PATH.png too (and the error page beside it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("MALM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MALM_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT = os.environ.get("MALM_SERVE_SCREENSHOT", "")  # also copy the screenshot here (a .png path)
REPO = Path(__file__).resolve().parents[1]
K = 4

_missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
if _missing:
    pytest.skip(f"headless browser not installed ({', '.join(_missing)} missing): run "
                "`bash scripts/install_browser.sh` (apt: chromium chromium-driver)",
                allow_module_level=True)
pytest.importorskip("selenium", reason="selenium is not installed (requirements.txt)")
pytest.importorskip("fastapi", reason="malm serve needs fastapi (requirements.txt)")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from search_fixtures import broken, tiny_indexes  # noqa: E402

from malm.search import search  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_data):
    return tiny_indexes(tmp_path_factory, tiny_data)


@pytest.fixture(scope="module")
def server(built):
    """`python -m malm.search serve --port 0` on the malm index: its URL (parsed from its first
    line), stopped after the module."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "malm.search", "serve", "--index", str(built["malm"]),
                             "--port", "0", "--device", "cpu", "--k", str(K)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"malm serve: (http://127\.0\.0\.1:\d+/)\n", line)
        if not m:
            proc.kill()
            pytest.fail(f"malm serve did not print its URL: {line!r} {proc.stderr.read()}")
        yield m.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _choose(driver, path: Path) -> None:
    driver.find_element(By.ID, "photo-input").send_keys(str(Path(path).resolve()))


def test_upload_in_the_browser(server, browser, built, tmp_path):
    wait = WebDriverWait(browser, 20)
    browser.get(server)
    wait.until(lambda d: "recipes" in d.find_element(By.ID, "info").text)
    assert re.match(r"\d+ recipes \u00b7 index malm\.npz", browser.find_element(By.ID, "info").text)

    # a photo -> k results, the titles of malm.search.search() in its order
    photo = Path(built["photos"][5])
    _choose(browser, photo)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.hit")) == K)
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results li.hit .title")]
    want = search(built["malm"], [photo], k=K, device="cpu").results[0].hits
    assert titles == [h.title for h in want]
    ids = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "#results li.hit")]
    assert ids == [h.id for h in want]
    first_ingredients = browser.find_elements(By.CSS_SELECTOR, "#results li.hit:first-child .ingredients li")
    assert [e.text for e in first_ingredients] == want[0].ingredients
    status = browser.find_element(By.ID, "status")
    assert status.text.startswith(f"{K} results in")
    ms = int(status.get_attribute("data-ms"))
    # the attention map of the first hit's first line is drawn
    wait.until(lambda d: d.find_element(By.ID, "attention-img").get_attribute("data-loaded"))
    assert browser.execute_script("return document.getElementById('attention-img').naturalWidth") > 300
    assert browser.find_element(By.ID, "attention").is_displayed()
    assert want[0].ingredients[0] in browser.find_element(By.ID, "attention-what").text
    # another ingredient line on request
    buttons = browser.find_elements(By.CSS_SELECTOR, "#results li.hit:nth-child(2) .ingredients button")
    if buttons:
        before = browser.find_element(By.ID, "attention-img").get_attribute("data-loaded")
        buttons[-1].click()
        wait.until(lambda d: d.find_element(By.ID, "attention-img").get_attribute("data-loaded") != before)
        assert buttons[-1].text in browser.find_element(By.ID, "attention-what").text
        browser.find_elements(By.CSS_SELECTOR, "#results li.hit:first-child .ingredients button")[0].click()
        wait.until(lambda d: want[0].ingredients[0] in d.find_element(By.ID, "attention-what").text
                   and d.find_element(By.ID, "attention-img").get_attribute("data-loaded"))
    assert not browser.find_element(By.ID, "error").is_displayed()
    shot = tmp_path / "serve_screenshot.png"
    assert browser.save_screenshot(str(shot))
    if SCREENSHOT:
        shutil.copyfile(shot, SCREENSHOT)
    print(f"\nbrowser upload round trip: {ms} ms; screenshot {shot}")

    # a broken file: a readable error, no results
    _choose(browser, broken(tmp_path / "broken.jpg"))
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    msg = browser.find_element(By.ID, "error").text
    assert msg.startswith("cannot use this photo: truncated") and "Traceback" not in msg
    assert browser.find_elements(By.CSS_SELECTOR, "#results li.hit") == []
    assert not browser.find_element(By.ID, "attention").is_displayed()
    shot_err = tmp_path / "serve_error.png"
    browser.save_screenshot(str(shot_err))
    if SCREENSHOT:
        shutil.copyfile(shot_err, str(Path(SCREENSHOT).with_name("serve_screenshot_error.png")))

    # a file over the cap (10 MB): refused with the limit named, before any byte is sent
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.truncate(11 * 2**20)
    _choose(browser, big)
    wait.until(lambda d: "up to 10 MB" in d.find_element(By.ID, "error").text)

    # and a good photo again afterwards
    _choose(browser, photo)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.hit")) == K)
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results li.hit .title")] == titles
