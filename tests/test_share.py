"""`mailctl share` / `mailctl archive` on a real mailbox: scrub presets, attachments, manifest,
signature and tamper detection, age round trips, chunking, update pruning, archive save/restore.

One daemon for the module (client-side commands; the backend does not matter). Every export reads
the live database through the backup API while that daemon is running.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maild.share import bundle, scrub, viewer
from maild.share.output import Output
from tests.conftest import Mailbox, git_init

GHP = "ghp_" + "A1b2C3d4" * 5
SECRETS = {
    "github": GHP,
    "github_pat": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstu",
    "slack": "xoxb-1234567890-abcdefghij",
    "openai": "sk-" + "Zz9" * 9,
    "bearer": "Bearer abcdefghijklmnop1234",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabcdef==\n-----END RSA PRIVATE KEY-----",
    "env": "DATABASE_PASSWORD=hunter2-very-secret",
}
SMALL = b"tiny text attachment\n"
LARGE = bytes(range(256)) * 400  # 100 KiB: above the 64 KiB inline threshold, so copied


def mailctl(box: Mailbox, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return box.mailctl(*args, check=check, timeout=120)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    mb = Mailbox(git_init(tmp_path_factory.mktemp("share") / "repo"), "asyncio")
    try:
        project = str(mb.root)
        tokens = {name: mb.call("register_agent", project_key=project, program="codex", model="gpt-5", name=name,
                                task_description=f"deploys with {SECRETS['aws']}")["registration_token"]
                  for name in ("BlueLake", "GreenHill")}
        (mb.root / "notes.txt").write_bytes(SMALL)
        (mb.root / "blob.bin").write_bytes(LARGE)
        body = "Secrets follow:\n\n" + "\n\n".join(f"{k}: {v}" if k not in ("pem", "env") else v
                                                  for k, v in SECRETS.items())
        mb.call("send_message", project_key=project, sender_name="BlueLake", sender_token=tokens["BlueLake"],
                to=["GreenHill"], subject=f"Deploy key {GHP}", body_md=body, thread_id="deploy",
                ack_required=True, attachment_paths=["notes.txt", "blob.bin"])
        mb.call("send_message", project_key=project, sender_name="GreenHill", sender_token=tokens["GreenHill"],
                to=["BlueLake"], subject="Re: Deploy key", body_md="Rotated. **Thanks**", thread_id="deploy")
        mb.call("file_reservation_paths", project_key=project, agent_name="GreenHill",
                registration_token=tokens["GreenHill"], paths=["src/**"], ttl_seconds=600)
        other = "/work/other-project"
        token = mb.call("register_agent", project_key=other, program="codex", model="gpt-5",
                        name="RedStone")["registration_token"]
        mb.call("register_agent", project_key=other, program="codex", model="gpt-5", name="WhiteFox")
        mb.call("send_message", project_key=other, sender_name="RedStone", sender_token=token, to=["WhiteFox"],
                subject="Other project only", body_md="not in the scoped export")
        yield mb
    finally:
        mb.stop()


def slug_of(box: Mailbox) -> str:
    db = sqlite3.connect(f"file:{box.paths.db}?mode=ro", uri=True)
    try:
        return str(db.execute("SELECT slug FROM projects WHERE human_key = ?", (str(box.root),)).fetchone()[0])
    finally:
        db.close()


def export(box: Mailbox, out: Path, *extra: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(mailctl(box, "share", "export", "-o", str(out), "--json", *extra).stdout)
    return result


def db_rows(bundle_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{bundle_dir / 'mailbox.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_every_secret_pattern_is_redacted() -> None:
    for name, secret in SECRETS.items():
        text, count = scrub.redact(f"before\n{secret}\nafter")
        assert count >= 1, name
        assert "[REDACTED]" in text, name
        secret_part = secret.split("=", 1)[1] if name == "env" else secret
        assert secret_part not in text, name
    assert scrub.redact("DATABASE_PASSWORD=x")[0] == "DATABASE_PASSWORD=[REDACTED]"
    assert scrub.redact("an ordinary sentence about sk-learn and tokens")[1] == 0
    assert scrub.redact("DATABASE_PA\u017fSWORD=x")[1] == 1  # the regex's case folding, not skipped by the hints


def test_standard_export_scrubs_scopes_and_places_attachments(box: Mailbox, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = export(box, out, "--project", str(box.root))
    manifest = result["manifest"]
    assert manifest["project_scope"] == [slug_of(box)]
    assert manifest["scrub"]["preset"] == "standard"
    assert manifest["scrub"]["secrets_redacted"] >= len(SECRETS) + 1
    assert manifest["attachments"]["inline"] == 1
    assert manifest["attachments"]["copied"] == 1
    subjects = [r[0] for r in db_rows(out, "SELECT subject FROM messages ORDER BY id")]
    assert subjects == ["Deploy key [REDACTED]", "Re: Deploy key"]
    [(body_md, ack)] = db_rows(out, "SELECT body_md, ack_required FROM messages ORDER BY id LIMIT 1")
    for name, secret in SECRETS.items():
        assert (secret.split("=", 1)[1] if name == "env" else secret) not in body_md, name
    assert ack == 0
    assert db_rows(out, "SELECT count(*) FROM file_reservations") == [(0,)]
    assert db_rows(out, "SELECT count(*) FROM message_recipients WHERE read_ts IS NOT NULL") == [(0,)]
    assert db_rows(out, "SELECT count(*) FROM projects") == [(1,)]  # the other project is gone
    assert db_rows(out, "SELECT count(*) FROM agents WHERE token_hash IS NOT NULL") == [(0,)]
    assert db_rows(out, "SELECT task_description FROM agents WHERE name = 'BlueLake'") == [("deploys with [REDACTED]",)]
    copied = [p for p in bundle.bundle_files(out) if p.startswith("attachments/")]
    assert len(copied) == 1
    assert (out / copied[0]).read_bytes() == LARGE
    for name in ("manifest.json", "README.md", "HOW_TO_DEPLOY.md", "_headers", ".nojekyll", "index.html"):
        assert (out / name).is_file(), name
    with zipfile.ZipFile(result["zip"]) as archive:
        assert set(archive.namelist()) == set(bundle.bundle_files(out))
    [thread_page] = [p for p in bundle.bundle_files(out) if p.startswith("t/")]  # scoped: one thread
    page = (out / thread_page).read_text()
    [link] = re.findall(r'href="(\.\./\.\./attachments/[^"]+)"', page)
    assert ((out / thread_page).parent / link).resolve().read_bytes() == LARGE  # the page's link resolves
    assert "data:text/plain;base64," in page  # the small one is inlined
    assert "<strong>Thanks</strong>" in page
    assert GHP not in page
    assert mailctl(box, "share", "verify", str(out)).returncode == 0


def test_strict_drops_bodies_and_attachments_and_archive_keeps_everything(box: Mailbox, tmp_path: Path) -> None:
    strict = export(box, tmp_path / "strict", "--scrub-preset", "strict", "--no-zip")
    assert {r[0] for r in db_rows(tmp_path / "strict", "SELECT body_md FROM messages")} == {scrub.BODY_REDACTED}
    assert db_rows(tmp_path / "strict", "SELECT count(*) FROM attachments") == [(0,)]
    assert strict["manifest"]["attachments"]["copied"] == 0
    assert "zip" not in strict
    export(box, tmp_path / "archive", "--scrub-preset", "archive", "--no-zip")
    live = sqlite3.connect(f"file:{box.paths.db}?mode=ro", uri=True)
    try:
        original = live.execute("SELECT subject, body_md, ack_required FROM messages ORDER BY id").fetchall()
    finally:
        live.close()
    assert db_rows(tmp_path / "archive", "SELECT subject, body_md, ack_required FROM messages ORDER BY id") == original
    assert db_rows(tmp_path / "archive", "SELECT count(*) FROM file_reservations") == [(1,)]
    assert db_rows(tmp_path / "archive", "SELECT count(*) FROM agents WHERE token_hash IS NOT NULL") != [(0,)]


def test_signed_bundle_verifies_and_tampering_names_the_file(box: Mailbox, tmp_path: Path) -> None:
    key = tmp_path / "share.key"
    public = json.loads(mailctl(box, "share", "keygen", str(key), "--json").stdout)["public_key"]
    out = tmp_path / "signed"
    result = export(box, out, "--signing-key", str(key), "--no-zip")
    assert result["signed"]
    assert result["public_key"] == public
    report = json.loads(mailctl(box, "share", "verify", str(out), "--public-key", public, "--json").stdout)
    assert report["signature_verified"]
    assert report["files_checked"] > 5

    other = tmp_path / "other.key"
    mailctl(box, "share", "keygen", str(other))
    wrong = json.loads(mailctl(box, "share", "keygen", str(tmp_path / "x.key"), "--json").stdout)["public_key"]
    bad = mailctl(box, "share", "verify", str(out), "--public-key", wrong, check=False)
    assert bad.returncode == 1
    assert "manifest.sig.json" in bad.stderr
    assert "VERIFICATION_FAILED" in bad.stderr

    page = next(p for p in bundle.bundle_files(out) if p.startswith("t/") and b"Thanks" in (out / p).read_bytes())
    original = (out / page).read_bytes()
    (out / page).write_bytes(original.replace(b"Thanks", b"Thank"))
    tampered = mailctl(box, "share", "verify", str(out), check=False)
    assert tampered.returncode == 1
    assert page in tampered.stderr
    (out / page).write_bytes(original)
    (out / "viewer" / "extra.js").write_text("alert(1)")
    added = mailctl(box, "share", "verify", str(out), check=False)
    assert added.returncode == 1
    assert "viewer/extra.js: not listed" in added.stderr
    (out / "viewer" / "extra.js").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["project_scope"] = ["forged"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    forged = mailctl(box, "share", "verify", str(out), check=False)
    assert forged.returncode == 1
    assert "signature does not match" in forged.stderr


def test_age_round_trips_with_a_recipient_and_a_passphrase(box: Mailbox, tmp_path: Path) -> None:
    identity = tmp_path / "age.txt"
    recipient = json.loads(mailctl(box, "share", "keygen", "--age", str(identity), "--json").stdout)["recipient"]
    result = export(box, tmp_path / "enc", "--age-recipient", recipient)
    sealed = Path(result["encrypted"])
    assert sealed.name == "enc.zip.age"
    assert not (tmp_path / "enc.zip").exists()
    mailctl(box, "share", "decrypt", str(sealed), "-i", str(identity), "-o", str(tmp_path / "plain.zip"))
    with zipfile.ZipFile(tmp_path / "plain.zip") as archive:
        assert "manifest.json" in archive.namelist()

    stranger = tmp_path / "stranger.txt"
    mailctl(box, "share", "keygen", "--age", str(stranger))
    wrong = mailctl(box, "share", "decrypt", str(sealed), "-i", str(stranger), check=False)
    assert wrong.returncode == 1
    assert "DECRYPTION_FAILED" in wrong.stderr
    assert "another key" in wrong.stderr

    sealed2 = Path(export(box, tmp_path / "pw", "--age-passphrase", "correct horse")["encrypted"])
    mailctl(box, "share", "decrypt", str(sealed2), "-p", "correct horse", "-o", str(tmp_path / "pw.zip"))
    assert zipfile.is_zipfile(tmp_path / "pw.zip")
    bad = mailctl(box, "share", "decrypt", str(sealed2), "-p", "wrong horse", check=False)
    assert bad.returncode == 1
    assert "DECRYPTION_FAILED" in bad.stderr


@pytest.mark.parametrize("extra", [0, 1])
def test_chunking_at_its_boundaries(box: Mailbox, tmp_path: Path, extra: int) -> None:
    probe = export(box, tmp_path / "probe", "--no-zip")
    size = probe["manifest"]["database"]["size_bytes"]
    # At the threshold the database stays whole; one byte below it, it is split.
    out = tmp_path / "chunked"
    manifest = export(box, out, "--no-zip", "--chunk-threshold", str(size - extra),
                      "--chunk-size", str(size // 3 - 1))["manifest"]  # a remainder: 4 chunks
    if extra == 0:
        assert not manifest["database"]["chunked"]
        assert (out / "mailbox.sqlite3").is_file()
        return
    assert manifest["database"]["chunked"]
    assert not (out / "mailbox.sqlite3").exists()
    config = json.loads((out / "mailbox.sqlite3.config.json").read_text())
    assert config["chunk_count"] == 4
    assert config["original_bytes"] == size
    joined = tmp_path / "joined.sqlite3"
    bundle.join_chunks(out, "mailbox.sqlite3", joined)
    assert bundle.sha256_file(joined) == manifest["database"]["sha256"]
    assert len((out / "chunks.sha256").read_text().splitlines()) == 4
    zero = mailctl(box, "share", "export", "-o", str(tmp_path / "z"), "--chunk-size", "0", check=False)
    assert zero.returncode == 1
    assert "--chunk-size must be positive" in zero.stderr


def test_update_prunes_stale_files_drops_a_stale_signature_and_keeps_git(box: Mailbox, tmp_path: Path) -> None:
    key = tmp_path / "k"
    mailctl(box, "share", "keygen", str(key))
    out = tmp_path / "site"
    export(box, out, "--no-zip", "--signing-key", str(key), "--scrub-preset", "strict")
    git_init(out)
    (out / ".git" / "marker").write_text("keep me")
    (out / "stale.html").write_text("old")
    result = json.loads(mailctl(box, "share", "update", str(out), "--json").stdout)
    assert result["sync"]["pruned"] >= 2  # stale.html and the signature no key re-made
    assert not (out / "stale.html").exists()
    assert not (out / "manifest.sig.json").exists()
    assert (out / ".git" / "marker").read_text() == "keep me"
    assert result["manifest"]["scrub"]["preset"] == "strict"  # replayed from the manifest's export_config
    assert mailctl(box, "share", "verify", str(out)).returncode == 0


def test_update_re_renders_only_changed_threads_restores_tampered_pages_and_re_signs(box: Mailbox,
                                                                                       tmp_path: Path) -> None:
    key = tmp_path / "k"
    mailctl(box, "share", "keygen", str(key))
    project = str(box.root)
    token = box.call("register_agent", project_key=project, program="codex", model="gpt-5",
                     name="PurpleOwl")["registration_token"]
    box.call("send_message", project_key=project, sender_name="PurpleOwl", sender_token=token, to=["BlueLake"],
             subject="Notes", body_md="A thread that does not change", thread_id="notes")
    out = tmp_path / "site"
    before = export(box, out, "--no-zip", "--signing-key", str(key))["manifest"]
    pages = sorted(p for p in before["files"] if p.startswith("t/"))
    deploy = viewer.thread_file(slug_of(box), "deploy")
    other = next(p for p in pages if p != deploy)
    (out / other).write_text("<script>tampered</script>")
    box.call("send_message", project_key=project, sender_name="PurpleOwl", sender_token=token, to=["BlueLake"],
             subject="Re: Deploy key", body_md="Zanzibarword follows up", thread_id="deploy")
    result = json.loads(mailctl(box, "share", "update", str(out), "--json", "--signing-key", str(key)).stdout)
    manifest = result["manifest"]
    assert manifest["viewer"]["threads_rendered"] == 2  # the thread with new mail, and the tampered page
    assert manifest["viewer"]["threads"] == before["viewer"]["threads"]
    unchanged = [p for p in pages if p not in (deploy, other)]
    assert unchanged
    assert all(manifest["files"][p] == before["files"][p] for p in unchanged)
    assert "tampered" not in (out / other).read_text()
    assert manifest["files"][other] == before["files"][other]  # re-rendered to the very same bytes
    assert "Zanzibarword" in (out / deploy).read_text()
    shard = out / f"search/terms-{viewer.shard_of('zanzibarword')}.js"
    assert '"zanzibarword"' in shard.read_text()
    assert result["sync"]["unchanged"] > result["sync"]["written"]
    assert mailctl(box, "share", "verify", str(out)).returncode == 0  # the new signature covers the new manifest
    scoped = json.loads(mailctl(box, "share", "update", str(out), "--json", "--project", project).stdout)
    gone = [p for p in pages if p not in scoped["manifest"]["files"]]
    assert gone  # the other project's thread pages were pruned, and the stale signature with them
    assert scoped["sync"]["pruned"] >= len(gone) + 1
    assert not any((out / p).exists() for p in gone)
    assert not (out / "manifest.sig.json").exists()
    assert scoped["manifest"]["viewer"]["threads_rendered"] == 0
    assert mailctl(box, "share", "verify", str(out)).returncode == 0


def test_archive_save_and_restore_round_trip(box: Mailbox, tmp_path: Path) -> None:
    saved = json.loads(mailctl(box, "archive", "save", "-o", str(tmp_path / "save"), "--json").stdout)
    assert saved["manifest"]["scrub"]["preset"] == "archive"
    assert saved["manifest"]["attachments"]["copied"] == 2  # every blob copied, none inlined
    target = Mailbox(git_init(tmp_path / "restored"), "asyncio")
    try:
        result = subprocess.run([sys.executable, "-m", "mailctl", "--root", str(target.root), "archive", "restore",
                                 str(tmp_path / "save"), "--json"], capture_output=True, text=True, check=True,
                                env=target.env, timeout=120)
        assert json.loads(result.stdout)["blobs"] == 2
        found = target.call("search_messages", project_key=str(box.root), query="Rotated")
        assert "Rotated" in json.dumps(found)
    finally:
        target.stop()


def test_preview_serves_the_bundle_on_localhost(box: Mailbox, tmp_path: Path) -> None:
    out = tmp_path / "preview"
    export(box, out, "--no-zip")
    proc = subprocess.Popen([sys.executable, "-P", "-m", "mailctl", "share", "preview", str(out), "--port", "0"],
                            env=box.env, cwd=box.root, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://\S+/index\.html", line)
        assert url, line
        with urllib.request.urlopen(url.group(0), timeout=10) as response:
            assert b"Agent Mail bundle" in response.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_export_is_consistent_while_the_daemon_writes(box: Mailbox, tmp_path: Path) -> None:
    project = "/work/busy"
    token = box.call("register_agent", project_key=project, program="codex", model="gpt-5",
                     name="BusyBee")["registration_token"]
    stop = threading.Event()
    sent: list[int] = []

    def writer() -> None:
        with box.client() as conn:
            while not stop.is_set():
                conn.call_tool("send_message", {"project_key": project, "sender_name": "BusyBee",
                                                "sender_token": token, "to": ["BusyBee"],
                                                "subject": f"busy {len(sent)}", "body_md": "x" * 2000})
                sent.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        manifest = export(box, tmp_path / "busy", "--no-zip", "--scrub-preset", "archive")["manifest"]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert sent  # the daemon really was writing during the export
    out = tmp_path / "busy"
    assert db_rows(out, "PRAGMA integrity_check") == [("ok",)]
    [(count,)] = db_rows(out, "SELECT count(*) FROM messages")
    assert manifest["viewer"]["messages"] == count
    assert db_rows(out, "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'busy'")[0][0] == (
        db_rows(out, "SELECT count(*) FROM messages WHERE subject LIKE 'busy %'")[0][0])
    assert mailctl(box, "share", "verify", str(out)).returncode == 0


PARALLEL_SCRIPT = """
import json, sys
from pathlib import Path
from maild.share import viewer
from maild.share.output import Output
if __name__ == "__main__":
    items, placements = json.loads(Path(sys.argv[1]).read_text())
    viewer.PARALLEL_FROM = 0
    viewer._render_threads(Output(Path(sys.argv[2])), [(tuple(k), rows) for k, rows in items], placements)
"""


def test_thread_pages_rendered_by_worker_processes_match_the_serial_ones(tmp_path: Path) -> None:
    rows = [{"id": i, "subject": f"s{i} <b>", "sender": "BlueLake", "created_ts": "2026-01-01T00:00:00Z",
             "importance": "normal", "to": [], "body_md": f"**{i}** [x](javascript:alert(1))",
             "attachments": json.dumps([{"sha256": "ab" * 32, "name": "f.bin"}])} for i in range(12)]
    items = [(("p", f"k{i}"), [row]) for i, row in enumerate(rows)]
    placements = {"ab" * 32: {"mode": "copied", "path": "attachments/ab/x.bin", "bytes": 3}}
    viewer._render_threads(Output(tmp_path / "serial"), items, placements)
    # In a child interpreter: the pool's worker and resource-tracker processes end with it.
    (tmp_path / "in.json").write_text(json.dumps([items, placements]))
    (tmp_path / "run.py").write_text(PARALLEL_SCRIPT)
    subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "in.json"), str(tmp_path / "parallel")],
                   check=True, timeout=120)
    serial = {p: (tmp_path / "serial" / p).read_bytes() for p in bundle.bundle_files(tmp_path / "serial")}
    parallel = {p: (tmp_path / "parallel" / p).read_bytes() for p in bundle.bundle_files(tmp_path / "parallel")}
    assert len(serial) == 12
    assert parallel == serial
    assert b'href="javascript' not in b"".join(serial.values())


def test_export_never_empties_a_folder_that_is_not_a_bundle(box: Mailbox, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "precious.txt").write_text("mine")
    refused = mailctl(box, "share", "export", "-o", str(tmp_path / "work"), check=False)
    assert refused.returncode == 1
    assert "not empty" in refused.stderr
    assert (tmp_path / "work" / "precious.txt").read_text() == "mine"
