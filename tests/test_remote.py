"""`mailctl mcp --remote URL` and `mailctl --remote URL …` against a real bridge on loopback: the
official MCP client through the remote shim, a bridge killed mid-call, wrong tokens, and TLS through
a TLS-terminating relay (a self-signed CA made with `cryptography`) in front of the bridge."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from shared.client import reap_spawned
from shared.errors import DaemonUnavailable
from tests.conftest import Mailbox
from tests.test_http import SECRET, Bridge, free_port, wait_for_bridge

TOKEN = "remote-test-token-0123456789"
JWT_CONFIG = f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
PROJECT = "/work/app"


def serve(mailbox: Mailbox, port: int, extra: str = "") -> str:
    mailbox.paths.state_dir.mkdir(mode=0o700, exist_ok=True)
    mailbox.paths.config_file.write_text(f'http_enabled = true\nhttp_port = {port}\nhttp_bearer_token = "{TOKEN}"\n'
                                         + extra)
    mailbox.call("health_check")
    wait_for_bridge(port)
    return f"http://127.0.0.1:{port}/mcp/"


@pytest.fixture(scope="module")
def bridge(module_mailbox: Mailbox) -> str:
    return serve(module_mailbox, free_port())


def remote_params(mailbox: Mailbox, url: str, token: str = TOKEN, *extra: str) -> StdioServerParameters:
    env = {**mailbox.env, "AGENT_MAIL_HTTP_TOKEN": token}
    return StdioServerParameters(command=sys.executable, args=["-m", "mailctl", "mcp", "--remote", url, *extra],
                                 env=env, cwd=str(mailbox.root.parent))


def structured(result: Any) -> Any:
    assert not result.is_error, result.content
    return result.structured_content


def remote_cli(mailbox: Mailbox, url: str, *args: str, token: str = TOKEN,
               cacert: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**mailbox.env, "AGENT_MAIL_HTTP_TOKEN": token}
    extra = ["--cacert", cacert] if cacert else []
    return subprocess.run([sys.executable, "-m", "mailctl", "--remote", url, *extra, *args], env=env,
                          cwd=str(mailbox.root.parent), capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_remote_agent_converses_with_a_local_one(module_mailbox: Mailbox, bridge: str, mode: str) -> None:
    project, name = f"{PROJECT}-{mode}", {"legacy": "BlueLake", "auto": "BlueRiver"}[mode]
    local = module_mailbox.call("register_agent", project_key=project, program="p", model="m", name="GreenCastle")
    async with Client(remote_params(module_mailbox, bridge), mode=mode) as client:  # type: ignore[arg-type]
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"send_message", "fetch_inbox"} <= names
        # Every test here speaks as the same bearer identity, which is one HTTP session: naming another
        # agent on it is a deliberate rebind (issue 14: never a silent one).
        me = structured(await client.call_tool("register_agent", {"project_key": project, "program": "ci",
                                                                  "model": "m", "name": name, "rebind": True}))
        assert me["name"] == name
        structured(await client.call_tool("send_message", {"project_key": project, "to": ["GreenCastle"],
                                                           "subject": "from afar", "body_md": "hello"}))
        hello = {"client": "test", "pid": os.getpid(), "agent": "GreenCastle", "token": local["registration_token"]}
        with module_mailbox.client(hello=hello) as conn:
            inbox = conn.call_tool("fetch_inbox", {"project_key": project})
            assert [m["subject"] for m in inbox["result"]] == ["from afar"]
            assert inbox["result"][0]["from"] == name
            conn.call_tool("reply_message", {"project_key": project, "message_id": inbox["result"][0]["id"],
                                             "body_md": "hello back"})
        mine = structured(await client.call_tool("fetch_inbox", {"project_key": project}))
        assert mine["agent"] == name
        assert [m["from"] for m in mine["result"]] == ["GreenCastle"], mine
        listing = await client.read_resource(f"resource://agents/{me['project_slug']}")
        assert {a["name"] for a in json.loads(listing.contents[0].text)["agents"]} == {  # type: ignore[union-attr]
            name, "GreenCastle"}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_remote_subscriber_is_notified_through_the_event_stream(module_mailbox: Mailbox, bridge: str) -> None:
    project = f"{PROJECT}-push"
    sender = module_mailbox.call("register_agent", project_key=project, program="p", model="m", name="RedStone")
    updates: list[str] = []
    arrived = anyio.Event()

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/resources/updated":
            updates.append(str(root.params.uri))
            arrived.set()

    async with Client(remote_params(module_mailbox, bridge), mode="legacy", message_handler=on_message) as client:
        structured(await client.call_tool("register_agent", {"project_key": project, "program": "ci", "model": "m",
                                                             "name": "PinkFrog", "rebind": True}))
        with warnings.catch_warnings():  # the SDK marks resources/subscribe deprecated for the 2026 era
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource("resource://inbox/PinkFrog")
        hello = {"client": "test", "pid": os.getpid(), "agent": "RedStone", "token": sender["registration_token"]}
        with module_mailbox.client(hello=hello) as conn:
            conn.call_tool("send_message", {"project_key": project, "to": ["PinkFrog"], "subject": "ping",
                                            "body_md": "are you there?"})
        with anyio.fail_after(30):
            await arrived.wait()
        assert updates == ["resource://inbox/PinkFrog"]
        inbox = structured(await client.call_tool("fetch_inbox", {"project_key": project}))
        assert [m["subject"] for m in inbox["result"]] == ["ping"]


def test_a_wrong_token_is_a_clear_error_at_initialize(module_mailbox: Mailbox, bridge: str) -> None:
    params = remote_params(module_mailbox, bridge, "not-the-token")
    proc = subprocess.Popen([params.command, *params.args], env=params.env, cwd=params.cwd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    out, err = proc.communicate(json.dumps(initialize).encode() + b"\n", timeout=30)
    reply = json.loads(out)
    assert reply["id"] == 1
    assert reply["error"]["data"]["code"] == "AUTHENTICATION_REQUIRED"
    assert "AGENT_MAIL_HTTP_TOKEN" in reply["error"]["message"]
    assert b"HTTP 401" in err
    assert proc.returncode == 0


def test_the_cli_sends_and_reads_through_the_bridge(module_mailbox: Mailbox, bridge: str) -> None:
    project = f"{PROJECT}-cli"
    done = remote_cli(module_mailbox, bridge, "call", "register_agent", f"project_key={project}", "program=ci",
                      "model=m", "name=RedFox", "rebind=true")
    assert done.returncode == 0, done.stderr
    sent = remote_cli(module_mailbox, bridge, "send", "--project", project, "RedFox", "remote note", "body")
    assert sent.returncode == 0, sent.stderr
    assert "from RedFox to RedFox" in sent.stdout
    inbox = remote_cli(module_mailbox, bridge, "inbox", "--project", project, "--json")
    assert inbox.returncode == 0, inbox.stderr
    assert [m["subject"] for m in json.loads(inbox.stdout)["result"]] == ["remote note"]
    denied = remote_cli(module_mailbox, bridge, "call", "health_check", token="wrong")
    assert denied.returncode == 1
    assert "AUTHENTICATION_REQUIRED" in denied.stderr
    assert "HTTP 401" in denied.stderr
    down = remote_cli(module_mailbox, f"http://127.0.0.1:{free_port()}/mcp/", "call", "health_check")
    assert down.returncode == 3
    assert "cannot reach 127.0.0.1" in down.stderr


def tcp_recv_queue(pid: int) -> int:
    """Bytes waiting in the receive queues of `pid`'s TCP sockets (`ss` shows Recv-Q per socket)."""
    listing = subprocess.run(["ss", "-tpn"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[1]) for line in listing.splitlines() if f"pid={pid}," in line)


def restart(mailbox: Mailbox, port: int, dead: int) -> None:
    deadline = time.monotonic() + 10
    while True:  # the killed daemon's socket may still accept for a moment while the kernel tears it down
        reap_spawned()
        try:
            serve(mailbox, port, JWT_CONFIG)
            return
        except (OSError, DaemonUnavailable):
            assert time.monotonic() < deadline, f"maild (was pid {dead}) did not come back"
            time.sleep(0.05)


@pytest.mark.anyio
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` (iproute2) to see the request reach the daemon")
async def test_a_bridge_killed_mid_call_gives_a_retryable_error_then_the_session_recovers(mailbox: Mailbox) -> None:
    port = free_port()
    url = serve(mailbox, port, JWT_CONFIG)
    # A JWT naming its agent: the identity survives the restart (a bearer's register_agent binding lives
    # in the daemon's memory only).
    agent_token = jwt.encode({"sub": "ci-runner-7", "agent": "BlueLake", "role": "writer",
                              "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    async with Client(remote_params(mailbox, url, agent_token), mode="legacy") as client:
        me = structured(await client.call_tool("register_agent", {"project_key": PROJECT, "program": "ci",
                                                                  "model": "m", "name": "BlueLake"}))
        daemon = structured(await client.call_tool("health_check", {}))["pid"]
        os.kill(daemon, signal.SIGSTOP)  # frozen: the next request is delivered but never answered
        failure: list[BaseException] = []

        async def in_flight() -> None:
            try:
                await client.call_tool("health_check", {})
            except MCPError as exc:
                failure.append(exc)

        def until_delivered() -> None:
            deadline = time.monotonic() + 10
            while tcp_recv_queue(daemon) == 0:
                assert time.monotonic() < deadline, "the request never reached the daemon's socket"
                time.sleep(0.01)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(in_flight)
                try:
                    await anyio.to_thread.run_sync(until_delivered)
                finally:
                    os.kill(daemon, signal.SIGKILL)
        finally:
            os.kill(daemon, signal.SIGKILL)
        assert failure, "the call in flight did not fail"
        assert failure[0].error.code == -32099  # type: ignore[attr-defined]
        assert failure[0].error.data == {"retryable": True}  # type: ignore[attr-defined]
        await anyio.to_thread.run_sync(restart, mailbox, port, daemon)  # the operator restarts it
        again = structured(await client.call_tool("health_check", {}))
        assert again["pid"] != daemon
        inbox = structured(await client.call_tool("fetch_inbox", {"project_key": PROJECT}))
        assert inbox["agent"] == me["name"], "the restored session is still BlueLake (the binding persisted)"


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("backend", ["trio"])  # the module's other stream test runs an asyncio daemon
async def test_a_subscription_outlives_a_bridge_restart(mailbox: Mailbox) -> None:
    port = free_port()
    url = serve(mailbox, port, JWT_CONFIG)
    sender = mailbox.call("register_agent", project_key=PROJECT, program="p", model="m", name="RedStone")
    agent_token = jwt.encode({"sub": "laptop-3", "agent": "GoldFinch", "role": "writer",
                              "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    updates: list[str] = []
    arrived = anyio.Event()

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/resources/updated":
            updates.append(str(root.params.uri))
            arrived.set()

    async def next_update() -> None:
        nonlocal arrived
        with anyio.fail_after(30):
            await arrived.wait()
        arrived = anyio.Event()

    async with Client(remote_params(mailbox, url, agent_token), mode="legacy", message_handler=on_message) as client:
        structured(await client.call_tool("register_agent", {"project_key": PROJECT, "program": "ci", "model": "m",
                                                             "name": "GoldFinch"}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource("resource://inbox/GoldFinch")
        daemon = structured(await client.call_tool("health_check", {}))["pid"]
        os.kill(daemon, signal.SIGKILL)
        await anyio.to_thread.run_sync(restart, mailbox, port, daemon)
        # The shim found its session forgotten, opened a new one, subscribed again and said "look again".
        await next_update()
        assert updates == ["resource://inbox/GoldFinch"]
        hello = {"client": "test", "pid": os.getpid(), "agent": "RedStone", "token": sender["registration_token"]}
        with mailbox.client(hello=hello) as conn:
            conn.call_tool("send_message", {"project_key": PROJECT, "to": ["GoldFinch"], "subject": "after",
                                            "body_md": "the restart"})
        await next_update()
        assert updates == ["resource://inbox/GoldFinch"] * 2
        health = structured(await client.call_tool("health_check", {}))
        assert health["pid"] != daemon
        assert health["wait_for_mail"]["subscriptions"] == 1


# -- TLS ------------------------------------------------------------------------------------------------------


def make_ca_and_server(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a certificate it signs for localhost / 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Agent Mail test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


@pytest.fixture(scope="module")
def tls_relay(bridge: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A TLS-terminating TCP relay on loopback in front of the bridge, as a reverse proxy would be."""
    ca, cert, key = make_ca_and_server(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    upstream = int(bridge.split(":")[2].split("/", maxsplit=1)[0])
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def handle(raw: socket.socket) -> None:
        try:
            tls = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return  # a client that refused our certificate
        back = socket.create_connection(("127.0.0.1", upstream))
        other = threading.Thread(target=pump, args=(back, tls), daemon=True)
        other.start()
        pump(tls, back)
        other.join(10)
        tls.close()
        back.close()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=handle, args=(raw,), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"https://localhost:{listener.getsockname()[1]}/mcp/", ca
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for thread in threads:
            thread.join(10)


def test_tls_is_verified_and_a_private_ca_is_accepted_with_cacert(
        module_mailbox: Mailbox, tls_relay: tuple[str, Path]) -> None:
    url, ca = tls_relay
    trusted = remote_cli(module_mailbox, url, "call", "health_check", cacert=str(ca))
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["status"] == "ok"
    refused = remote_cli(module_mailbox, url, "call", "health_check")
    assert refused.returncode == 3
    assert "TLS certificate of localhost" in refused.stderr
    assert "--cacert" in refused.stderr
    by_ip = remote_cli(module_mailbox, url.replace("localhost", "127.0.0.1"), "call", "health_check",
                            cacert=str(ca))
    assert by_ip.returncode == 0, "the certificate names 127.0.0.1 too"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_remote_shim_speaks_tls_with_cacert(module_mailbox: Mailbox, tls_relay: tuple[str, Path]) -> None:
    url, ca = tls_relay
    async with Client(remote_params(module_mailbox, url, TOKEN, "--cacert", str(ca)), mode="legacy") as client:
        assert structured(await client.call_tool("health_check", {}))["status"] == "ok"


@pytest.mark.parametrize("backend", ["asyncio"])
def test_forwarded_addresses_are_believed_only_when_the_proxy_is_trusted(mailbox: Mailbox) -> None:
    for trusted, expected in ((False, "127.0.0.1"), (True, "203.0.113.9")):
        url = serve(mailbox, free_port(), f"http_trust_forwarded_for = {str(trusted).lower()}\n")
        status, _, _ = Bridge(mailbox, int(url.split(":")[2].split("/", maxsplit=1)[0])).post(
            "tools/call", {"name": "health_check", "arguments": {}}, "wrong",
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
        assert status == 401
        deadline = time.monotonic() + 10
        while f"HTTP 401 for {expected} " not in mailbox.paths.log_file.read_text():
            assert time.monotonic() < deadline, mailbox.paths.log_file.read_text()[-2000:]
            time.sleep(0.05)
        mailbox.stop()
