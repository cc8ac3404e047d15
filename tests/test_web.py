"""The web mailbox through the real bridge: pages, the auth matrix, CSRF, overseer compose, mark
read, the SSE change feed, and server-side sanitising. One daemon per backend for the module.

The browser-level checks (XSS in a real DOM, live updates, screenshots) are in test_web_browser.py.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from PIL import Image

from maild.services.search import sanitize_query
from maild.web.render import markdown
from shared.weblogin import create_login_secret, secret_file
from tests.conftest import BACKENDS, Mailbox, git_init
from tests.test_http import start_bridge
from tests.webclient import WebClient, live_region, wait_until

PROJECT = "/work/webapp"
SLUG = "work-webapp"
SECRET = "a-web-test-secret-that-is-long-enough-for-hs256"
BEARER = "static-web-token-123"


class Site:
    def __init__(self, mailbox: Mailbox, port: int, tokens: dict[str, str]) -> None:
        self.mailbox = mailbox
        self.port = port
        self.tokens = tokens

    def browser(self) -> WebClient:
        client = WebClient(self.port)
        client.login(self.mailbox.paths.state_dir)
        return client

    def send(self, sender: str, to: str, subject: str, body: str, **extra: Any) -> int:
        result = self.mailbox.call("send_message", project_key=PROJECT, sender_name=sender,
                                   sender_token=self.tokens[sender], to=to, subject=subject, body_md=body, **extra)
        return int(result["deliveries"][0]["payload"]["id"])


def jwt_for(role: str, agent: str | None = None) -> str:
    claims: dict[str, Any] = {"sub": f"{role}-{agent}", "exp": int(time.time()) + 600, "role": role}
    if agent:
        claims["agent"] = agent
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module", params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    backend = str(request.param)
    saved = os.environ.get("AGENT_MAIL_BACKEND")
    os.environ["AGENT_MAIL_BACKEND"] = backend
    box = Mailbox(git_init(tmp_path_factory.mktemp(f"web-{backend}") / "repo"), backend)
    try:
        bridge = start_bridge(box, f'http_bearer_token = "{BEARER}"\nhttp_jwt_enabled = true\n'
                                   f'http_jwt_secret = "{SECRET}"\n')
        tokens = {}
        for name, program in (("BlueLake", "claude-code"), ("GreenHill", "codex"), ("RedStone", "gemini")):
            registered = box.call("register_agent", project_key=PROJECT, program=program, model="m1", name=name)
            tokens[name] = registered["registration_token"]
        yield Site(box, bridge.port, tokens)
    finally:
        box.stop()
        if saved is None:
            os.environ.pop("AGENT_MAIL_BACKEND", None)
        else:
            os.environ["AGENT_MAIL_BACKEND"] = saved


def test_every_page_renders_for_a_logged_in_person(site: Site) -> None:
    first = site.send("BlueLake", "GreenHill", "Deploy plan for staging", "We **ship** at noon.\n\n- step one",
                      thread_id="deploy-1")
    site.send("GreenHill", "BlueLake", "Re: Deploy plan for staging", "Agreed, multi word reply",
              thread_id="deploy-1", ack_required=True)
    site.mailbox.call("file_reservation_paths", project_key=PROJECT, agent_name="BlueLake",
                      registration_token=site.tokens["BlueLake"], paths=["src/api/*.py"], ttl_seconds=600,
                      reason="refactor")
    web = site.browser()
    pages = {
        "/mail": ["Deploy plan for staging", SLUG],
        "/mail/projects": [PROJECT],
        f"/mail/{SLUG}": ["BlueLake", "claude-code", "GreenHill", "Deploy plan for staging", "2 messages"],
        f"/mail/{SLUG}/inbox/GreenHill": ["GreenHill", "Deploy plan for staging", "unread"],
        f"/mail/{SLUG}/message/{first}": ["<strong>ship</strong>", "<li>step one</li>"],
        f"/mail/{SLUG}/thread/deploy-1": ["Agreed, multi word reply", "We <strong>ship</strong>"],
        f"/mail/{SLUG}/reservations": ["src/api/*.py", "refactor", "active"],
        f"/mail/{SLUG}/overdue?ttl=0": ["BlueLake", "Re: Deploy plan for staging"],
        f"/mail/{SLUG}/compose": ["HumanOperator", 'name="csrf"'],
        "/mail/archive": ["Archive commits"],
    }
    for path, expected in pages.items():
        status, headers, page = web.get(path)
        assert status == 200, (path, status, page[:300])
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "'unsafe-inline'" not in headers["content-security-policy"]
        region = live_region(page)
        for text in expected:
            assert text in region, (path, text)


def test_search_takes_the_reference_syntax(site: Site) -> None:
    site.send("RedStone", "BlueLake", "Cache invalidation notes", "the zebra quartz phrase lives here")
    site.send("RedStone", "BlueLake", "Unrelated", "cache words but not the phrase: quartz zebra")
    web = site.browser()

    def hits(query: str) -> list[str]:
        _, _, page = web.get(f"/mail/{SLUG}/search?q={query}")
        return re.findall(r'<li><a href="/mail/[^"]+/message/\d+">(.*?)</a>', live_region(page))

    assert [re.sub("<[^>]+>", "", h) for h in hits("subject:cache")] == ["Cache invalidation notes"]
    assert [re.sub("<[^>]+>", "", h) for h in hits('body:"zebra%20quartz"')] == ["Cache invalidation notes"]
    assert len(hits('"zebra%20quartz"')) == 1
    assert len(hits("cache")) == 2
    assert "<mark>" in web.get(f"/mail/{SLUG}/search?q=cache")[2]
    assert sanitize_query('subject:x body:"multi word"') == '({subject} : "x" AND {body_md} : "multi word")'
    assert sanitize_query('foo:"a b"') == '("foo" AND "a b")'


def test_without_a_session_pages_ask_to_log_in_and_posts_are_refused(site: Site) -> None:
    anonymous = WebClient(site.port)
    status, _, page = anonymous.get("/mail")
    assert status == 401
    assert "mailctl web" in page
    assert anonymous.get("/mail/events", headers={"Accept": "text/event-stream"})[0] == 401
    assert anonymous.post(f"/mail/{SLUG}/inbox/BlueLake/mark-all-read", {"csrf": "x"})[0] == 401
    assert anonymous.get("/mail", headers={"Authorization": "Bearer wrong"})[0] == 401


def test_a_login_secret_works_once_and_not_after_it_expires(site: Site) -> None:
    state = site.mailbox.paths.state_dir
    secret = create_login_secret(state)
    first, second = WebClient(site.port), WebClient(site.port)
    assert first.get(f"/mail/login?secret={secret}")[0] == 303
    assert first.get("/mail")[0] == 200
    status, _, page = second.get(f"/mail/login?secret={secret}")
    assert status == 401
    assert "not valid" in page
    assert second.get("/mail")[0] == 401
    expired = create_login_secret(state)
    old = time.time() - 3600
    os.utime(secret_file(state, expired), (old, old))
    assert WebClient(site.port).get(f"/mail/login?secret={expired}")[0] == 401
    assert WebClient(site.port).get("/mail/login?secret=made-up")[0] == 401
    _, headers, _ = WebClient(site.port).get(f"/mail/login?secret={create_login_secret(state)}")
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie


def test_logging_out_ends_the_session(site: Site) -> None:
    web = site.browser()
    assert web.post("/mail/logout", {"csrf": web.csrf()})[0] == 200
    assert web.get("/mail")[0] == 401


def test_scripts_use_bearer_or_jwt_and_readers_cannot_post(site: Site) -> None:
    bearer = WebClient(site.port, {"Authorization": f"Bearer {BEARER}"})
    assert bearer.get("/mail")[0] == 200
    assert bearer.post(f"/mail/{SLUG}/inbox/RedStone/mark-all-read", {})[0] == 303, "no CSRF token needed"
    reader = WebClient(site.port, {"Authorization": f"Bearer {jwt_for('reader')}"})
    assert reader.get(f"/mail/{SLUG}")[0] == 200
    status, _, _ = reader.post(f"/mail/{SLUG}/inbox/RedStone/mark-all-read", {})
    assert status == 403
    # A token bound to an agent sees that agent's inbox, not another's.
    agent = WebClient(site.port, {"Authorization": f"Bearer {jwt_for('reader', 'BlueLake')}"})
    assert agent.get(f"/mail/{SLUG}/inbox/BlueLake")[0] == 200
    assert agent.get(f"/mail/{SLUG}/inbox/GreenHill")[0] == 403


def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(site: Site) -> None:
    web = site.browser()
    web.get("/mail")
    target = f"/mail/{SLUG}/inbox/BlueLake/mark-all-read"
    assert web.post(target, {})[0] == 403
    assert web.post(target, {"csrf": "forged"})[0] == 403
    assert web.post(target, {"csrf": web.csrf()}, headers={"Origin": "http://evil.example"})[0] == 403
    own = f"http://127.0.0.1:{site.port}"
    assert web.post(target, {"csrf": web.csrf()}, headers={"Origin": own})[0] == 303


def test_the_overseer_writes_to_all_agents_as_human_operator_with_high_importance(site: Site) -> None:
    web = site.browser()
    web.get(f"/mail/{SLUG}/compose")
    status, headers, _ = web.post(f"/mail/{SLUG}/compose", [
        ("csrf", web.csrf()), ("all", "1"), ("subject", "Stop and rebase"), ("body", "Rebase on **main** now.")])
    assert status == 303, headers
    message_id = int(headers["location"].rsplit("/", 1)[1])
    message = site.mailbox.call("fetch_inbox", project_key=PROJECT, agent_name="GreenHill",
                                registration_token=site.tokens["GreenHill"], include_bodies=True, limit=50)
    mine = next(m for m in message["result"] if m["id"] == message_id)
    assert mine["from"] == "HumanOperator"
    assert mine["importance"] == "high"
    assert "MESSAGE FROM HUMAN OVERSEER" in mine["body_md"]
    assert mine["body_md"].endswith("Rebase on **main** now.")
    _, _, page = web.get(f"/mail/{SLUG}/message/{message_id}")
    assert all(name in page for name in ("BlueLake", "GreenHill", "RedStone"))
    status, _, page = web.post(f"/mail/{SLUG}/compose", [("csrf", web.csrf()), ("to", "BlueLake"),
                                                         ("subject", "x"), ("body", "  ")])
    assert status == 400
    assert "instructions" in page


def test_mark_read_and_mark_all_read_clear_the_unread_count(site: Site) -> None:
    ids = [site.send("GreenHill", "RedStone", f"note {i}", "text") for i in range(3)]
    web = site.browser()
    web.get("/mail")
    inbox = f"/mail/{SLUG}/inbox/RedStone"
    status, headers, _ = web.post(f"{inbox}/mark-read", [("csrf", web.csrf()), ("id", str(ids[0]))])
    assert status == 303
    assert "marked=1" in headers["location"]

    def unread() -> int:
        found = re.search(r"(\d+) unread", web.get(inbox)[2])
        assert found
        return int(found.group(1))

    before = unread()
    assert before >= 2
    web.post(f"{inbox}/mark-all-read", {"csrf": web.csrf()})
    assert unread() == 0


def test_attachments_show_as_thumbnails_and_downloads_behind_the_message_rule(site: Site) -> None:
    root = site.mailbox.root
    (root / "shots").mkdir(exist_ok=True)
    picture = io.BytesIO()
    Image.new("RGB", (600, 300), (20, 120, 200)).save(picture, "PNG")
    (root / "shots" / "wide.png").write_bytes(picture.getvalue())
    (root / "shots" / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>')
    mid = site.send("BlueLake", "GreenHill", "Screenshot attached", "see below", thread_id="shots-1",
                    attachment_paths=["shots/wide.png", "shots/evil.svg"])

    def converted() -> bool:  # 600 x 300 is converted after the send (docs/attachments.md): wait for the WebP
        with site.mailbox.client() as conn:
            page = conn.request("resources/read", {"uri": f"resource://message/{mid}"})["contents"][0]["text"]
        return all(m.get("conversion") != "pending" for m in json.loads(page)["attachments"])

    wait_until(converted, timeout=60, what="the deferred WebP conversion")
    web = site.browser()
    for path in (f"/mail/{SLUG}/message/{mid}", f"/mail/{SLUG}/thread/shots-1"):
        region = live_region(web.get(path)[2])
        thumb = re.search(r'<a class="thumb" href="([^"]+)"[^>]*><img src="([^"]+)" alt="wide.png" '
                          r'width="(\d+)" height="(\d+)"', region)
        assert thumb, region
        assert thumb[1] == thumb[2], "the thumbnail links to the full image"
        assert (thumb[3], thumb[4]) == ("240", "120"), "scaled to fit 240 px, aspect kept"
        download = re.search(r'<a href="([^"]+)" download="evil.svg">evil.svg</a>', region)
        assert download, region
    sha = thumb[2].rsplit("/", 1)[1]
    status, headers, data = web.fetch("GET", thumb[2])
    assert status == 200
    assert hashlib.sha256(data).hexdigest() == sha
    assert headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(data)).size == (600, 300)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"].startswith("private, max-age=")
    assert "content-disposition" not in headers
    assert "img-src 'self'" in headers["content-security-policy"]
    status, headers, data = web.fetch("GET", download[1])
    assert status == 200
    assert b"<svg" in data
    assert headers["content-disposition"].startswith("attachment;"), "never rendered on our origin"
    assert "svg" not in headers["content-type"]
    assert "html" not in headers["content-type"]
    # An agent of another project may not read the message, so not its attachments either.
    outsider = site.mailbox.call("register_agent", project_key="/work/elsewhere", program="p", model="m")["name"]
    stranger = WebClient(site.port, {"Authorization": f"Bearer {jwt_for('reader', outsider)}"})
    assert stranger.fetch("GET", thumb[2])[0] == 404
    assert stranger.get(f"/mail/{SLUG}/message/{mid}")[0] == 404, "the same rule as the message itself"
    insider = WebClient(site.port, {"Authorization": f"Bearer {jwt_for('reader', 'RedStone')}"})
    assert insider.fetch("GET", thumb[2])[0] == 200
    assert web.fetch("GET", f"/mail/{SLUG}/attachment/{'0' * 64}")[0] == 404
    assert web.fetch("GET", f"/mail/{SLUG}/attachment/not-a-hash")[0] == 400
    assert WebClient(site.port).fetch("GET", thumb[2])[0] == 401


class EventReader:
    """Reads the SSE stream on a thread, keeping every `change` event with its arrival time."""

    def __init__(self, port: int, cookies: dict[str, str], last_event_id: int | None = None,
                 extra: dict[str, str] | None = None) -> None:
        self.events: list[tuple[float, dict[str, Any], str]] = []
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Accept": "text/event-stream", **(extra or {})}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", "/mail/events", headers=headers)
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("content-type", "").startswith("text/event-stream")
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _read(self) -> None:
        event_id, name = "", ""
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    if name == "hello":
                        self.ready.set()
                    elif name == "change":
                        self.events.append((time.monotonic(), json.loads(line[6:]), event_id))
        except Exception:  # closed from the test's thread while reading: http.client fails in several ways
            return

    def close(self) -> None:
        self.conn.sock.shutdown(2) if self.conn.sock else None
        self.conn.close()
        self.thread.join(5)


def test_commits_reach_the_event_stream_and_a_reconnect_replays_what_it_missed(site: Site) -> None:
    web = site.browser()
    reader = EventReader(site.port, web.cookies)
    try:
        message_id = site.send("BlueLake", "GreenHill", "live one", "x")
        found = wait_until(lambda: [e for e in reader.events if message_id in e[1].get("message_ids", [])],
                           what="the mail event")
        assert "mail" in found[0][1]["kinds"]
        seen = int(found[0][2])
        count = len(reader.events)
        site.mailbox.call("mark_message_read", project_key=PROJECT, agent_name="GreenHill",
                          registration_token=site.tokens["GreenHill"], message_id=message_id)
        wait_until(lambda: any("read" in e[1]["kinds"] for e in reader.events[count:]), what="the read event")
        seen = max(seen, int(reader.events[-1][2]))
    finally:
        reader.close()
    later = site.send("GreenHill", "BlueLake", "while away", "y")
    again = EventReader(site.port, web.cookies, last_event_id=seen)
    try:
        wait_until(lambda: any(later in e[1].get("message_ids", []) for e in again.events), what="the replay")
    finally:
        again.close()


def test_an_agent_token_gets_event_kinds_but_no_message_ids(site: Site) -> None:
    reader = EventReader(site.port, {}, extra={"Authorization": f"Bearer {jwt_for('reader', 'RedStone')}"})
    try:
        site.send("BlueLake", "GreenHill", "not for RedStone", "z")
        event = wait_until(lambda: [e for e in reader.events if "mail" in e[1]["kinds"]], what="the mail event")
        assert "message_ids" not in event[0][1]
    finally:
        reader.close()


def test_unsafe_markdown_is_neutralised_on_the_server() -> None:
    attacks = [
        "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))", "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "<svg onload=alert(1)><circle/></svg>", "![x](https://evil.example/p.png)", "[x](<javascript:alert(1)>)",
        "<a href='javascript:alert(1)'>y</a>", "[x]: javascript:alert(1)\n\n[y][x]", "<iframe src=//evil></iframe>",
    ]
    for text in attacks:
        out = markdown(text)
        assert not re.search(r"<(script|svg|iframe|img[^>]*onerror)", out, re.I), (text, out)
        assert not re.search(r'(href|src)="(javascript|data|https?://evil)', out, re.I), (text, out)
    assert markdown("**ok** [site](https://example.com)") == (
        '<p><strong>ok</strong> <a href="https://example.com">site</a></p>\n')


@pytest.mark.parametrize("backend", ["asyncio"])
def test_mailctl_web_starts_the_bridge_and_prints_a_login_url_that_works_once(mailbox: Mailbox) -> None:
    from tests.test_http import free_port

    port = str(free_port())
    first = json.loads(mailbox.mailctl("web", "--json", "--port", port).stdout)
    assert first["bridge_started"] is True
    assert first["url"] == f"http://127.0.0.1:{port}/mail"
    again = json.loads(mailbox.mailctl("web", "--json", "--port", port).stdout)
    assert again["bridge_started"] is False, "a running bridge is reused"
    web = WebClient(int(port))
    path = first["login_url"].split(port, 1)[1]
    assert web.get(path)[0] == 303
    assert web.get("/mail")[0] == 200
    assert WebClient(int(port)).get(path)[0] == 401, "the secret works once"
    text = mailbox.mailctl("web", "--no-open", "--port", port).stdout
    assert "/mail/login?secret=" in text


@pytest.mark.parametrize("backend", ["asyncio"])
def test_trusted_localhost_covers_the_ui_but_its_forms_still_need_the_csrf_token(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, "http_allow_localhost_unauthenticated = true\n")
    mailbox.call("register_agent", project_key=PROJECT, program="p", model="m", name="BlueLake")
    web = WebClient(bridge.port)
    assert web.get("/mail")[0] == 200, "no login needed from this machine"
    target = f"/mail/{SLUG}/inbox/BlueLake/mark-all-read"
    assert web.post(target, {})[0] == 403, "another site's page could post to localhost: it needs the token"
    assert web.post(target, {"csrf": web.csrf()})[0] == 303
    proxied = WebClient(bridge.port, {"X-Forwarded-For": "203.0.113.9"})
    assert proxied.get("/mail")[0] == 401, "a proxied request is never local"


@pytest.mark.parametrize("backend", ["asyncio"])
def test_in_participants_mode_an_attachment_is_only_for_the_messages_participants(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, f"message_visibility = 'participants'\nhttp_jwt_enabled = true\n"
                                   f'http_jwt_secret = "{SECRET}"\n')
    tokens = {name: mailbox.call("register_agent", project_key=PROJECT, program="p", model="m",
                                 name=name)["registration_token"] for name in ("BlueLake", "GreenHill", "RedStone")}
    (mailbox.root / "private.png").write_bytes(_png(64, 32))
    sent = mailbox.call("send_message", project_key=PROJECT, sender_name="BlueLake", sender_token=tokens["BlueLake"],
                        to="GreenHill", subject="just us", body_md="x", attachment_paths=["private.png"])
    sha = sent["deliveries"][0]["payload"]["attachments"][0]["sha256"]
    target = f"/mail/{SLUG}/attachment/{sha}"
    for name, status in (("GreenHill", 200), ("BlueLake", 200), ("RedStone", 404)):
        viewer = WebClient(bridge.port, {"Authorization": f"Bearer {jwt_for('reader', name)}"})
        assert viewer.fetch("GET", target)[0] == status, name
        page = viewer.get(f"/mail/{SLUG}/message/{sent['deliveries'][0]['payload']['id']}")[0]
        assert page == status, f"{name}: the attachment follows the message's own rule"


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()
