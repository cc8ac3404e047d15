"""`mailctl mcp` driven by the official MCP Python client over stdio, as an editor would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from shared.paths import pid_alive
from tests.conftest import Mailbox

pytestmark = pytest.mark.anyio
PROJECT = "/work/app"


def shim_params(mailbox: Mailbox, *extra: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "mailctl", "mcp", *extra], env={**mailbox.env, **(env or {})},
        cwd=str(mailbox.root),
    )


def structured(result: Any) -> Any:
    assert not result.is_error, result.content
    return result.structured_content


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_official_client_lists_calls_and_reads_through_the_shim(mailbox: Mailbox, mode: str) -> None:
    async with Client(shim_params(mailbox), mode=mode) as client:  # type: ignore[arg-type]
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"health_check", "register_agent", "send_message", "fetch_inbox", "list_extended_tools",
                "call_extended_tool"} <= names
        assert "acknowledge_message" not in names, "extended tools stay behind call_extended_tool in core mode"
        me = structured(await client.call_tool("register_agent", {"project_key": PROJECT, "program": "claude-code",
                                                                  "model": "opus", "name": "BlueLake"}))
        structured(await client.call_tool("send_message", {"project_key": PROJECT, "to": "BlueLake",
                                                           "subject": "note to self", "body_md": "hi"}))
        inbox = structured(await client.call_tool("fetch_inbox", {"project_key": PROJECT}))
        assert inbox["agent"] == me["name"]
        assert inbox["unread_count"] == 1
        acked = structured(await client.call_tool(
            "call_extended_tool",
            {"tool_name": "acknowledge_message", "arguments": {"project_key": PROJECT,
                                                               "message_id": inbox["result"][0]["id"]}},
        ))
        assert acked["acknowledged"] is True
        listing = await client.read_resource("resource://agents/work-app")
        agents = json.loads(listing.contents[0].text)["agents"]  # type: ignore[union-attr]
        assert agents[0]["name"] == "BlueLake"
        assert agents[0]["online"] is True
        failed = await client.call_tool("send_message", {"project_key": PROJECT, "to": "Nobody", "subject": "x",
                                                         "body_md": "x"})
        assert failed.is_error
        assert failed.structured_content["error"]["code"] == "RECIPIENT_NOT_FOUND"  # type: ignore[index]


async def test_extended_mode_lists_everything(mailbox: Mailbox) -> None:
    async with Client(shim_params(mailbox, "--tools", "extended"), mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"acknowledge_message", "create_agent_identity"} <= names
        extended = structured(await client.call_tool("list_extended_tools", {}))
        assert extended["total"] == len(extended["tools"]) >= 2
        with pytest.raises(MCPError):
            await client.call_tool("no_such_tool", {})


async def test_several_shims_are_several_agents_on_one_daemon(mailbox: Mailbox) -> None:
    mailbox.call("ensure_project", human_key=PROJECT)
    async with (
        Client(shim_params(mailbox, "--agent", "BlueLake"), mode="legacy") as blue,
        Client(shim_params(mailbox, env={"AGENT_MAIL_NAME": "GreenCastle"}), mode="auto") as green,
    ):
        for client, name in ((blue, "BlueLake"), (green, "GreenCastle")):
            created = structured(await client.call_tool("register_agent", {"project_key": PROJECT,
                                                                           "program": "p", "model": "m"}))
            assert created["name"] == name, "the shim's agent name is the default registration name"
        structured(await blue.call_tool("send_message", {"project_key": PROJECT, "to": "GreenCastle",
                                                         "subject": "hi", "body_md": "from blue"}))
        inbox = structured(await green.call_tool("fetch_inbox", {"project_key": PROJECT}))
        assert [m["from"] for m in inbox["result"]] == ["BlueLake"]
        pids = {structured(await c.call_tool("health_check", {}))["pid"] for c in (blue, green)}
        assert len(pids) == 1


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_session_survives_a_daemon_kill_and_keeps_its_identity(mailbox: Mailbox, mode: str) -> None:
    async with Client(shim_params(mailbox), mode=mode) as client:  # type: ignore[arg-type]
        me = structured(await client.call_tool("register_agent", {"project_key": PROJECT, "program": "p",
                                                                  "model": "m"}))
        first_pid = structured(await client.call_tool("health_check", {}))["pid"]
        os.kill(first_pid, signal.SIGKILL)
        with anyio.fail_after(30):
            while True:
                try:
                    report = structured(await client.call_tool("health_check", {}))
                except MCPError as exc:  # a request caught in flight gets the retryable error
                    assert exc.error.code == -32099  # noqa: PT017 - retrying in a loop, not expecting one raise
                    continue
                if report["pid"] != first_pid:
                    break
        inbox = structured(await client.call_tool("fetch_inbox", {"project_key": PROJECT}))
        assert inbox["agent"] == me["name"], "the binding was restored by session id"
        assert (await client.list_tools()).tools


def run_shim(mailbox: Mailbox) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mailctl", "mcp", "--agent", "Ghost"], env=mailbox.env,
                            cwd=mailbox.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    return proc.wait(timeout=timeout)


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}


def rpc(proc: subprocess.Popen[bytes], frame: dict[str, Any]) -> dict[str, Any] | None:
    """Write one frame to the shim; for a request, read lines until its answer."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(json.dumps(frame).encode() + b"\n")
    proc.stdin.flush()
    if "id" not in frame:
        return None
    while True:
        reply: dict[str, Any] = json.loads(proc.stdout.readline())
        if reply.get("id") == frame["id"]:
            return reply


def start_raw_shim(mailbox: Mailbox) -> subprocess.Popen[bytes]:
    proc = run_shim(mailbox)
    assert rpc(proc, INITIALIZE) is not None  # answered: the shim is connected and its handlers are set
    rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    return proc


def unread_bytes(pid: int) -> int:
    """Bytes waiting in the receive queues of `pid`'s unix sockets (`ss` shows Recv-Q per socket)."""
    listing = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[2]) for line in listing.splitlines() if f"pid={pid}," in line)


@pytest.mark.parametrize("backend", ["asyncio"])  # the shim's own exit (sync code): one daemon backend is enough
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_shim_exits_on_stdin_eof_and_on_signals(mailbox: Mailbox, sig: signal.Signals) -> None:
    proc = run_shim(mailbox)
    assert proc.stdin is not None
    proc.stdin.close()
    assert wait_exit(proc) == 0
    proc.stdout.close()  # type: ignore[union-attr]
    proc = start_raw_shim(mailbox)
    proc.send_signal(sig)
    assert wait_exit(proc) == 0
    proc.stdin.close()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` (iproute2) to see the request reach the daemon")
def test_a_request_in_flight_when_the_daemon_dies_gets_a_retryable_error(mailbox: Mailbox) -> None:
    proc = start_raw_shim(mailbox)
    call = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "health_check", "arguments": {}}}
    first = rpc(proc, {**call, "id": 2})
    assert first is not None
    daemon = first["result"]["structuredContent"]["pid"]
    os.kill(daemon, signal.SIGSTOP)  # frozen: the next request is delivered but never answered
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({**call, "id": 3}).encode() + b"\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        while unread_bytes(daemon) == 0:  # the shim has relayed it: the request is in flight
            assert time.monotonic() < deadline, "the request never reached the daemon's socket"
    finally:
        os.kill(daemon, signal.SIGKILL)
    assert proc.stdout is not None
    lost = json.loads(proc.stdout.readline())
    assert lost["id"] == 3
    assert lost["error"]["code"] == -32099
    assert lost["error"]["data"]["retryable"] is True
    assert "idempotency_key" in lost["error"]["message"], "the error says how to retry a send safely"
    retried = rpc(proc, {**call, "id": 4})  # the shim restarted the daemon: the retry succeeds
    assert retried is not None
    assert "result" in retried, retried
    assert retried["result"]["structuredContent"]["pid"] != daemon
    proc.stdin.close()
    assert wait_exit(proc) == 0
    proc.stdout.close()


def test_a_shim_whose_editor_died_exits_and_its_agent_goes_offline(mailbox: Mailbox) -> None:
    mailbox.call("ensure_project", human_key=PROJECT)
    # Registered from a session configured as Ghost (AGENT_MAIL_NAME), so its next token-less shim rebinds it.
    with mailbox.client(hello={"session": "reg", "client": "test", "pid": 1, "agent": "Ghost"}) as conn:
        conn.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m", "name": "Ghost"})
    deadline = time.monotonic() + 20
    while mailbox.call("whois", project_key=PROJECT, agent_name="Ghost")["online"]:  # closing is asynchronous
        assert time.monotonic() < deadline, "the registering session never closed"
        time.sleep(0.05)
    editor = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "p = subprocess.Popen([sys.executable, '-m', 'mailctl', 'mcp', '--agent', 'Ghost'],"
         " stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)\n"
         "print(p.pid, flush=True)\n"
         "time.sleep(60)\n"],
        env=mailbox.env, cwd=mailbox.root, stdout=subprocess.PIPE,
    )
    assert editor.stdout is not None
    shim_pid = int(editor.stdout.readline())
    deadline = time.monotonic() + 20
    while not mailbox.call("whois", project_key=PROJECT, agent_name="Ghost")["online"]:
        assert time.monotonic() < deadline, "the shim never came online"
        time.sleep(0.05)
    editor.kill()
    editor.wait()
    editor.stdout.close()
    deadline = time.monotonic() + 10
    while pid_alive(shim_pid) or mailbox.call("whois", project_key=PROJECT, agent_name="Ghost")["online"]:
        assert time.monotonic() < deadline, "a ghost shim outlived its editor"
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["trio"])  # the shim's own answers (sync code): one daemon backend is enough
def test_unknown_methods_get_errors_and_the_shim_keeps_serving(mailbox: Mailbox) -> None:
    frames = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "bogus/method", "params": {}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}},
    ]
    stdin = "".join(json.dumps(f) + "\n" for f in frames) + "not json\n"
    run = subprocess.run([sys.executable, "-m", "mailctl", "mcp"], input=stdin.encode(), env=mailbox.env,
                         cwd=mailbox.root, capture_output=True, timeout=30, check=True)
    replies = [json.loads(line) for line in run.stdout.splitlines()]
    by_id = {r.get("id"): r for r in replies}
    assert by_id[2]["error"]["code"] == -32601
    assert by_id[3]["result"]["tools"]
    assert any(r.get("error", {}).get("code") == -32700 for r in replies)


def test_the_shim_imports_no_heavy_modules() -> None:
    probe = (
        "import sys, mailctl.shim, mailctl.cli\n"
        "heavy = ('mcp', 'apsw', 'git', 'maild', 'pydantic', 'anyio', 'rich', 'http.client', 'sqlite3')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == ""


def test_a_plain_mailctl_mcp_starts_the_shim_without_the_command_line(tmp_path: Any) -> None:
    """An editor spawns one shim per agent: `mailctl mcp` must not load the CLI (argparse, every
    command group) on the way. Anything unusual still goes through the CLI, which words the errors."""
    from mailctl.__main__ import mcp_options

    assert mcp_options(["mcp"]) == {}
    assert mcp_options(["--agent", "BlueLake", "mcp", "--tools=extended", "--root", str(tmp_path)]) == {
        "agent": "BlueLake", "tools": "extended", "root": str(tmp_path)}
    assert mcp_options(["mcp", "--root", "user"]) == {"root": "user"}
    for argv in (["mcp", "--help"], ["mcp", "--remote", "https://x"], ["mcp", "--tools", "all"],
                 ["mcp", "--root", str(tmp_path / "missing")], ["mcp", "--agent"], ["mcp", "--agent", "--tools"],
                 ["call", "health_check"], ["mcp", "mcp"], []):
        assert mcp_options(argv) is None, argv
    probe = ("import sys, runpy\nsys.argv = ['mailctl', 'mcp', '--root', sys.argv[1]]\n"
             "import mailctl.shim\nmailctl.shim.run = lambda *a: print(','.join(sorted(\n"
             "    m for m in sys.modules if m.startswith('mailctl.cli') or m in ('argparse', 'rich')))) or 0\n"
             "runpy.run_module('mailctl', run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""
    refused = subprocess.run([sys.executable, "-m", "mailctl", "mcp", "--tools", "all"], check=False,
                             capture_output=True, text=True)
    assert refused.returncode == 2
    assert "invalid choice: 'all'" in refused.stderr


def test_a_shim_given_the_agents_token_binds_even_while_the_agent_is_online(mailbox: Mailbox) -> None:
    with mailbox.client(hello={"session": "owner", "client": "test", "pid": os.getpid()}) as owner:
        token = owner.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m",
                                                   "name": "TokenBlue"})["registration_token"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "fetch_inbox", "arguments": {"project_key": PROJECT}}}
        for given, bound in ((token, True), ("not-the-token", False)):
            env = {**mailbox.env, "AGENT_MAIL_NAME": "TokenBlue", "AGENT_MAIL_TOKEN": given}
            proc = subprocess.Popen([sys.executable, "-m", "mailctl", "mcp"], env=env, cwd=mailbox.root,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert rpc(proc, INITIALIZE) is not None
            rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            reply = rpc(proc, call)
            assert reply is not None
            result = reply["result"]
            if bound:
                assert result["structuredContent"]["agent"] == "TokenBlue"
            else:
                assert result["isError"]
                assert result["structuredContent"]["error"]["code"] == "AUTHENTICATION_REQUIRED"
            proc.stdin.close()  # type: ignore[union-attr]
            assert wait_exit(proc) == 0
            proc.stdout.close()  # type: ignore[union-attr]
