"""The share bundle's viewer in real headless Chromium, opened from file:// (no server at all).

A reader lists threads, opens one, searches (the lazily loaded index) and follows a hit; the web UI's
XSS payloads, exported into the bundle, stay inert on every page and in the search results, under
the bundle's strict CSP (no inline script is needed, so none runs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mailbox, git_init
from tests.test_web_browser import XSS, chromium_paths, wait

pytestmark = pytest.mark.slow
PROJECT = "/work/shop"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("share-browser")
    box = Mailbox(git_init(base / "repo"), "asyncio")
    try:
        tokens = {name: box.call("register_agent", project_key=PROJECT, program="codex", model="gpt-5",
                                 name=name)["registration_token"] for name in ("BlueLake", "GreenHill")}

        def send(sender: str, subject: str, body: str, **extra: Any) -> None:
            other = "GreenHill" if sender == "BlueLake" else "BlueLake"
            box.call("send_message", project_key=PROJECT, sender_name=sender, sender_token=tokens[sender],
                     to=[other], subject=subject, body_md=body, **extra)

        send("BlueLake", "Checkout API: plan for the refactor", "## Plan\n\nSplit **cart** and payment.",
             thread_id="checkout")
        send("GreenHill", "Re: Checkout API: plan for the refactor", "Agreed; the zebrafish fixture stays.",
             thread_id="checkout")
        for subject, body in XSS:
            send("BlueLake", subject, body + "\n\npayloadword")
        out = base / "bundle"
        box.mailctl("share", "export", "-o", str(out), "--no-zip", "--json", timeout=120)
        yield out
    finally:
        box.stop()


@pytest.fixture(scope="module")
def browser(bundle_dir: Path) -> Iterator[Any]:
    found = chromium_paths()
    if found is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed and apt-get could not install them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-extensions", "--no-first-run", "--window-size=1280,860"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def search(driver: Any, query: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(query)
    driver.find_element(By.CSS_SELECTOR, "#search button").click()
    wait(driver, lambda d: d.find_element(By.ID, "results").get_attribute("data-done") == "1")
    return list(driver.find_elements(By.CSS_SELECTOR, "#results a.hit"))


def test_a_reader_lists_opens_and_searches_from_file_url(browser: Any, bundle_dir: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get((bundle_dir / "index.html").as_uri())
    threads = browser.find_elements(By.CSS_SELECTOR, "#threads a.thread")
    assert len(threads) == 1 + len(XSS)
    assert "BlueLake" in browser.find_element(By.ID, "projects").text
    next(t for t in threads if t.text.startswith("Checkout API")).click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "article.message"))
    bodies = browser.find_elements(By.CSS_SELECTOR, "article.message .body")
    assert len(bodies) == 2
    assert browser.find_element(By.CSS_SELECTOR, "article.message .body strong").text == "cart"
    hits = search(browser, "zebra")  # a prefix: the index matches whole words starting so
    assert [h.text for h in hits] == ["Re: Checkout API: plan for the refactor"]
    assert "1 message matches" in browser.find_element(By.ID, "results").text
    hits[0].click()
    wait(browser, lambda d: "zebrafish" in d.find_element(By.TAG_NAME, "main").text)
    assert browser.current_url.startswith("file://")
    assert search(browser, "nothingmatchesthis") == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "nothingmatches" not in e["message"]
              and "terms-" not in e["message"]]
    assert errors == []  # no CSP violation, no script error (a missing shard is a normal miss)


def test_xss_payloads_stay_inert_in_pages_and_search_results(browser: Any, bundle_dir: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get((bundle_dir / "index.html").as_uri())
    assert browser.execute_script("return window.__pwned === undefined")
    hits = search(browser, "payloadword")
    assert len(hits) == len(XSS)
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, "#results script, #results img, #results svg") == []
    pages = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#threads a.thread")]
    for href in pages:
        browser.get(href)
        for link in browser.find_elements(By.CSS_SELECTOR, "main a"):
            assert not (link.get_attribute("href") or "").lower().startswith(("javascript:", "data:text")), href
        assert browser.find_elements(By.CSS_SELECTOR, "main script, main iframe, main svg") == []
        assert browser.execute_script("return window.__pwned === undefined"), href
    assert json.loads((bundle_dir / "manifest.json").read_text())["viewer"]["threads"] == len(pages)
