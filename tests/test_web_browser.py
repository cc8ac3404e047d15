"""The web mailbox in real headless Chromium (Debian's chromium + chromedriver, driven by selenium).

A person logs in with the one-time link, opens the inbox, a message, its thread, searches,
writes as the overseer, and watches an agent's message appear without a reload. A message's
image attachment loads as a thumbnail. The XSS suite checks the live DOM: nothing from a message
executes. With AGENT_MAIL_WRITE_SCREENSHOTS=1 the
main pages are saved to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from shared.weblogin import create_login_secret
from tests.conftest import Mailbox, git_init
from tests.test_http import start_bridge

pytestmark = pytest.mark.slow

PROJECT = "/work/shop"
SLUG = "work-shop"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
XSS = [
    ("<script>window.__pwned='subject'</script>", "plain body"),
    ("img onerror", "<img src=x onerror=\"window.__pwned='img'\">"),
    ("js link", "[click me](javascript:window.__pwned='link')"),
    ("mixed-case js link", "[click](JaVaScRiPt:window.__pwned='case')"),
    ("data link", "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)"),
    ("svg", "<svg onload=\"window.__pwned='svg'\"><circle r=5 /></svg>"),
    ("reference link", "[ref][evil]\n\n[evil]: javascript:window.__pwned='ref'"),
    ("autolink", "<javascript:window.__pwned='auto'>"),
    ("iframe", "<iframe src=\"javascript:window.__pwned='frame'\"></iframe>"),
    ("remote image", "![tracker](https://evil.example/pixel.png)"),
    ("html in code", "`<script>window.__pwned='code'</script>`\n\n```\n<img src=x onerror=alert(1)>\n```"),
    ("\" onmouseover=\"window.__pwned='attr'", "attribute breakout in the subject"),
]


def chromium_paths() -> tuple[str, str] | None:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if (browser is None or driver is None) and shutil.which("apt-get"):
        for command in (["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
            subprocess.run(command, capture_output=True, check=False, timeout=900)
            browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
            if browser and driver:
                break
    return (browser, driver) if browser and driver else None


def write_attachments(root: Path) -> list[str]:
    """A diagram (an image: shown as a thumbnail) and a log (a file: a download link)."""
    picture = Image.new("RGB", (640, 400), (246, 248, 250))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=34)
    for i, (label, color) in enumerate((("cart", (52, 120, 246)), ("payment", (46, 160, 67)))):
        draw.rounded_rectangle((60 + i * 300, 140, 280 + i * 300, 260), 18, fill=color)
        draw.text((170 + i * 300, 200), label, fill=(255, 255, 255), font=font, anchor="mm")
    draw.line((280, 200, 360, 200), fill=(90, 90, 90), width=6)
    out = io.BytesIO()
    picture.save(out, "PNG")
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "split.png").write_bytes(out.getvalue())
    (root / "docs" / "ci.log").write_text("test_refund_rounding FAILED (1 in 20 runs)\n" * 40)
    return ["docs/split.png", "docs/ci.log"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    saved = os.environ.get("AGENT_MAIL_BACKEND")
    os.environ["AGENT_MAIL_BACKEND"] = "asyncio"
    box = Mailbox(git_init(tmp_path_factory.mktemp("browser") / "repo"), "asyncio")
    try:
        bridge = start_bridge(box, "")
        tokens = {}
        for name, program, model in (("BlueLake", "claude-code", "opus-4.5"), ("GreenHill", "codex", "gpt-5"),
                                     ("RedStone", "gemini-cli", "gemini-3")):
            tokens[name] = box.call("register_agent", project_key=PROJECT, program=program, model=model, name=name,
                                    task_description=f"{name} works on the shop")["registration_token"]

        def send(sender: str, to: list[str], subject: str, body: str, **extra: Any) -> int:
            result = box.call("send_message", project_key=PROJECT, sender_name=sender, sender_token=tokens[sender],
                              to=to, subject=subject, body_md=body, **extra)
            return int(result["deliveries"][0]["payload"]["id"])

        send("BlueLake", ["GreenHill"], "Checkout API: plan for the refactor",
             "## Plan\n\n1. Split `checkout.py` into **cart** and **payment**\n2. Keep the public API\n\n"
             "> Ping me before touching `src/payment/`.", thread_id="checkout-refactor",
             attachment_paths=write_attachments(box.root))
        send("GreenHill", ["BlueLake"], "Re: Checkout API: plan for the refactor",
             "Sounds good. I hold `src/payment/**` until 15:00; tests are in `tests/payment/`.",
             thread_id="checkout-refactor")
        send("RedStone", ["BlueLake", "GreenHill"], "Flaky test in CI", "`test_refund_rounding` fails 1 in 20 runs.",
             importance="high", ack_required=True)
        box.call("file_reservation_paths", project_key=PROJECT, agent_name="GreenHill",
                 registration_token=tokens["GreenHill"], paths=["src/payment/**"], ttl_seconds=3600,
                 reason="checkout refactor")
        box.call("file_reservation_paths", project_key=PROJECT, agent_name="BlueLake",
                 registration_token=tokens["BlueLake"], paths=["src/cart/*.py"], ttl_seconds=1800,
                 reason="split cart")
        yield {"mailbox": box, "port": bridge.port, "send": send}
    finally:
        box.stop()
        if saved is None:
            os.environ.pop("AGENT_MAIL_BACKEND", None)
        else:
            os.environ["AGENT_MAIL_BACKEND"] = saved


@pytest.fixture(scope="module")
def browser(site: dict[str, Any]) -> Iterator[Any]:
    found = chromium_paths()
    if found is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed and apt-get could not install them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--disable-extensions", "--no-first-run", "--window-size=1280,860",
                 "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def base(site: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{site['port']}"


def wait(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def shoot(driver: Any, name: str) -> None:
    if os.environ.get("AGENT_MAIL_WRITE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def login(driver: Any, site: dict[str, Any]) -> None:
    secret = create_login_secret(site["mailbox"].paths.state_dir)
    driver.get(f"{base(site)}/mail/login?secret={secret}")
    wait(driver, lambda d: d.find_elements("css selector", "table.mail"))


def test_a_person_reads_searches_and_writes_as_the_overseer(browser: Any, site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{base(site)}/mail")
    assert "mailctl web" in browser.find_element(By.TAG_NAME, "main").text, "no session: the login page"
    login(browser, site)
    wait(browser, lambda d: d.find_element(By.ID, "live-status").text == "live")
    shoot(browser, "inbox")
    browser.find_element(By.LINK_TEXT, "Checkout API: plan for the refactor").click()
    body = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "article.message .body"))
    assert body.find_element(By.TAG_NAME, "h2").text == "Plan"
    thumb = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "section.attachments a.thumb img"))
    wait(browser, lambda d: d.execute_script("return arguments[0].complete", thumb))
    assert browser.execute_script("return arguments[0].naturalWidth", thumb) == 640, "the thumbnail loaded"
    assert thumb.size["width"] == 240
    assert "ci.log" in browser.find_element(By.CSS_SELECTOR, "section.attachments ul.files").text
    shoot(browser, "message")
    browser.find_element(By.LINK_TEXT, "thread").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.message")) == 2)
    wait(browser, lambda d: d.execute_script(
        "const i = document.querySelector('a.thumb img'); return i && i.complete && i.naturalWidth > 0"))
    shoot(browser, "thread")

    browser.get(f"{base(site)}/mail/{SLUG}")
    assert "claude-code" in browser.find_element(By.CSS_SELECTOR, "table.agents").text
    shoot(browser, "project")
    browser.find_element(By.LINK_TEXT, "Search").click()
    box = wait(browser, lambda d: d.find_element(By.NAME, "q"))
    box.send_keys('subject:checkout body:"public API"')
    box.submit()
    results = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "ol.results li"))
    assert len(results) == 1
    assert results[0].find_elements(By.TAG_NAME, "mark")
    shoot(browser, "search")

    browser.get(f"{base(site)}/mail/{SLUG}/reservations")
    assert "src/payment/**" in browser.find_element(By.TAG_NAME, "table").text
    shoot(browser, "reservations")

    browser.get(f"{base(site)}/mail/{SLUG}/compose")
    for name in ("BlueLake", "GreenHill"):
        browser.find_element(By.CSS_SELECTOR, f"input[name=to][value={name}]").click()
    browser.find_element(By.NAME, "subject").send_keys("Pause: release freeze")
    browser.find_element(By.NAME, "body").send_keys("Stop merging to **main** until I say so.")
    shoot(browser, "compose")
    browser.find_element(By.CSS_SELECTOR, "form.compose button[type=submit]").click()
    article = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "article.message"))
    assert "HumanOperator" in article.text
    assert article.find_element(By.CSS_SELECTOR, ".badge.high")
    assert "MESSAGE FROM HUMAN OVERSEER" in article.text
    assert "Stop merging to main until I say so." in article.text
    shoot(browser, "overseer-message")

    browser.get(f"{base(site)}/mail/archive")
    rows = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "table tbody tr"))
    # The oldest mail commit (the attachments' own commit carries no markdown to diff).
    [*_, first_mail] = [r for r in rows if r.text and "mail: " in r.text]
    first_mail.find_element(By.CSS_SELECTOR, "a code").click()
    diff = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "pre.diff"))
    assert "Checkout API" in diff.text or "BlueLake" in diff.text
    shoot(browser, "archive-commit")


def test_an_agents_message_appears_without_a_reload(browser: Any, site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    login(browser, site)
    browser.get(f"{base(site)}/mail/{SLUG}/inbox/GreenHill")
    wait(browser, lambda d: d.find_element(By.ID, "live-status").text == "live")
    browser.execute_script("window.__sameDocument = 'yes';")
    site["send"]("RedStone", ["GreenHill"], "Live: the build is green again", "All checks pass.")
    wait(browser, lambda d: "Live: the build is green again" in d.find_element(By.ID, "live").text)
    assert browser.execute_script("return window.__sameDocument") == "yes", "the page was not reloaded"
    assert browser.find_element(By.CSS_SELECTOR, "tr.unread .subj a").text == "Live: the build is green again"
    shoot(browser, "agent-inbox")


def test_nothing_in_a_message_executes_in_the_browser(browser: Any, site: dict[str, Any]) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    for subject, body in XSS:
        site["send"]("RedStone", ["BlueLake"], subject, body, thread_id="xss-suite")
    login(browser, site)
    for path in (f"/mail/{SLUG}/thread/xss-suite", "/mail", f"/mail/{SLUG}/inbox/BlueLake",
                 f"/mail/{SLUG}/search?q=window"):
        browser.get(base(site) + path)
        wait(browser, lambda d: d.find_element(By.ID, "live"))
        for link in browser.find_elements(By.CSS_SELECTOR, "#live a"):
            link_href = (link.get_attribute("href") or "").lower()
            assert not link_href.startswith(("javascript:", "data:")), (path, link_href)
        found = browser.execute_script("""
            const live = document.getElementById('live');
            const bad = [];
            live.querySelectorAll('script, svg, iframe, object, embed').forEach(e => bad.push(e.tagName));
            live.querySelectorAll('*').forEach(e => { for (const a of e.attributes) {
                if (a.name.startsWith('on')) bad.push(e.tagName + '@' + a.name); } });
            live.querySelectorAll('img').forEach(e => { if (!e.getAttribute('src') ||
                !e.getAttribute('src').startsWith('/')) { if (e.getAttribute('src')) bad.push('img ' + e.src); } });
            return {bad: bad, pwned: window.__pwned || null};
        """)
        assert found == {"bad": [], "pwned": None}, (path, found)
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - reading it is how selenium asks for an alert
    # Clicking the neutralised links runs nothing either.
    browser.get(f"{base(site)}/mail/{SLUG}/thread/xss-suite")
    assert "<script>" in browser.find_element(By.ID, "live").text, "a script subject is shown as text"
    assert browser.execute_script("return window.__pwned || null") is None
