"""The arguments of `mailctl share …` and `mailctl archive …`, defined once for both sides.

mailctl registers them as its own subcommands (help, examples, completion) and hands the parsed
values to `python -m maild.share`, which does the work on the daemon side (it reads the database,
which mailctl must never import). Only argparse here: imported by the light client.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Add = Callable[[str, str, str], argparse.ArgumentParser]


def _export_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    none = argparse.SUPPRESS if not defaults else None
    parser.add_argument("--project", "-p", action="append", default=none,
                        help="keep only this project (slug or human key); repeatable; default all")
    parser.add_argument("--scrub-preset", choices=["standard", "strict", "archive"], default=none,
                        help="standard (redact secrets), strict (also drop bodies and attachments), archive (lossless)")
    for flag, text in (("--inline-threshold", "attachments up to this many bytes are inlined (64 KiB)"),
                       ("--detach-threshold", "attachments of this many bytes or more stay out (25 MiB)"),
                       ("--chunk-threshold", "split the database into chunks above this size (20 MiB)"),
                       ("--chunk-size", "bytes per chunk (4 MiB)")):
        parser.add_argument(flag, type=int, default=none, help=text)
    parser.add_argument("--signing-key", help="Ed25519 seed file: sign manifest.json")
    parser.add_argument("--zip", action=argparse.BooleanOptionalAction, default=None,
                        help="also write BUNDLE.zip (default on for export)")
    parser.add_argument("--age-recipient", action="append", default=[],
                        help="encrypt the zip to this age recipient (age1…); repeatable")
    parser.add_argument("--age-passphrase", help="encrypt the zip with this passphrase (or $SHARE_AGE_PASSPHRASE)")


def add_commands(add: Add) -> None:
    """Define every share/archive command through `add(name, help, example)` (a subparser factory)."""

    export = add("export", "write a scrubbed static bundle (viewer, database, manifest) and its zip",
                 "mailctl share export -o ./bundle --project backend --signing-key share.key")
    export.add_argument("--output", "-o", required=True, help="bundle directory (created or replaced)")
    _export_options(export, defaults=True)
    verify = add("verify", "check every file's sha256 against manifest.json, and the signature",
                 "mailctl share verify ./bundle --public-key BASE64")
    verify.add_argument("bundle", )
    verify.add_argument("--public-key", help="expected Ed25519 public key (base64 or a file); default: the bundle's")
    decrypt = add("decrypt", "decrypt an .age bundle with an identity file or a passphrase",
                  "mailctl share decrypt bundle.zip.age -i key.txt")
    decrypt.add_argument("file", )
    decrypt.add_argument("--output", "-o", help="where to write (default: the name without .age)")
    decrypt.add_argument("--identity", "-i", help="age identity file (AGE-SECRET-KEY-1…)")
    decrypt.add_argument("--passphrase", "-p", help="the passphrase (or $SHARE_AGE_PASSPHRASE)")
    preview = add("preview", "serve a bundle on localhost for a quick look", "mailctl share preview ./bundle")
    preview.add_argument("bundle", )
    preview.add_argument("--host", default="127.0.0.1")
    preview.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    update = add("update", "re-export a bundle in place from the settings in its manifest (prunes, keeps .git)",
                 "mailctl share update ./bundle --signing-key share.key")
    update.add_argument("bundle", )
    _export_options(update, defaults=False)
    keygen = add("keygen", "make an Ed25519 signing key (or with --age, an age identity)",
                 "mailctl share keygen share.key")
    keygen.add_argument("path", )
    keygen.add_argument("--age", action="store_true", help="make an age identity file instead")
    save = add("archive save", "save the whole mailbox losslessly (database, attachments, git archive)",
               "mailctl archive save -o backup")
    save.add_argument("--output", "-o", required=True)
    save.add_argument("--zip", action=argparse.BooleanOptionalAction, default=True)
    restore = add("archive restore", "restore a saved mailbox into this root (the daemon must be stopped)",
                  "mailctl archive restore backup --force")
    restore.add_argument("bundle", )
    restore.add_argument("--force", action="store_true", help="replace an existing mailbox database")
