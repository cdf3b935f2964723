"""What the browser tests share: where Chromium and chromedriver are, a headless driver, waiting,
and the check that the browser's console saw no error."""

import os
import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("MERIDIAN_SCREENSHOTS", "target/console-screenshots"))


def available():
    """Whether Chromium and chromedriver are installed (`.ci/run` installs them)."""
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def driver(downloads):
    """Headless Chromium (`--no-sandbox`: CI runs as root) saving downloads to `downloads`."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    SHOTS.mkdir(parents=True, exist_ok=True)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)


def wait(browser, condition, seconds=20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds).until(condition)


def no_console_errors(browser, provoked=()):
    """No error in the browser's console but the refused requests the test provoked
    (`provoked`: `(path, status)` pairs, which Chrome logs as failed network loads)."""
    def expected(entry):
        return entry["source"] == "network" and any(
            path in entry["message"] and f"status of {status}" in entry["message"] for path, status in provoked)
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and not expected(e)]
    assert severe == [], severe
