"""Issue 18 figures: the web mailbox's page times at 1,000,000 messages, and commit -> live event.

    python tests/bench/bench_web.py [--quick] [--messages N] [--backend asyncio|trio] [--keep DIR]

1. Bulk-builds N messages (bench_search's builder: 50 agents, threads of ~4, realistic text).
2. Starts maild with the HTTP bridge and times pages over real HTTP with a bearer token: the
   unified inbox, an agent's inbox, threads, messages, the project page and the search page.
   "server" is the daemon's own time to the first byte (its Server-Timing header); "client" adds
   HTTP on loopback and reading the body.
3. Sends one message carrying an image (an 800x600 noise PNG, ~1.4 MB -> WebP) and a file, then times its message page
   (thumbnail + download link) and the attachment route serving the image's bytes.
4. Opens the SSE stream, sends messages over the socket, and records when each message's event
   arrives: send call start -> event (an upper bound of commit -> event: the commit happens inside
   that call) and send call return -> event (after the commit: a lower bound).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient
from shared.paths import MailboxPaths
from tests.bench.bench_search import build
from tests.bench.common import stop, summarise, temp_mailbox, write_report

TOKEN = "bench-web-token"
SEARCHES = ["deploy", "subject:release", 'body:"merge branch"', '"pull request"', "kubernetes",
            "deploy AND NOT failing", "migr*", "auth token cache"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, float, float]:
    """(status, server ms from Server-Timing, client ms)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        response.read()
        client_ms = (time.perf_counter() - t0) * 1000
        timing = response.getheader("server-timing", "app;dur=nan")
        return response.status, float(timing.split("dur=")[1]), client_ms
    finally:
        conn.close()


def time_pages(port: int, paths: list[str], rounds: int) -> dict[str, Any]:
    server: list[float] = []
    client: list[float] = []
    for _ in range(rounds):
        for path in paths:
            status, s_ms, c_ms = get(port, path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")
            server.append(s_ms / 1000)
            client.append(c_ms / 1000)
    return {"server": summarise(server), "client": summarise(client)}


def time_search_tool(paths: MailboxPaths, rounds: int) -> dict[str, Any]:
    """The same queries through search_mailbox on the socket: what the page costs beyond search."""
    samples: list[float] = []
    with DaemonClient(paths) as operator:
        for _ in range(rounds):
            for query in SEARCHES:
                t0 = time.perf_counter()
                operator.call_tool("search_mailbox", {"project_key": "bench", "query": query, "limit": 20})
                samples.append(time.perf_counter() - t0)
    return summarise(samples)


def attachment_pages(paths: MailboxPaths, port: int, rounds: int) -> dict[str, Any]:
    """A message with attachments: its page, and the gated route that serves the image's bytes."""
    import io

    from PIL import Image

    rng = random.Random(16)
    picture = Image.frombytes("RGB", (800, 600), bytes(rng.randrange(256) for _ in range(800 * 600 * 3)))
    out = io.BytesIO()
    picture.save(out, "PNG")
    (paths.root / "bench-shot.png").write_bytes(out.getvalue())
    (paths.root / "bench-notes.txt").write_text("notes\n" * 2000)
    with DaemonClient(paths) as operator:
        operator.call_tool("register_agent", {"project_key": "bench", "program": "bench", "model": "human",
                                              "name": "HumanOperator"})
        sent = operator.call_tool("send_message", {
            "project_key": "bench", "to": ["Agent01"], "subject": "screenshot", "body_md": "attached",
            "attachment_paths": ["bench-shot.png", "bench-notes.txt"]})
    payload = sent["deliveries"][0]["payload"]
    image = next(a for a in payload["attachments"] if a["media_type"].startswith("image/"))
    return {"image_bytes": image["bytes"],
            "message_page": time_pages(port, [f"/mail/bench/message/{payload['id']}"], rounds * 5),
            "attachment_route": time_pages(port, [f"/mail/bench/attachment/{image['sha256']}"], rounds * 5)}


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(port, "/mail/projects")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the bridge did not come up")


def live_latency(paths: MailboxPaths, port: int, sends: int) -> dict[str, Any]:
    arrivals: dict[int, float] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/mail/events", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"})
    response = conn.getresponse()
    ready = threading.Event()

    def read() -> None:
        try:
            for raw in response:
                line = raw.decode()
                if line.startswith("event: hello"):
                    ready.set()
                if line.startswith("data: ") and "message_ids" in line:
                    now = time.perf_counter()
                    for mid in json.loads(line[6:])["message_ids"]:
                        arrivals.setdefault(mid, now)
        except Exception:
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(10)
    before: list[float] = []
    after: list[float] = []
    with DaemonClient(paths) as operator:
        operator.call_tool("register_agent", {"project_key": "bench", "program": "bench", "model": "human",
                                              "name": "HumanOperator"})
        for i in range(sends):
            t0 = time.perf_counter()
            result = operator.call_tool("send_message", {"project_key": "bench", "to": ["Agent01"],
                                                         "subject": f"live {i}", "body_md": "x"})
            t1 = time.perf_counter()
            mid = int(result["deliveries"][0]["payload"]["id"])
            deadline = time.monotonic() + 10
            while mid not in arrivals and time.monotonic() < deadline:
                time.sleep(0.0005)
            if mid in arrivals:
                before.append(arrivals[mid] - t0)
                after.append(max(0.0, arrivals[mid] - t1))
            time.sleep(0.02)
    if conn.sock is not None:
        conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    return {"send_start_to_event": summarise(before), "send_return_to_event": summarise(after),
            "events_missed": sends - len(before)}


def browser_latency(paths: MailboxPaths, port: int, sends: int) -> dict[str, Any]:
    """The same measure in headless Chromium: the page's own EventSource stamps each event with the
    browser's wall clock (same machine, same clock as the sender's)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from shared.weblogin import create_login_secret

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver_path is None:
        return {"skipped": "chromium / chromedriver not installed"}
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    samples: list[float] = []
    try:
        driver.get(f"http://127.0.0.1:{port}/mail/login?secret={create_login_secret(paths.state_dir)}")
        driver.get(f"http://127.0.0.1:{port}/mail/bench/inbox/Agent01")
        driver.execute_script("""
            window.__ev = {}; window.__es = new EventSource('/mail/events');
            window.__es.addEventListener('change', e => { for (const id of JSON.parse(e.data).message_ids)
                window.__ev[id] = performance.timeOrigin + performance.now(); });""")
        deadline = time.monotonic() + 10
        while driver.execute_script("return window.__es.readyState") != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with DaemonClient(paths) as operator:
            operator.call_tool("register_agent", {"project_key": "bench", "program": "bench", "model": "human",
                                                  "name": "HumanOperator"})
            for i in range(sends):
                t0 = time.time() * 1000
                result = operator.call_tool("send_message", {"project_key": "bench", "to": ["Agent01"],
                                                             "subject": f"browser {i}", "body_md": "x"})
                mid = str(result["deliveries"][0]["payload"]["id"])
                deadline = time.monotonic() + 10
                stamp = None
                while stamp is None and time.monotonic() < deadline:
                    stamp = driver.execute_script("return window.__ev[arguments[0]] || null", mid)
                    if stamp is None:
                        time.sleep(0.002)
                if stamp is not None:
                    samples.append(max(0.0, (float(stamp) - t0) / 1000))
                time.sleep(0.05)
    finally:
        driver.quit()
    return {"send_start_to_browser_event": summarise(samples), "events_missed": sends - len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 messages instead of 1,000,000")
    parser.add_argument("--messages", type=int, help="message count (overrides --quick)")
    parser.add_argument("--rounds", type=int, default=20, help="passes over each page set")
    parser.add_argument("--sends", type=int, default=200, help="messages sent while timing live events")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--keep", type=Path, help="reuse/keep the built mailbox at this root")
    args = parser.parse_args()
    os.environ["AGENT_MAIL_BACKEND"] = args.backend
    total = args.messages or (100_000 if args.quick else 1_000_000)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        paths = MailboxPaths(args.keep)
    else:
        paths = temp_mailbox("web")
    paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    build_figures: dict[str, Any] = {}
    if not paths.db.exists():
        print(f"building {total:,} messages in {paths.db}")
        build_figures = build(paths.db, total)
    port = free_port()
    paths.config_file.write_text(f'http_enabled = true\nhttp_port = {port}\nhttp_bearer_token = "{TOKEN}"\n'
                                 "archive_enabled = false\n")
    rng = random.Random(18)
    try:
        with DaemonClient(paths) as operator:
            operator.call_tool("health_check", {})
        wait_ready(port)
        threads = [f"/mail/bench/thread/T{rng.randrange(total // 4)}" for _ in range(20)]
        messages = [f"/mail/bench/message/{rng.randrange(1, total)}" for _ in range(20)]
        inboxes = [f"/mail/bench/inbox/Agent{rng.randrange(50):02d}" for _ in range(10)]
        figures: dict[str, Any] = {
            "backend": args.backend,
            "messages": total,
            "build": build_figures,
            "unified_inbox": time_pages(port, ["/mail"], args.rounds * 5),
            "agent_inbox": time_pages(port, inboxes, args.rounds),
            "thread": time_pages(port, threads, args.rounds),
            "message": time_pages(port, messages, args.rounds),
            "project": time_pages(port, ["/mail/bench"], args.rounds),
            "search": time_pages(port, [f"/mail/bench/search?q={quote(q)}" for q in SEARCHES], args.rounds),
            "search_mailbox_tool_same_queries": time_search_tool(paths, args.rounds),
            "attachments": attachment_pages(paths, port, args.rounds),
            "live": live_latency(paths, port, args.sends),
            "live_in_chromium": browser_latency(paths, port, max(10, args.sends // 4)),
        }
    finally:
        stop(paths)
    write_report("web" if total >= 1_000_000 else f"web-{total}", figures)


if __name__ == "__main__":
    main()
