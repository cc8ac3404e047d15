"""The CLI as a person sees it (a real terminal, through a pty) and as a script sees it (a pipe).

One daemon serves the whole module (`module_mailbox`): these tests are about the client's output.
Each test registers its own agents and finds its messages by the ids the commands print.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from mailctl.cli import build_parser
from shared.client import DaemonClient
from shared.errors import NotFound
from tests.conftest import Mailbox

ANSI = re.compile(r"\x1b\[[0-9;]*m")
MAILCTL = [sys.executable, "-P", "-m", "mailctl"]


def on_terminal(box: Mailbox, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run mailctl with stdin and stdout on a pseudo-terminal 140 columns wide: what a person sees."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 140, 0, 0))
    env = {**box.env, "TERM": "xterm-256color", "COLUMNS": "140"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([*MAILCTL, *args], stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env,
                            cwd=box.root, close_fds=True)
    os.close(slave)
    if stdin:
        os.write(master, stdin)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = proc.wait(timeout=60)
    return code, b"".join(chunks).decode().replace("\r\n", "\n"), err


def piped(box: Mailbox, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*MAILCTL, *args], input=stdin, env=box.env, cwd=box.root, capture_output=True,
                          check=True, timeout=60)


def register(box: Mailbox, name: str) -> str:
    result = json.loads(box.mailctl("register", "--program", "codex", "--model", "gpt", "--name", name,
                                    "--json").stdout)
    return str(result["registration_token"])


def send(box: Mailbox, to: str, subject: str, body: str, *extra: str) -> int:
    result = json.loads(box.mailctl("send", to, subject, body, *extra, "--json").stdout)
    return int(result["deliveries"][0]["payload"]["id"])


def test_show_and_thread_print_the_body_byte_for_byte(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    register(box, "ByteKeeper")
    body = "  indented first line\r\nsecond — ünïcode ✓\n\n  trailing spaces  \n\n\n".encode()
    sent = json.loads(piped(box, "send", "ByteKeeper", "[/b] Exact body", "-", "--json", stdin=body).stdout)
    message_id = sent["deliveries"][0]["payload"]["id"]
    shown = piped(box, "show", str(message_id)).stdout
    assert shown.startswith(f"#{message_id}  [/b] Exact body\n".encode())
    code, screen, err = on_terminal(box, "show", str(message_id))
    assert code == 0, err
    assert f"#{message_id}  [/b] Exact body" in ANSI.sub("", screen), "user text is never read as markup"
    assert b"from: HumanOperator\n" in shown
    assert shown.endswith(b"\n" + body), "the body comes last, exactly as sent"
    reply = json.loads(box.mailctl("reply", str(message_id), "and a reply body", "--json").stdout)
    listing = piped(box, "thread", str(reply["thread_id"])).stdout
    assert body in listing
    assert listing.index(body) < listing.index(b"and a reply body"), "oldest first, bodies included"


def test_read_and_ack_say_which_message_they_marked(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    token = register(box, "MarkReader")
    message_id = send(box, "MarkReader", "Mark me", "body", "--ack")
    read = box.mailctl("read", str(message_id), "--as", "MarkReader", f"--token={token}").stdout
    assert read.startswith(f"marked read #{message_id} 'Mark me' from HumanOperator (")
    acked = box.mailctl("ack", str(message_id), "--as", "MarkReader", f"--token={token}").stdout
    assert acked.startswith(f"acknowledged #{message_id} 'Mark me' from HumanOperator (")
    as_json = json.loads(box.mailctl("ack", str(message_id), "--as", "MarkReader", f"--token={token}",
                                     "--json").stdout)
    assert as_json["acknowledged"] is True
    assert as_json["message"]["subject"] == "Mark me"


def test_the_inbox_is_a_table_with_a_legend_on_a_terminal_and_stable_lines_in_a_pipe(
    module_mailbox: Mailbox,
) -> None:
    box = module_mailbox
    token = register(box, "TableReader")
    urgent = send(box, "TableReader", "Server on fire", "now", "--importance", "urgent", "--ack",
                  "--thread", "OPS-9")
    calm = send(box, "TableReader", "Lunch", "later")
    box.mailctl("read", str(calm), "--as", "TableReader", f"--token={token}")
    code, screen, err = on_terminal(box, "inbox", "--as", "TableReader", f"--token={token}")
    assert code == 0, err
    assert "\x1b[" in screen, "colour on a terminal"
    text = ANSI.sub("", screen)
    lines = text.splitlines()
    assert lines[0] == "TableReader: 1 unread"
    header = next(line for line in lines if "subject" in line)
    for column in ("#", "when (UTC)", "from", "subject", "thread", "ack"):
        assert column in header
    fire = next(line for line in lines if "Server on fire" in line)
    assert fire.lstrip().startswith("●!")
    assert "OPS-9" in fire
    assert fire.rstrip().endswith("?")
    assert "● unread" in text, "a legend says what the marks mean"
    assert "! high/urgent" in text
    plain = box.mailctl("inbox", "--as", "TableReader", f"--token={token}").stdout.splitlines()
    assert plain[0] == "TableReader: 1 unread"
    assert re.match(rf"   #{calm}\s+\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d  HumanOperator\s+Lunch$", plain[1])
    assert re.match(rf"\*! #{urgent}\s+\S+  HumanOperator\s+Server on fire$", plain[2]), "newest first"
    assert "\x1b[" not in "".join(plain)


def test_search_highlights_with_colour_on_a_terminal_and_shows_real_scores(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    register(box, "Searcher")
    send(box, "Searcher", "Quarterly zeppelin report", "the zeppelin **launch** slipped")
    send(box, "Searcher", "Unrelated", "zeppelin mentioned once, among many other words about weather")
    found = json.loads(box.mailctl("search", "zeppelin", "--json").stdout)
    assert len(found) == 2
    code, screen, err = on_terminal(box, "search", "zeppelin")
    assert code == 0, err
    assert re.search(r"\x1b\[[0-9;]*m(?:\x1b\[[0-9;]*m)*zeppelin\x1b\[0m", screen), "the match is highlighted"
    assert "<mark>" not in screen
    text = ANSI.sub("", screen)
    for hit in found:
        assert f"{hit['relevance_score']:.3g}" in text, "the score printed is the engine's score"
    assert "score" in text.splitlines()[0]
    plain = box.mailctl("search", "zeppelin").stdout
    assert "<mark>" not in plain
    assert "\x1b[" not in plain
    assert "the zeppelin **launch** slipped" in plain, "the body's own markdown survives untouched"
    assert f"score {found[0]['relevance_score']:.3g}" in plain


def test_output_closed_early_ends_quietly_without_a_traceback(module_mailbox: Mailbox) -> None:
    for args in (["completion", "bash"], ["--help"], ["tools"]):
        proc = subprocess.Popen([*MAILCTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=module_mailbox.env, cwd=module_mailbox.root)
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()  # like `| head -1` having exited before mailctl writes
        err = proc.stderr.read().decode()
        proc.stderr.close()
        code = proc.wait(timeout=60)
        assert "Traceback" not in err, err
        assert "BrokenPipe" not in err
        assert code in (0, 141), (args, code)  # --help exits 0 from argparse; otherwise SIGPIPE's 141
    head = subprocess.run(["bash", "-c", " ".join(MAILCTL) + " tools | head -1"],
                          env=module_mailbox.env, cwd=module_mailbox.root, capture_output=True, text=True, check=True)
    assert head.stderr == ""
    assert len(head.stdout.splitlines()) == 1


def test_call_fills_project_key_honours_identity_and_suggests_tool_names(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    token = register(box, "CallerAgent")
    send(box, "CallerAgent", "for the caller", "x")
    inbox = json.loads(box.mailctl("call", "fetch_inbox", "--as", "CallerAgent", f"--token={token}").stdout)
    assert inbox["agent"] == "CallerAgent", "project_key defaulted to the mailbox's project"
    env = {**box.env, "AGENT_MAIL_NAME": "CallerAgent", "AGENT_MAIL_TOKEN": token}
    from_env = subprocess.run([*MAILCTL, "call", "fetch_inbox"], env=env, cwd=box.root, capture_output=True,
                              text=True, check=True)
    assert json.loads(from_env.stdout)["agent"] == "CallerAgent"
    no_token = box.mailctl("call", "fetch_inbox", "--as", "CallerAgent", check=False)
    assert no_token.returncode == 1
    assert "AUTHENTICATION_REQUIRED" in no_token.stderr
    typo = box.mailctl("call", "fetch_inbx", check=False)
    assert typo.returncode == 1
    assert typo.stderr.startswith("mailctl: NOT_FOUND: unknown tool 'fetch_inbx'; did you mean fetch_inbox")
    assert "mailctl tools" in typo.stderr
    listing = box.mailctl("tools").stdout
    assert re.search(r"^send_message\s+core\s+\S", listing, flags=re.MULTILINE)
    assert re.search(r"^acknowledge_message\s+extended\s+\S", listing, flags=re.MULTILINE)
    one = box.mailctl("tools", "send_message").stdout
    assert re.search(r"^subject\s+string", one, flags=re.MULTILINE)
    assert re.search(r"^cc\?\s", one, flags=re.MULTILINE), "optional parameters are marked"
    projects = json.loads(box.mailctl("resource", "resource://projects").stdout)
    assert str(box.root) in [p["human_key"] for p in projects["projects"]]
    assert "resource://agents/{project}" in box.mailctl("resource").stdout


def test_error_hints_name_cli_commands_for_the_cli_and_tools_for_agents(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    cli = box.mailctl("send", "NoSuchAgent", "hello", "x", check=False)
    assert cli.returncode == 1
    assert "`mailctl agents`" in cli.stderr
    assert "resource://" not in cli.stderr
    agents = box.mailctl("agents").stdout
    assert re.search(r"^HumanOperator\s+mailctl\s+human\s", agents, flags=re.MULTILINE)
    with DaemonClient(box.paths) as raw, pytest.raises(NotFound) as caught:
        raw.call_tool("whois", {"project_key": str(box.root), "agent_name": "NoSuchAgent"})
    assert "resource://agents/" in caught.value.message
    assert "mailctl" not in caught.value.message
    whois = box.mailctl("whois", "NoSuchAgent", check=False)
    assert "`mailctl agents`" in whois.stderr
    assert "`mailctl register`" in whois.stderr


def test_doctor_rebuild_asks_first_and_a_script_must_pass_yes(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    box.mailctl("call", "health_check")
    pid = (box.status() or {})["pid"]
    refused = subprocess.run([*MAILCTL, "doctor", "--rebuild"], stdin=subprocess.DEVNULL, env=box.env,
                             cwd=box.root, capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    code, screen, err = on_terminal(box, "doctor", "--rebuild", stdin=b"n\n")
    assert code == 2
    assert "rebuild cancelled" in err
    assert "Rebuild now? [y/N]" in err + screen  # input() may prompt on stderr
    assert (box.status() or {})["pid"] == pid, "nothing was stopped"
    assert not list(box.paths.state_dir.glob("mail.sqlite3.bak-*"))
    human = box.mailctl("doctor").stdout
    assert "\narchive: ok\n" in human
    assert "{" not in human, "no raw JSON unless --json"


def test_guard_install_speaks_to_people_and_json_is_opt_in(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    installed = box.mailctl("guard", "install").stdout
    assert installed.startswith(f"installed {box.root / '.git' / 'hooks' / 'pre-commit'}\n")
    assert "{" not in installed
    removed = json.loads(box.mailctl("guard", "uninstall", "--json").stdout)
    assert removed["removed"] == [str(box.root / ".git" / "hooks" / "pre-commit")]


def test_the_user_level_mailbox_is_announced_once_on_stderr(tmp_path: Path) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "AGENT_MAIL_ROOT"}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    run = subprocess.run([*MAILCTL, "daemon", "status"], env=env, cwd=outside, capture_output=True, text=True,
                         check=False, timeout=60)
    assert run.returncode == 3
    assert run.stderr.count("using the user-level mailbox") == 1
    assert str(tmp_path / "data" / "agent-mail") in run.stderr
    inside = subprocess.run([*MAILCTL, "--root", str(outside), "daemon", "status"], env=env, cwd=outside,
                            capture_output=True, text=True, check=False, timeout=60)
    assert "user-level" not in inside.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_know_every_command(shell: str) -> None:
    script = subprocess.run([*MAILCTL, "completion", shell], capture_output=True, text=True, check=True).stdout
    for command in ("inbox", "send", "thread", "completion", "tools"):
        assert command in script
    if shell != "bash":
        return
    probe = (
        f"source <({' '.join(MAILCTL)} completion bash)\n"
        'COMP_WORDS=(mailctl inb); COMP_CWORD=1; COMP_LINE="mailctl inb"; COMP_POINT=${#COMP_LINE}\n'
        '_shtab_mailctl; printf "%s\\n" "${COMPREPLY[@]}"\n'
        'COMP_WORDS=(mailctl inbox --li); COMP_CWORD=2; COMP_LINE="mailctl inbox --li"; COMP_POINT=${#COMP_LINE}\n'
        '_shtab_mailctl; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    completed = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["inbox", "--limit"]


# Commands whose output is not a result: the shim (speaks MCP), completion (a script), logs (a file),
# hook (answers a client's hook protocol, which is JSON already), guard check (the git hook's verdict),
# run (prints what its command prints).
NO_JSON = {("mcp",), ("completion",), ("hook",), ("daemon", "logs"), ("guard", "check"), ("run",)}


def leaves(parser: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    return [leaf for name, sub in subs[0].choices.items() for leaf in leaves(sub, (*path, name))]


def test_every_command_that_prints_a_result_takes_json() -> None:
    missing = []
    for path, parser in leaves(build_parser()):
        flags = {flag for action in parser._actions for flag in action.option_strings}
        if "--json" not in flags and path not in NO_JSON:
            missing.append(" ".join(path))
    assert missing == []


def test_the_daemon_never_imports_the_client_package() -> None:
    probe = (
        "import sys\n"
        "from maild.mcp_surface.server import build_registries\n"
        "build_registries()\n"
        "print([m for m in sys.modules if m == 'mailctl' or m.startswith('mailctl.')])\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize(("agent_hint", "cli_hint"), [
    ("no active agent named 'X'; list agents with resource://agents/<project> or register one with register_agent",
     "no active agent named 'X'; list agents with `mailctl agents` or register one with `mailctl register`"),
    ("unknown recipient(s): X. Check the names (resource://agents/my-app) or register them first",
     "unknown recipient(s): X. Check the names (`mailctl agents`) or register them first"),
    ("X is not a recipient of message 9; check the id in fetch_inbox",
     "X is not a recipient of message 9; check the id with `mailctl inbox`"),
    ("project 'a' (slug 'a') does not exist; call ensure_project or register_agent first",
     "project 'a' (slug 'a') does not exist; run `mailctl call ensure_project human_key=PATH` or "
     "`mailctl register` first"),
    ("message 3 does not exist", "message 3 does not exist"),
])
def test_hints_for_the_cli_name_the_commands_that_do_the_same(agent_hint: str, cli_hint: str) -> None:
    from maild.mcp_surface.hints import for_cli

    assert for_cli(agent_hint) == cli_hint
