"""Benchmark: `mailctl share export` of a large mailbox, and its viewer in headless Chromium.

Builds a mailbox of N messages (default 100,000, bench_search's text model) with 1,000 attachments
(900 small ones, inlined; 100 of 200 KiB, copied), exports it, then opens the bundle from file://
in Chromium: first contentful paint of index.html and of a thread page, and search answer times
(the first query includes loading its index shard). Then `share update` after adding --update
messages (half to existing threads, half new), against a full export of the same change. Exports
and updates run --runs times (median reported, with the load average). Targets (issue 19):
export <= 60 s on this 2-core machine, first paint <= 1 s, search <= 200 ms.

    python -m tests.bench.bench_share [--messages 100000] [--attachments 1000] [--update 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw

from maild.archive.blobs import BlobStore
from maild.store.db import format_ts
from maild.store.migrations import apply_migrations
from tests.bench.bench_search import TextMaker
from tests.bench.common import summarise, temp_mailbox, write_report

QUERIES = ["release", "database migration", "deploy", "pol", "tests failing", "refactor cache"]


def build(root: Path, total: int, attachments: int) -> None:
    import datetime as dt

    paths_db = root / ".mcp_mail" / "mail.sqlite3"
    paths_db.parent.mkdir(parents=True, exist_ok=True)
    blobs = BlobStore(root / ".mcp_mail" / "blobs")
    maker = TextMaker()
    rng = random.Random(19)
    conn = apsw.Connection(str(paths_db))
    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF")
    now = "2026-01-01T00:00:00.000000Z"
    apply_migrations(conn, str(paths_db), now)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with conn:
        project = conn.execute("INSERT INTO projects(slug, human_key, created_ts) VALUES ('bench', ?, ?) RETURNING id",
                               (str(root), now)).get
        agents = [conn.execute("INSERT INTO agents(project_id, name, inception_ts, last_active_ts)"
                               " VALUES (?, ?, ?, ?) RETURNING id", (project, f"Agent{i:02d}", now, now)).get
                  for i in range(50)]
        with_files = set(rng.sample(range(total), attachments))
        for i in range(total):
            atts: list[dict[str, Any]] = []
            if i in with_files:
                big = rng.random() < 0.1  # ~100 of 1,000: copied; the rest inlined
                data = os.urandom(200 * 1024 if big else 2048)
                sha = blobs.put(data)
                conn.execute("INSERT OR IGNORE INTO attachment_blobs(sha256, ext, media_type, bytes, created_ts)"
                             " VALUES (?, 'bin', 'application/octet-stream', ?, ?)", (sha, len(data), now))
                atts.append({"type": "file", "name": f"file{i}.bin", "sha256": sha, "bytes": len(data),
                             "media_type": "application/octet-stream",
                             "path": f"projects/bench/attachments/{sha[:2]}/{sha}.bin"})
            thread = f"T{i // 4}" if rng.random() < 0.6 else None
            mid = conn.execute(
                "INSERT INTO messages(project_id, sender_id, thread_id, subject, body_md, created_ts, attachments)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (project, rng.choice(agents), thread, maker.subject(), maker.body(),
                 format_ts(start + dt.timedelta(seconds=20 * i)), json.dumps(atts))).get
            for sha in [a["sha256"] for a in atts]:
                conn.execute("INSERT OR IGNORE INTO attachments(message_id, sha256, project_id) VALUES (?, ?, ?)",
                             (mid, sha, project))
            conn.execute("INSERT INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, 'to')",
                         (mid, rng.choice(agents)))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def add_messages(root: Path, count: int, seed: int) -> None:
    """`count` more messages, as agents keep writing: half into existing threads, half new threads."""
    import datetime as dt

    maker = TextMaker(seed=seed)
    rng = random.Random(seed)
    conn = apsw.Connection(str(root / ".mcp_mail" / "mail.sqlite3"))
    with conn:
        project, last = conn.execute("SELECT project_id, max(id) FROM messages").get
        agents = [r[0] for r in conn.execute("SELECT id FROM agents")]
        start = dt.datetime(2026, 6, 1, tzinfo=dt.UTC) + dt.timedelta(days=seed)
        for i in range(count):
            thread = f"T{rng.randrange(last // 4)}" if i % 2 == 0 else f"N{seed}-{i}"
            mid = conn.execute(
                "INSERT INTO messages(project_id, sender_id, thread_id, subject, body_md, created_ts, attachments)"
                " VALUES (?, ?, ?, ?, ?, ?, '[]') RETURNING id",
                (project, rng.choice(agents), thread, maker.subject(), maker.body(),
                 format_ts(start + dt.timedelta(seconds=i)))).get
            conn.execute("INSERT INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, 'to')",
                         (mid, rng.choice(agents)))
    conn.close()


CPU: list[float] = []  # CPU seconds (user + system) of each `share` run, its worker processes included


def share(root: Path, *args: str) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one `share` command (CPU seconds appended to CPU: less sensitive to the load)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "maild.share", "--root", str(root), "--json", *args],
                            capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, json.loads(result.stdout)


def chromium(bundle: Path) -> dict[str, Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    paint_js = ("return performance.getEntriesByType('paint').filter(e => e.name === 'first-contentful-paint')"
                ".map(e => e.startTime)[0] || null")
    try:
        paints: dict[str, list[float]] = {"index": [], "thread": []}
        thread_url = None
        for _ in range(5):
            driver.get("about:blank")  # a fresh navigation each time, so each load reports its own paint
            driver.get((bundle / "index.html").as_uri())
            paints["index"].append(driver.execute_script(paint_js))
            thread_url = driver.find_element(By.CSS_SELECTOR, "#threads a.thread").get_attribute("href")
        for _ in range(5):
            driver.get("about:blank")
            driver.get(thread_url)
            paints["thread"].append(driver.execute_script(paint_js))
        searches: dict[str, Any] = {}
        driver.get((bundle / "index.html").as_uri())
        for round_ in ("cold", "warm"):
            times = []
            for query in QUERIES:
                box = driver.find_element(By.ID, "q")
                box.clear()
                box.send_keys(query)
                driver.find_element(By.CSS_SELECTOR, "#search button").click()
                WebDriverWait(driver, 30, poll_frequency=0.01).until(
                    lambda d: d.find_element(By.ID, "results").get_attribute("data-done") == "1")
                times.append(float(driver.find_element(By.ID, "results").get_attribute("data-ms")))
            searches[round_] = dict(zip(QUERIES, times, strict=True))
        return {"first_paint_ms": {k: summarise([v / 1000 for v in vals if v]) for k, vals in paints.items()},
                "search_ms": searches,
                "search_max_ms": max(max(s.values()) for s in searches.values())}
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--attachments", type=int, default=1_000)
    parser.add_argument("--update", type=int, default=100, help="messages added before `share update`")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    paths = temp_mailbox("share")
    t0 = time.perf_counter()
    build(paths.root, args.messages, args.attachments)
    print(f"built {args.messages:,} messages in {time.perf_counter() - t0:.1f} s", flush=True)
    out = paths.root.parent / (paths.root.name + "-bundle")
    exports, export_cpu, loads = [], [], []
    for run in range(args.runs):
        shutil.rmtree(out, ignore_errors=True)
        loads.append(os.getloadavg()[0])
        export_s, result = share(paths.root, "export", "-o", str(out))
        exports.append(export_s)
        export_cpu.append(CPU[-1])
        print(f"export run {run + 1}: {export_s:.1f} s, {CPU[-1]:.1f} CPU s (load {loads[-1]:.1f})", flush=True)
    manifest = result["manifest"]
    files = manifest["files"]
    size = sum((out / rel).stat().st_size for rel in files)
    print(f"exported in {statistics.median(exports):.1f} s median ({len(files):,} files, {size / 1e6:.0f} MB)",
          flush=True)
    figures: dict[str, Any] = {
        "messages": args.messages, "attachments": args.attachments, "export_s": round(statistics.median(exports), 2),
        "export_runs_s": [round(x, 2) for x in exports], "export_cpu_s": round(statistics.median(export_cpu), 2),
        "export_target_s": 60, "bundle_files": len(files),
        "bundle_mb": round(size / 1e6, 1), "zip_mb": round(Path(str(out) + ".zip").stat().st_size / 1e6, 1),
        "attachment_stats": manifest["attachments"], "viewer": manifest["viewer"],
        "digest_of_config": hashlib.sha256(json.dumps(manifest["export_config"]).encode()).hexdigest()[:12],
    }
    if shutil.which("chromium") and shutil.which("chromedriver"):
        figures["chromium"] = chromium(out)
    updates, fulls, update_cpu, full_cpu = [], [], [], []
    fresh = paths.root.parent / (paths.root.name + "-fresh")
    for run in range(args.runs if args.update else 0):
        add_messages(paths.root, args.update, seed=run + 1)
        loads.append(os.getloadavg()[0])
        update_s, result = share(paths.root, "update", str(out))
        updates.append(update_s)
        update_cpu.append(CPU[-1])
        shutil.rmtree(fresh, ignore_errors=True)
        full_s, _ = share(paths.root, "export", "-o", str(fresh), "--no-zip")
        fulls.append(full_s)
        full_cpu.append(CPU[-1])
        print(f"update run {run + 1} (+{args.update} messages): {update_s:.1f} s ({update_cpu[-1]:.1f} CPU s), "
              f"{result['sync']}, {result['manifest']['viewer']['threads_rendered']} threads rendered; "
              f"full export of the same mailbox (no zip) {full_s:.1f} s ({full_cpu[-1]:.1f} CPU s)", flush=True)
    if updates:
        figures["update"] = {"added_messages": args.update, "update_s": round(statistics.median(updates), 2),
                             "update_runs_s": [round(x, 2) for x in updates],
                             "update_cpu_s": round(statistics.median(update_cpu), 2),
                             "full_export_no_zip_s": round(statistics.median(fulls), 2),
                             "full_export_no_zip_cpu_s": round(statistics.median(full_cpu), 2),
                             "last_sync": result["sync"],
                             "threads_rendered": result["manifest"]["viewer"]["threads_rendered"]}
    figures["load_average_1m"] = [round(x, 2) for x in loads]
    shutil.rmtree(fresh, ignore_errors=True)
    write_report("bench_share", figures)
    shutil.rmtree(paths.root, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    Path(str(out) + ".zip").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
