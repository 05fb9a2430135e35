"""The status page in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by Selenium).

A real simulator and daemon (tests/test_ops_e2e.py's ``world``) provide a registered filing and a do-not-load
one. Checks: every main view loads with no console error (a CSP violation or a failed resource is one), a search by
MRN finds the filing, its timeline shows the IE3R01, the do-not-load alert comes first. ``make test`` installs the
browser when it runs as root; elsewhere these tests skip with the reason. With ``ICS2GW_SCREENSHOTS=1`` the
screenshots also go to docs/img/ (how the README's pictures are made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_harness import ens
from tests.test_ops_e2e import base_url, new_lrn, registered, world  # noqa: F401 - the shared module fixture

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("ICS2GW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ICS2GW_CHROMEDRIVER", "/usr/bin/chromedriver")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "img"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER}: install Debian chromium and chromium-driver (make test does "
                    "when run as root)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the test extra)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]


def shot(driver: Any, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    if os.environ.get("ICS2GW_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", DOCS / f"{name}.png")


@pytest.fixture(scope="module")
def filings(world: Any) -> dict[str, Any]:  # noqa: F811
    _, gw = world
    ok = registered(gw, new_lrn("WEB"))
    lrn = new_lrn("DNL")
    assert gw.submit(ens(lrn))[0] == 202
    dnl = gw.wait_state(lrn, "do-not-load")
    rfi = new_lrn("RFI")   # an open IE3Q02 as well, to show that do-not-load still comes first
    assert gw.submit(ens(rfi))[0] == 202
    gw.wait_state(rfi, "info-requested")
    return {"ok": ok["filing"], "dnl": dnl["filing"]}


def test_overview_loads_without_console_errors_and_do_not_load_first(world: Any, browser: Any,  # noqa: F811
                                                                      filings: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    _, gw = world
    browser.get_log("browser")  # drop anything earlier
    browser.get(base_url(gw) + "/status")
    assert browser.title.startswith("Overview")
    assert console_errors(browser) == []
    main = browser.find_element(By.TAG_NAME, "main")
    first = main.find_elements(By.XPATH, "./section|./div")[0]
    assert first.get_attribute("id") == "do-not-load", first.get_attribute("outerHTML")[:200]
    assert filings["dnl"]["lrn"] in first.text
    dnl_y = first.location["y"]
    assert dnl_y < browser.find_element(By.ID, "requests").location["y"]
    assert "IE3Q02" in browser.find_element(By.ID, "requests").text
    assert browser.find_element(By.ID, "health-status").text in ("ok", "degraded")
    assert browser.find_element(By.ID, "environment").text.lower() == "conformance"
    shot(browser, tmp_path, "statuspage-overview")


def test_search_by_mrn_then_timeline_shows_ie3r01(world: Any, browser: Any, filings: Any,  # noqa: F811
                                                   tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    _, gw = world
    browser.get(base_url(gw) + "/status")
    browser.get_log("browser")
    box = browser.find_element(By.ID, "search")
    box.clear()
    box.send_keys(filings["ok"]["mrn"])
    browser.find_element(By.ID, "search-button").click()
    result = browser.find_element(By.ID, "search-result")
    assert "by MRN" in result.text
    links = browser.find_elements(By.CSS_SELECTOR, "table.filings a")
    assert [a.text for a in links] == [filings["ok"]["lrn"]]
    assert console_errors(browser) == []
    shot(browser, tmp_path, "statuspage-search")
    links[0].click()
    assert browser.title.startswith(f"Filing {filings['ok']['lrn']}")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.timeline tbody tr")
    actions = [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows]
    assert "IE3R01" in actions and "IE3F32" in actions, actions
    assert actions.index("IE3F32") < actions.index("IE3R01")
    assert browser.find_element(By.ID, "evidence-zip").get_attribute("href").endswith("/evidence.zip")
    assert console_errors(browser) == []
    shot(browser, tmp_path, "statuspage-timeline")


def test_filings_list_filter_and_paging_without_console_errors(world: Any, browser: Any,  # noqa: F811
                                                               filings: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    _, gw = world
    browser.get_log("browser")
    browser.get(base_url(gw) + "/status/filings?state=do-not-load")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.filings tbody tr")
    assert rows and all("do-not-load" in r.text for r in rows)
    assert filings["dnl"]["lrn"] in browser.page_source
    browser.get(base_url(gw) + "/status/filings")
    assert browser.find_elements(By.CSS_SELECTOR, "table.filings tbody tr")
    assert console_errors(browser) == []
    shot(browser, tmp_path, "statuspage-filings")
