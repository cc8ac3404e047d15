"""Attachments end to end on a real daemon: every image format, refusals, path safety, dedup,
inline/file thresholds, visibility, the official MCP client seeing pixels, and the rebuild round trip.

One daemon per backend for the module (each test uses its own files and agents).
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from PIL import Image

from maild.archive.committer import head_files, read_blobs
from shared.errors import InvalidArgument, NotFound
from tests.conftest import BACKENDS, Mailbox, git_init

PROJECT = "/work/app"
SLUG = "work-app"


@pytest.fixture(scope="module", params=BACKENDS)
def box(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    mailbox = Mailbox(git_init(tmp_path_factory.mktemp("attach") / "repo"), str(request.param))
    (mailbox.root / ".mcp_mail").mkdir()
    (mailbox.root / ".mcp_mail" / "config.toml").write_text(
        "inline_image_max_bytes = 4096\nattachment_max_bytes = 200000\nattachment_message_max_bytes = 300000\n")
    try:
        yield mailbox
    finally:
        mailbox.stop()


class Agent:
    def __init__(self, box: Mailbox, name: str, project: str = PROJECT, policy: str = "auto") -> None:
        self.conn = box.client(hello={"session": f"s-{name}", "client": "test", "pid": 1})
        self.project = project
        self.name = self.conn.call_tool("register_agent", {"project_key": project, "program": "p", "model": "m",
                                                           "name": name, "attachments_policy": policy})["name"]

    def send(self, to: str, body: str = "see attached", **extra: Any) -> dict[str, Any]:
        result = self.conn.call_tool("send_message", {"project_key": self.project, "to": to, "subject": "pics",
                                                      "body_md": body, **extra})
        return {**result["deliveries"][0]["payload"], "warnings": result.get("warnings", [])}

    def blob(self, sha256: str) -> tuple[str, bytes]:
        result = self.conn.request("resources/read", {"uri": f"resource://attachment/{sha256}"})
        [part] = result["contents"]
        return part["mimeType"], base64.b64decode(part["blob"])


@pytest.fixture
def anyio_backend(box: Mailbox) -> str:
    return box.backend


@pytest.fixture(scope="module")
def pair(box: Mailbox) -> Iterator[tuple[Agent, Agent]]:
    a, b = Agent(box, "BlueLake"), Agent(box, "GreenCastle")
    yield a, b
    a.conn.close()
    b.conn.close()


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **save: Any) -> bytes:
    """Left half red, right half blue (RGBA: the right half fully transparent)."""
    image = Image.new(mode, size, (255, 0, 0, 255) if mode == "RGBA" else (255, 0, 0))
    right = (0, 0, 255, 0) if mode == "RGBA" else (0, 0, 255)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def noise_png(side: int, seed: int = 0) -> bytes:
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3) if seed == 0
                            else bytes((i * 7919 + seed) % 251 for i in range(side * side * 3)))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def write(box: Mailbox, name: str, data: bytes) -> str:
    path = box.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return name


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def close(pixel: Any, expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(int(p) - e) <= tolerance for p, e in zip(pixel, expected, strict=False))


def db_rows(box: Mailbox, sql: str) -> list[Any]:
    conn = apsw.Connection(str(box.paths.db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def wait_drained(box: Mailbox, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while box.call("health_check")["archive"]["queue_depth"]:
        assert time.monotonic() < deadline, "archive did not drain"
        time.sleep(0.05)


def test_every_image_format_becomes_webp_with_its_pixels(box: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    frames = [Image.new("RGB", (40, 30), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    files = {
        "shots/a.png": image_bytes("PNG"),
        "shots/b.jpg": image_bytes("JPEG", quality=95),
        "shots/c.webp": image_bytes("WEBP", quality=95),
        "shots/d.bmp": image_bytes("BMP"),
        "shots/e.tiff": image_bytes("TIFF"),
        "shots/f.gif": gif.getvalue(),
    }
    sent = a.send(b.name, attachment_paths=[write(box, name, data) for name, data in files.items()])
    metas = sent["attachments"]
    assert [m["name"] for m in metas] == [Path(n).name for n in files]
    for meta in metas[:5]:
        assert (meta["media_type"], meta["width"], meta["height"]) == ("image/webp", 64, 48), meta
        mime, data = b.blob(meta["sha256"])
        image = decode(data)
        assert (mime, image.format) == ("image/webp", "WEBP")
        assert close(image.getpixel((5, 20)), (255, 0, 0)), meta["name"]
        assert close(image.getpixel((60, 20)), (0, 0, 255)), meta["name"]
    gif_meta = metas[5]
    first = decode(b.blob(gif_meta["sha256"])[1])
    assert (gif_meta["width"], gif_meta["height"]) == (40, 30)
    assert close(first.getpixel((10, 10)), (255, 0, 0)), "an animated GIF keeps its first frame"
    assert getattr(first, "n_frames", 1) == 1


def test_alpha_is_kept_and_exif_orientation_applied_and_metadata_stripped(
    box: Mailbox, pair: tuple[Agent, Agent]
) -> None:
    a, b = pair
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "SpyCam"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0)}  # GPS
    rotated = image_bytes("JPEG", size=(80, 40), quality=95, exif=exif.tobytes())
    alpha = image_bytes("PNG", mode="RGBA")
    sent = a.send(b.name, attachment_paths=[write(box, "meta/photo.jpg", rotated), write(box, "meta/alpha.png", alpha)])
    photo, transparent = sent["attachments"]
    assert (photo["width"], photo["height"]) == (40, 80), "EXIF orientation 6 swaps the sides"
    image = decode(b.blob(photo["sha256"])[1])
    assert image.size == (40, 80)
    assert close(image.getpixel((20, 5)), (255, 0, 0)), "the left (red) half is now on top"
    assert not dict(image.getexif()), "EXIF (maker, GPS) is stripped"
    assert "exif" not in image.info
    assert b"SpyCam" not in b.blob(photo["sha256"])[1]
    image = decode(b.blob(transparent["sha256"])[1])
    assert image.mode == "RGBA"
    assert image.getpixel((60, 20))[3] == 0, "transparent stays transparent"
    assert image.getpixel((5, 20))[3] == 255


def bomb_png(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels whose compressed data is tiny."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    packer = zlib.compressobj(9)
    compressed = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", compressed) + chunk(b"IEND", b"")


def stored_state(box: Mailbox) -> tuple[int, int, list[Any]]:
    files = sorted(p.name for p in box.paths.blobs.rglob("*") if p.is_file()) if box.paths.blobs.exists() else []
    return (db_rows(box, "SELECT count(*) FROM attachment_blobs")[0][0],
            db_rows(box, "SELECT count(*) FROM messages")[0][0], files)


def test_a_bomb_and_a_truncated_png_are_refused_and_nothing_is_stored(
    box: Mailbox, pair: tuple[Agent, Agent]
) -> None:
    a, b = pair
    good = write(box, "bad/fine.png", noise_png(32))
    bomb = write(box, "bad/bomb.png", bomb_png())
    truncated = write(box, "bad/cut.png", noise_png(64)[:3000])
    before = stored_state(box)
    with pytest.raises(InvalidArgument, match=r"bomb\.png.*too large to decode"):
        a.send(b.name, attachment_paths=[good, bomb])
    with pytest.raises(InvalidArgument, match=r"cut\.png.*(corrupt|truncated)"):
        a.send(b.name, attachment_paths=[good, truncated])
    with pytest.raises(InvalidArgument, match=r"cut\.png"):
        a.send(b.name, body=f"![x]({truncated})")
    assert stored_state(box) == before, "no blob, no row, no message: not even the good file's"


def test_paths_that_leave_the_root_or_are_not_files_are_refused(
    box: Mailbox, pair: tuple[Agent, Agent], tmp_path: Path
) -> None:
    a, b = pair
    outside = tmp_path / "secret.png"
    outside.write_bytes(image_bytes("PNG"))
    (box.root / "links").mkdir(exist_ok=True)
    (box.root / "links" / "out.png").symlink_to(outside)
    (box.root / "links" / "in.png").symlink_to(box.root / write(box, "links/real.png", image_bytes("PNG")))
    os.mkfifo(box.root / "links" / "pipe")
    escape = os.path.relpath(outside, box.root)
    cases = {
        "links/out.png": "symlink that leaves the repository root",
        escape: r"leaves the repository root \(\.\.\)",
        str(outside): "absolute path",
        "links": "is a directory",
        "links/pipe": "not a regular file",
        "links/missing.png": "does not exist",
        ".mcp_mail/mail.sqlite3": r"inside \.mcp_mail/ or \.git/",
        ".git/config": r"inside \.mcp_mail/ or \.git/",
    }
    for path, why in cases.items():
        with pytest.raises(InvalidArgument, match=why) as caught:
            a.send(b.name, attachment_paths=[path])
        assert caught.value.data["path"] == path
    with pytest.raises(InvalidArgument, match="symlink that leaves"):
        a.send(b.name, body="![x](links/out.png)")
    inside = a.send(b.name, attachment_paths=["links/in.png"])
    assert inside["attachments"][0]["media_type"] == "image/webp", "a symlink inside the root is fine"
    missing = a.send(b.name, body="look: ![chart](docs/nope.png) and ![web](https://example.com/x.png)")
    assert missing["body_md"] == "look: ![chart](docs/nope.png) and ![web](https://example.com/x.png)"
    assert missing["attachments"] == []
    assert missing["warnings"] == ["image 'docs/nope.png' in body_md does not exist; left as it is"]


def test_size_limits_per_file_and_per_message(box: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair  # the module's config: 200,000 bytes a file, 300,000 a message
    big = write(box, "size/big.bin", b"\x00" * 200_001)
    with pytest.raises(InvalidArgument, match="ATTACHMENT_MAX_BYTES"):
        a.send(b.name, attachment_paths=[big])
    halves = [write(box, f"size/part{i}.bin", bytes([i]) * 160_000) for i in range(2)]
    with pytest.raises(InvalidArgument, match="ATTACHMENT_MESSAGE_MAX_BYTES"):
        a.send(b.name, attachment_paths=halves)
    [meta] = a.send(b.name, attachment_paths=halves[:1])["attachments"]
    assert (meta["media_type"], meta["bytes"], meta["type"]) == ("application/octet-stream", 160_000, "file")


def test_the_same_image_twice_is_one_blob_in_the_store_and_the_archive(
    box: Mailbox, pair: tuple[Agent, Agent]
) -> None:
    a, b = pair
    path = write(box, "dup/shot.png", noise_png(48, seed=3))
    copy = write(box, "dup/copy-of-shot.png", (box.root / path).read_bytes())
    first = a.send(b.name, attachment_paths=[path])["attachments"][0]
    second = a.send(b.name, body=f"again ![s]({copy})", attachment_paths=[path])["attachments"]
    assert {m["sha256"] for m in second} == {first["sha256"]}
    assert db_rows(box, f"SELECT count(*) FROM attachment_blobs WHERE sha256 = '{first['sha256']}'") == [(1,)]
    assert db_rows(box, f"SELECT count(*) FROM attachments WHERE sha256 = '{first['sha256']}'") == [(2,)]
    wait_drained(box)
    archived = [p for p in head_files(box.paths.archive) if first["sha256"] in p]
    assert archived == [first["path"]] == [f"projects/{SLUG}/attachments/{first['sha256'][:2]}/{first['sha256']}.webp"]
    assert list(box.paths.blobs.rglob(first["sha256"])) == [box.paths.blobs / first["sha256"][:2] / first["sha256"]]


def test_inline_and_file_thresholds_and_policies(box: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair  # the module's config sets INLINE_IMAGE_MAX_BYTES to 4096
    small = write(box, "th/small.png", image_bytes("PNG", size=(16, 16)))
    big = write(box, "th/big.png", noise_png(96, seed=5))
    sent = a.send(b.name, body=f"small ![s]({small}) big ![b]({big})")
    tiny, large = sent["attachments"]
    assert tiny["type"] == "inline"
    assert tiny["bytes"] <= 4096
    assert base64.b64decode(tiny["data_base64"]) == b.blob(tiny["sha256"])[1]
    assert large["type"] == "file"
    assert large["bytes"] > 4096
    assert "data_base64" not in large
    assert sent["body_md"] == f"small ![s](data:image/webp;base64,{tiny['data_base64']}) big ![b]({large['path']})"
    filer = Agent(box, "FileOnly", policy="file")
    assert filer.send(b.name, attachment_paths=[small], convert_images=False)["attachments"][0]["type"] == "file", (
        "policy file: never inline, and conversion is forced")
    inliner = Agent(box, "InlineAll", policy="inline")
    forced = inliner.send(b.name, attachment_paths=[big])["attachments"][0]
    assert (forced["type"], forced["media_type"]) == ("inline", "image/webp")
    as_is = a.send(b.name, attachment_paths=[small], convert_images=False)["attachments"][0]
    assert (as_is["media_type"], as_is["type"]) == ("image/png", "inline")
    assert b.blob(as_is["sha256"])[1] == (box.root / small).read_bytes()
    notes = write(box, "th/notes.png", b"plain text pretending to be a png\n")
    text = a.send(b.name, attachment_paths=[notes])["attachments"][0]
    assert (text["media_type"], text["type"], text["path"].rsplit(".", 1)[1]) == ("text/plain", "file", "txt"), (
        "the media type comes from the content, not the extension")
    for agent in (filer, inliner):
        agent.conn.close()


def test_only_readers_of_a_carrying_message_may_read_an_attachment(box: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    meta = a.send(b.name, attachment_paths=[write(box, "vis/x.png", noise_png(20, seed=9))])["attachments"][0]
    outsider = Agent(box, "FarAway", project="/elsewhere")
    with pytest.raises(NotFound):
        outsider.blob(meta["sha256"])
    with pytest.raises(NotFound):
        outsider.blob("0" * 64)
    with pytest.raises(InvalidArgument, match="64 hex"):
        b.blob("not-a-sha")
    assert a.blob(meta["sha256"])[1] == b.blob(meta["sha256"])[1]
    outsider.conn.close()


@pytest.mark.anyio
async def test_a_multimodal_client_sees_the_same_pixels(box: Mailbox, pair: tuple[Agent, Agent]) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    a, _ = pair
    source = Image.new("RGB", (30, 20), (10, 200, 30))
    source.paste((250, 250, 10), (0, 0, 10, 10))
    raw = io.BytesIO()
    source.save(raw, "PNG")
    params = StdioServerParameters(command=sys.executable, args=["-m", "mailctl", "mcp"], env=box.env,
                                   cwd=str(box.root))
    async with Client(params, mode="legacy") as client:  # type: ignore[arg-type]
        await client.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m",
                                                  "name": "Viewer"})
        sent = a.send("Viewer", attachment_paths=[write(box, "mm/pic.png", raw.getvalue())])
        meta = sent["attachments"][0]
        inbox = await client.call_tool("fetch_inbox", {"project_key": PROJECT, "include_attachments": True})
        assert not inbox.is_error
        [image_block] = [c for c in inbox.content if c.type == "image"]
        assert image_block.mime_type == "image/webp"
        seen = decode(base64.b64decode(image_block.data))
        stored = decode(a.blob(meta["sha256"])[1])
        assert seen.size == (30, 20)
        assert seen.tobytes() == stored.tobytes(), "the very pixels stored"
        assert close(seen.getpixel((3, 3)), (250, 250, 10), 20)
        assert close(seen.getpixel((25, 15)), (10, 200, 30), 20)
        message = await client.read_resource(f"resource://message/{sent['id']}?include_attachments=true")
        text, blob = message.contents
        assert json.loads(text.text)["id"] == sent["id"]  # type: ignore[union-attr]
        assert blob.mime_type == "image/webp"
        assert base64.b64decode(blob.blob) == base64.b64decode(image_block.data)  # type: ignore[union-attr]
        plain = await client.call_tool("fetch_inbox", {"project_key": PROJECT})
        assert [c.type for c in plain.content] == ["text"], "images only when asked for"
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert "attachment_paths" in tools["send_message"].input_schema["properties"]


def test_the_cli_attaches_and_gets_files(box: Mailbox, pair: tuple[Agent, Agent], tmp_path: Path) -> None:
    _, b = pair
    write(box, "cli/diagram.png", image_bytes("PNG"))
    sent = box.mailctl("send", b.name, "diagram", "see it", "--attach", "cli/diagram.png", "--attach",
                       "cli/diagram.png", "--json")
    [meta] = json.loads(sent.stdout)["deliveries"][0]["payload"]["attachments"]
    out = tmp_path / "got.webp"
    box.mailctl("attachment", "get", meta["sha256"], "-o", str(out))
    assert out.read_bytes() == b.blob(meta["sha256"])[1]
    refused = box.mailctl("send", b.name, "x", "y", "--attach", "cli/none.png", check=False)
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT" in refused.stderr


def test_reply_carries_attachments(box: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    first = a.send(b.name)
    reply = b.conn.call_tool("reply_message", {"project_key": PROJECT, "message_id": first["id"], "body_md": "fixed",
                                               "attachment_paths": [write(box, "re/after.png", image_bytes("PNG"))]})
    assert reply["attachments"][0]["media_type"] == "image/webp"
    assert a.blob(reply["attachments"][0]["sha256"])[0] == "image/webp"


def test_rebuild_restores_attachments(box: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    meta = a.send(b.name, attachment_paths=[write(box, "rb/keep.png", noise_png(40, seed=11))])["attachments"][0]
    wait_drained(box)
    a.conn.close()
    b.conn.close()
    box.stop()
    links_before = db_rows(box, "SELECT message_id, sha256, project_id FROM attachments ORDER BY 1, 2")
    blobs_before = db_rows(box, "SELECT sha256, ext, media_type, bytes, width, height FROM attachment_blobs ORDER BY 1")
    stored = (box.paths.blobs / meta["sha256"][:2] / meta["sha256"]).read_bytes()
    for path in box.paths.blobs.rglob("*"):
        if path.is_file():
            path.unlink()
    box.mailctl("doctor", "--rebuild", "--yes")
    assert db_rows(box, "SELECT message_id, sha256, project_id FROM attachments ORDER BY 1, 2") == links_before
    assert db_rows(box, "SELECT sha256, ext, media_type, bytes, width, height FROM attachment_blobs "
                        "ORDER BY 1") == blobs_before
    assert (box.paths.blobs / meta["sha256"][:2] / meta["sha256"]).read_bytes() == stored
    archived = read_blobs(box.paths.archive, [meta["path"]])[meta["path"]]
    assert archived == stored
    out = box.root / "rb" / "out.webp"
    box.mailctl("attachment", "get", meta["sha256"], "-o", str(out))  # the operator may read any message
    assert out.read_bytes() == stored
