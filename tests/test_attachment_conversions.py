"""Deferred image conversion on a real daemon: a large image is answered at once as it is
(`"conversion": "pending"`), then swapped to its WebP in every message carrying it; the original's
address keeps answering; one image sent many times is one converted blob; an image the encoder
cannot take stays as it is; a daemon killed mid-conversion finishes the work on restart.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from maild.archive.committer import head_files, read_blobs
from tests.conftest import BACKENDS, Mailbox, git_init
from tests.test_attachments import Agent, db_rows, decode, wait_drained, write

PROJECT = "/work/app"


@pytest.fixture(scope="module", params=BACKENDS)
def box(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    mailbox = Mailbox(git_init(tmp_path_factory.mktemp("convert") / "repo"), str(request.param))
    try:
        yield mailbox
    finally:
        mailbox.stop()


@pytest.fixture(scope="module")
def pair(box: Mailbox) -> Iterator[tuple[Agent, Agent]]:
    a, b = Agent(box, "BlueLake"), Agent(box, "GreenCastle")
    yield a, b
    a.conn.close()
    b.conn.close()


def picture(width: int, height: int, seed: int) -> bytes:
    """A UI-like PNG (blocks on a light background) over 128 x 128 pixels: deferred, not inline."""
    image = Image.new("RGB", (width, height), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        x, y = (i * 37 + seed * 11) % width, (i * 23 + seed * 7) % height
        draw.rectangle([x, y, x + width // 5, y + height // 6], fill=((i * 50 + seed) % 256, 90, 200))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def message(agent: Agent, message_id: int) -> dict[str, Any]:
    result = agent.conn.request("resources/read", {"uri": f"resource://message/{message_id}"})
    parsed: dict[str, Any] = json.loads(result["contents"][0]["text"])
    return parsed


def settled(agent: Agent, message_id: int, timeout: float = 60) -> dict[str, Any]:
    """The message once no attachment of it is pending any more."""
    deadline = time.monotonic() + timeout
    while True:
        found = message(agent, message_id)
        if all(m.get("conversion") != "pending" for m in found["attachments"]):
            return found
        assert time.monotonic() < deadline, f"conversion still pending after {timeout} s: {found['attachments']}"
        time.sleep(0.05)


def blob_files(box: Mailbox) -> set[str]:
    return {p.name for p in box.paths.blobs.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")}


def test_a_large_image_answers_at_once_as_it_is_then_becomes_webp_everywhere(
    box: Mailbox, pair: tuple[Agent, Agent]
) -> None:
    a, b = pair
    png = picture(400, 300, 1)
    original = hashlib.sha256(png).hexdigest()
    sent = a.send(b.name, body="before ![shot](big/shot.png)", attachment_paths=[write(box, "big/shot.png", png)])
    [meta] = sent["attachments"]
    assert (meta["conversion"], meta["media_type"], meta["sha256"], meta["type"]) == (
        "pending", "image/png", original, "file"), "the send answers before the encode, with the original"
    assert (meta["width"], meta["height"], meta["bytes"]) == (400, 300, len(png))
    assert sent["body_md"] == f"before ![shot]({meta['path']})"
    mime, data = b.blob(original)  # never a broken reference: the original, or already its WebP
    assert (mime == "image/png" and data == png) or mime == "image/webp"
    done = settled(b, sent["id"])
    [final] = done["attachments"]
    assert "conversion" not in final
    assert (final["media_type"], final["width"], final["height"], final["type"]) == ("image/webp", 400, 300, "file")
    assert final["path"].endswith(f"/{final['sha256']}.webp")
    assert done["body_md"] == f"before ![shot]({final['path']})", "the body's reference follows the swap"
    mime, webp = b.blob(final["sha256"])
    assert (mime, decode(webp).size) == ("image/webp", (400, 300))
    assert hashlib.sha256(webp).hexdigest() == final["sha256"]
    assert len(webp) == final["bytes"]
    assert b.blob(original) == ("image/webp", webp), "the original's address answers with what mail carries now"
    assert original not in blob_files(box), "the original is dropped (KEEP_ORIGINAL_IMAGES is off)"
    assert db_rows(box, f"SELECT count(*) FROM attachment_blobs WHERE sha256 = '{original}'") == [(0,)]
    assert db_rows(box, f"SELECT sha256 FROM attachments WHERE message_id = {sent['id']}") == [(final["sha256"],)]
    inbox = b.conn.call_tool("fetch_inbox", {"project_key": PROJECT, "limit": 50})
    [listed] = [m for m in inbox["result"] if m["id"] == sent["id"]]
    assert listed["attachments"] == [final]
    wait_drained(box)
    files = head_files(box.paths.archive)
    assert final["path"] in files
    assert not [p for p in files if original in p], "a pending original never reaches the archive"
    [stored] = [p for p in files if p.startswith("projects/work-app/messages/") and p.endswith(f"__{sent['id']}.md")]
    text = read_blobs(box.paths.archive, [stored])[stored].decode()
    assert final["sha256"] in text, "the archive's copy of the message is rewritten"
    assert original not in text
    assert "conversion" not in text


def test_one_image_in_many_messages_is_one_converted_blob(box: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    png = picture(320, 240, 2)
    original = hashlib.sha256(png).hexdigest()
    path = write(box, "many/logo.png", png)
    ids = [a.send(b.name, attachment_paths=[path])["id"] for _ in range(12)]
    finals = {settled(b, i)["attachments"][0]["sha256"] for i in ids}
    assert len(finals) == 1
    [webp] = finals
    again = a.send(b.name, attachment_paths=[path])["attachments"][0]
    assert (again["sha256"], again.get("conversion")) == (webp, None), "converted before: no wait, no new encode"
    assert {webp} <= blob_files(box)
    assert original not in blob_files(box)
    assert db_rows(box, f"SELECT count(*) FROM attachments WHERE sha256 = '{webp}'") == [(13,)]
    assert db_rows(box, f"SELECT status, converted_sha256 FROM attachment_conversions WHERE original_sha256 = "
                        f"'{original}'") == [("done", webp)]


def test_an_image_the_encoder_cannot_take_stays_as_it_is(box: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    image = Image.new("RGB", (16_400, 4), (10, 20, 30))  # WebP's limit is 16,383 pixels a side
    out = io.BytesIO()
    image.save(out, "PNG")
    sent = a.send(b.name, attachment_paths=[write(box, "wide/strip.png", out.getvalue())])
    deadline = time.monotonic() + 60
    while (meta := message(b, sent["id"])["attachments"][0]).get("conversion") == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (meta["conversion"], meta["media_type"], meta["width"]) == ("failed", "image/png", 16_400)
    assert b.blob(meta["sha256"]) == ("image/png", out.getvalue()), "the original stays readable"
    wait_drained(box)
    assert meta["path"] in head_files(box.paths.archive), "a kept original is archived"


def big_picture() -> bytes:
    """1280 x 720 and detailed: seconds of libwebp at method 6, so a kill lands mid-conversion."""
    image = Image.effect_noise((1280, 720), 80).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def wait_dead(pid: int, timeout: float = 10) -> None:
    """Until the killed process is gone or a zombie whose every thread has exited: the leader turns
    zombie first, and the open files (the listening socket) close with the last thread."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states = [(task / "stat").read_text() for task in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            return
        if all(stat[stat.rindex(")") + 2] in "ZX" for stat in states) and len(states) <= 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} survived SIGKILL")


@pytest.mark.slow
def test_a_daemon_killed_mid_conversion_finishes_on_restart(tmp_path: Any) -> None:
    box = Mailbox(git_init(tmp_path / "repo"), BACKENDS[0])
    (box.root / ".mcp_mail").mkdir()
    (box.root / ".mcp_mail" / "config.toml").write_text("keep_original_images = true\n")
    try:
        a, b = Agent(box, "BlueLake"), Agent(box, "GreenCastle")
        png = big_picture()
        original = hashlib.sha256(png).hexdigest()
        sent = a.send(b.name, attachment_paths=[write(box, "crash/shot.png", png)])
        status = box.status()
        assert status is not None
        os.kill(status["pid"], signal.SIGKILL)
        a.conn.close()
        b.conn.close()
        assert sent["attachments"][0]["conversion"] == "pending"
        assert db_rows(box, "SELECT status FROM attachment_conversions") == [("pending",)], (
            "precondition: the kill came before the conversion finished")
        wait_dead(int(status["pid"]))
        b = Agent(box, "GreenCastle")  # starts a new daemon, which resumes the pending conversion
        final = settled(b, sent["id"], timeout=120)["attachments"][0]
        assert (final["media_type"], final["original_sha256"], final["original_media_type"]) == (
            "image/webp", original, "image/png")
        assert b.blob(original) == ("image/png", png), "KEEP_ORIGINAL_IMAGES keeps the original readable"
        assert decode(b.blob(final["sha256"])[1]).size == (1280, 720)
        assert {original, final["sha256"]} <= blob_files(box)

        # Killed again while an image is pending, and the database rebuilt from the archive: the
        # archive's front matter says "pending", so the rebuilt daemon converts it too.
        later = b.send(a.name, attachment_paths=[write(box, "crash/later.png", big_picture())])
        wait_drained(box)
        status = box.status()
        assert status is not None
        os.kill(status["pid"], signal.SIGKILL)
        b.conn.close()
        assert db_rows(box, f"SELECT status FROM attachment_conversions WHERE original_sha256 = "
                            f"'{later['attachments'][0]['sha256']}'") == [("pending",)], "precondition"
        wait_dead(int(status["pid"]))
        box.mailctl("doctor", "--rebuild", "--yes")
        b = Agent(box, "GreenCastle")
        assert settled(b, later["id"], timeout=120)["attachments"][0]["media_type"] == "image/webp"
        b.conn.close()
    finally:
        box.stop()


def test_doctor_checks_blobs_against_the_database_and_fixes_what_the_archive_has(
    box: Mailbox, pair: tuple[Agent, Agent]
) -> None:
    a, b = pair
    lost, broken = (a.send(b.name, attachment_paths=[write(box, f"doc/{name}.txt", f"{name} notes\n".encode())])
                    ["attachments"][0]["sha256"] for name in ("lost", "broken"))
    wait_drained(box)
    (box.paths.blobs / lost[:2] / lost).unlink()
    (box.paths.blobs / broken[:2] / broken).write_bytes(b"BROKEN notes\n")  # same size, other content
    stale, fresh = box.paths.blobs / "ab" / ("ab" + "0" * 62), box.paths.blobs / "cd" / ".tmp-in-flight"
    for orphan in (stale, fresh):
        orphan.parent.mkdir(exist_ok=True)
        orphan.write_bytes(b"left behind")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    checked = box.mailctl("doctor", "--json", check=False)
    report = json.loads(checked.stdout)["blobs"]
    assert checked.returncode == 1
    assert (report["missing"], report["corrupt"], report["orphans"]) == ([lost], [broken], [f"ab/{stale.name}"])
    assert report["recent_unlinked_files"] == 1, "a file younger than an hour may be a send in flight"
    human = box.mailctl("doctor", check=False).stdout
    assert "missing: 1, content not matching its sha256: 1" in human
    assert "run `mailctl doctor --fix` to copy them back from the archive" in human
    assert "run `mailctl doctor --fix` to delete them" in human

    fixed = json.loads(box.mailctl("doctor", "--fix", "--json", check=False).stdout)["blobs"]["fixed"]
    assert fixed == {"restored": 2, "orphans_removed": 1, "unrecoverable": []}
    assert (box.paths.blobs / broken[:2] / broken).read_bytes() == b"broken notes\n"
    assert b.blob(lost) == ("text/plain", b"lost notes\n")
    assert not stale.exists()
    assert fresh.exists()
    assert json.loads(box.mailctl("doctor", "--json", check=False).stdout)["blobs"]["ok"]
    fresh.unlink()
