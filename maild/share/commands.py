"""What each share/archive command does, given parsed arguments: export, verify, decrypt, preview,
update, keygen, archive save/restore. Returns a JSON-able result; prints people's output (rich
progress on a terminal) unless --json. Parsing is in __main__.py, the pipeline in export.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import http.server
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from maild.share import bundle, crypt, export, signing
from shared.errors import InvalidArgument, StorageError
from shared.paths import MailboxPaths, read_status, resolve_root

OVERRIDES = ("project", "scrub_preset", "inline_threshold", "detach_threshold", "chunk_threshold", "chunk_size")


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text)


@contextlib.contextmanager
def _progress(args: argparse.Namespace) -> Iterator[export.Progress]:
    """A rich progress bar over the pipeline's steps on a terminal; nothing with --json or a pipe."""
    if args.json or not sys.stdout.isatty():
        yield lambda _step: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("export", total=len(export.STEPS))

        def step(name: str) -> None:
            bar.update(task, description=name, advance=0 if name == export.STEPS[0] else 1)

        yield step


def _config(args: argparse.Namespace, base: export.ExportConfig | None = None) -> export.ExportConfig:
    config = dataclasses.replace(base) if base else export.ExportConfig()
    for name in OVERRIDES:
        value = getattr(args, name, None)
        if value is not None:
            setattr(config, "projects" if name == "project" else name, value)
    return config.check()


def _finish(args: argparse.Namespace, out: Path, manifest: dict[str, Any], default_zip: bool) -> dict[str, Any]:
    """Sign, zip and encrypt as asked; the result the CLI prints."""
    result: dict[str, Any] = {"bundle": str(out), "manifest": manifest, "signed": False}
    if args.signing_key:
        result["signed"] = True
        result["public_key"] = signing.sign(out, args.signing_key)["public_key"]
    passphrase = args.age_passphrase or (None if args.age_recipient else os.environ.get("SHARE_AGE_PASSPHRASE"))
    encrypt = bool(args.age_recipient or passphrase)
    if args.zip if args.zip is not None else (default_zip or encrypt):
        archive = bundle.make_zip(out, out.with_name(out.name + ".zip"))
        result["zip"] = str(archive)
        if encrypt:
            target = crypt.encrypt_file(archive, archive.with_name(archive.name + ".age"), args.age_recipient,
                                        passphrase)
            archive.unlink()  # the plain zip would defeat the encryption
            del result["zip"]
            result["encrypted"] = str(target)
    elif encrypt:
        raise InvalidArgument("encryption needs the zip; drop --no-zip")
    return result


def _summary(args: argparse.Namespace, result: dict[str, Any]) -> None:
    m = result["manifest"]
    _say(args, f"bundle: {result['bundle']}  ({m['viewer']['messages']} messages, {m['viewer']['threads']} threads, "
               f"projects: {', '.join(m['project_scope']) or 'none'})")
    a = m["attachments"]
    _say(args, f"scrub: {m['scrub']['preset']}, {m['scrub']['secrets_redacted']} secrets redacted; attachments: "
               f"{a['inline']} inlined, {a['copied']} copied, {a['externalized']} external, {a['missing']} missing")
    if result.get("signed"):
        _say(args, f"signed; public key {result['public_key']}")
    for key in ("zip", "encrypted"):
        if key in result:
            _say(args, f"{key}: {result[key]}")


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    paths = MailboxPaths(resolve_root(args.root))
    config = _config(args)
    with _progress(args) as step:
        manifest = export.export(paths, args.output.resolve(), config, step)
    result = _finish(args, args.output.resolve(), manifest, default_zip=True)
    _summary(args, result)
    return result


def cmd_update(args: argparse.Namespace) -> dict[str, Any]:
    target = args.bundle.resolve()
    if args.age_recipient or args.age_passphrase:
        raise InvalidArgument("share update refreshes a bundle folder and does not encrypt; "
                              "run `mailctl share export … --age-recipient …` for an encrypted copy")
    old = bundle.read_manifest(target)
    config = _config(args, export.ExportConfig.from_dict(old.get("export_config") or {}))
    paths = MailboxPaths(resolve_root(args.root))
    previous = old.get("files") if isinstance(old.get("files"), dict) else {}
    with _progress(args) as step:
        # In place: unchanged files stay, changed threads are re-rendered, stale files (and the now
        # stale signature) are pruned; then a new signature if a key is given.
        manifest = export.export(paths, target, config, step, previous=previous)
    counts = manifest.pop("update")
    if args.signing_key:
        signing.sign(target, args.signing_key)
    result: dict[str, Any] = {"bundle": str(target), "manifest": manifest, "signed": bool(args.signing_key)}
    if args.signing_key:
        result["public_key"] = signing.public_b64(signing.load_private_key(args.signing_key))
    if args.zip:
        result["zip"] = str(bundle.make_zip(target, target.with_name(target.name + ".zip")))
    result["sync"] = counts
    _summary(args, result)
    _say(args, f"files: {counts['written']} written, {counts['unchanged']} unchanged, {counts['pruned']} pruned; "
               f"{manifest['viewer']['threads_rendered']} thread pages rendered")
    return result


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    report = signing.verify(args.bundle, args.public_key)
    sig = "signature verified" if report["signature_verified"] else "unsigned"
    _say(args, f"ok: {report['files_checked']} files match manifest.json; {sig}")
    return report


def cmd_decrypt(args: argparse.Namespace) -> dict[str, Any]:
    source: Path = args.file
    target = args.output or (
        source.with_suffix("") if source.suffix == ".age" else source.with_name(source.name + ".out"))
    passphrase = args.passphrase or (None if args.identity else os.environ.get("SHARE_AGE_PASSPHRASE"))
    crypt.decrypt_file(source, target, args.identity, passphrase)
    _say(args, f"decrypted: {target}")
    return {"input": str(source), "output": str(target)}


def cmd_keygen(args: argparse.Namespace) -> dict[str, Any]:
    if args.age:
        recipient = crypt.generate_identity(args.path)
        _say(args, f"age identity written to {args.path}; recipient (share this): {recipient}")
        return {"path": str(args.path), "recipient": recipient}
    public = signing.keygen(args.path)
    _say(args, f"signing key written to {args.path}; public key (share this): {public}")
    return {"path": str(args.path), "public_key": public}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def cmd_preview(args: argparse.Namespace) -> dict[str, Any]:
    root = args.bundle.resolve()
    bundle.read_manifest(root)
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler)
    url = f"http://{args.host}:{server.server_address[1]}/index.html"
    print(f"serving {root} at {url} (Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    return {"bundle": str(root), "url": url}


def cmd_archive_save(args: argparse.Namespace) -> dict[str, Any]:
    """The archive preset, every blob copied (none inlined or left out), plus the git archive."""
    paths = MailboxPaths(resolve_root(args.root))
    out = args.output.resolve()
    config = export.ExportConfig(scrub_preset="archive", inline_threshold=0, detach_threshold=2**62,
                                 chunk_threshold=2**62)
    with _progress(args) as step:
        manifest_parts = export.export(paths, out, config, step)
    if paths.archive.is_dir():
        shutil.copytree(paths.archive, out / "git-archive", symlinks=True)
        manifest_parts = bundle.write_manifest(out, {k: v for k, v in manifest_parts.items()
                                                     if k in ("project_scope", "scrub", "attachments", "database",
                                                              "viewer", "export_config")})
    result: dict[str, Any] = {"bundle": str(out), "manifest": manifest_parts}
    if args.zip:
        result["zip"] = str(bundle.make_zip(out, out.with_name(out.name + ".zip")))
    _say(args, f"saved {manifest_parts['viewer']['messages']} messages to {out}" +
         (f" and {result['zip']}" if args.zip else ""))
    return result


def cmd_archive_restore(args: argparse.Namespace) -> dict[str, Any]:
    paths = MailboxPaths(resolve_root(args.root))
    source = args.bundle.resolve()
    signing.verify(source)  # never restore a damaged save
    manifest = bundle.read_manifest(source)
    if manifest.get("scrub", {}).get("preset") != "archive":
        raise InvalidArgument(f"{source} was exported with the {manifest.get('scrub', {}).get('preset')!r} preset; "
                              "only `mailctl archive save` output can be restored")
    if read_status(paths) is not None:
        raise StorageError(f"a daemon serves {paths.root}; stop it first (mailctl daemon stop)")
    if paths.db.exists() and not args.force:
        raise InvalidArgument(f"{paths.db} exists; pass --force to replace this mailbox with the save")
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{paths.db}{suffix}").unlink(missing_ok=True)
    database = manifest["database"]
    if database.get("chunked"):
        bundle.join_chunks(source, database["path"], paths.db)
    else:
        shutil.copyfile(source / database["path"], paths.db)
    blobs = 0
    for path in sorted((source / "attachments").glob("*/*")):
        sha = path.name.split(".", 1)[0]
        target = paths.blobs / sha[:2] / sha
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        blobs += 1
    if (source / "git-archive").is_dir():
        if paths.archive.exists():
            shutil.rmtree(paths.archive)
        shutil.copytree(source / "git-archive", paths.archive, symlinks=True)
    _say(args, f"restored {manifest['viewer']['messages']} messages and {blobs} attachments into {paths.root}")
    return {"root": str(paths.root), "messages": manifest["viewer"]["messages"], "blobs": blobs}


COMMANDS = {"export": cmd_export, "update": cmd_update, "verify": cmd_verify, "decrypt": cmd_decrypt,
            "keygen": cmd_keygen, "preview": cmd_preview, "archive-save": cmd_archive_save,
            "archive-restore": cmd_archive_restore}


PATH_ARGS = ("output", "bundle", "file", "identity", "signing_key", "path")


def run(args: argparse.Namespace) -> dict[str, Any]:
    for name in PATH_ARGS:  # arguments arrive as strings (also as JSON from mailctl)
        if isinstance(getattr(args, name, None), str):
            setattr(args, name, Path(getattr(args, name)).expanduser())
    return COMMANDS[args.command](args)
