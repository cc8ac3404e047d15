"""The HTTP bridge as real HTTP requests against a running daemon: auth, RBAC, rate limits, MCP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import http.server
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from maild.transport.http.ratelimit import Limit, MemoryLimiter
from tests.conftest import Mailbox, git_init

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
PROJECT = "/work/app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bridge:
    def __init__(self, mailbox: Mailbox, port: int) -> None:
        self.mailbox = mailbox
        self.port = port

    def post(self, method: str, params: dict[str, Any], token: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": method,
                "params": {**params, "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                               "io.modelcontextprotocol/clientCapabilities": {}}}}
        sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method, **(headers or {})}
        if "name" in params:
            sent["Mcp-Name"] = params["name"]
        if "uri" in params:
            sent["Mcp-Name"] = params["uri"]
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/mcp/", body=json.dumps(body), headers=sent)
            response = conn.getresponse()
            raw = response.read()
            try:
                parsed = json.loads(raw or b"null")
            except ValueError:
                parsed = raw.decode(errors="replace")
            return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
        finally:
            conn.close()

    def tool(self, name: str, arguments: dict[str, Any], token: str | None) -> tuple[int, dict[str, str], Any]:
        return self.post("tools/call", {"name": name, "arguments": arguments}, token)

    def get(self, path: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def request(self, method: str, headers: dict[str, str], body: str | None = None) -> tuple[int, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, "/mcp/", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()


def wait_for_bridge(port: int, timeout: float = 30) -> None:
    """The daemon answers on its socket before hypercorn has bound the port: wait for liveness."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/health/liveness")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        assert time.monotonic() < deadline, f"the HTTP bridge on port {port} did not come up"
        time.sleep(0.05)


def start_bridge(mailbox: Mailbox, config: str) -> Bridge:
    port = free_port()
    mailbox.paths.state_dir.mkdir(mode=0o700, exist_ok=True)
    mailbox.paths.config_file.write_text(f"http_enabled = true\nhttp_port = {port}\n{config}")
    mailbox.call("health_check")
    wait_for_bridge(port)
    return Bridge(mailbox, port)


def token(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256", **headers: Any) -> str:
    base = {"sub": "alice", "exp": int(time.time()) + 300}
    return jwt.encode({**base, **claims}, key, algorithm=algorithm, headers=headers or None)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1", "alg": "RS256"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec-1", "alg": "ES256"},
    ]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    rsa_public_pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"rsa": rsa_key, "ec": ec_key, "jwks_file": path, "rsa_public_pem": rsa_public_pem}


@pytest.fixture(scope="module")
def jwt_bridge(shared_mailbox: Mailbox) -> Bridge:
    """One daemon and JWT bridge per backend for the module's tests of that configuration: they send
    requests (mostly refused ones) and change no setting, so a fresh daemon each would only cost time."""
    return start_bridge(shared_mailbox, f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
                                        'http_jwt_audience = "agent-mail"\nhttp_jwt_issuer = "https://issuer.test"\n')


@pytest.fixture
def anyio_backend(jwt_bridge: Bridge) -> str:
    """The official client runs on the backend of the daemon it talks to, as elsewhere."""
    return jwt_bridge.mailbox.backend


def good(**extra: Any) -> str:
    return token({"aud": "agent-mail", "iss": "https://issuer.test", "role": "writer", **extra})


@pytest.mark.anyio
async def test_the_official_mcp_client_works_over_the_bridge(jwt_bridge: Bridge) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {good()}"}
    for mode in ("legacy", "auto"):
        async with httpx2.AsyncClient(headers=headers) as http_client:
            transport = streamable_http_client(f"http://127.0.0.1:{jwt_bridge.port}/mcp", http_client=http_client)
            async with Client(transport, mode=mode) as client:  # type: ignore[arg-type]
                names = {t.name for t in (await client.list_tools()).tools}
                assert "send_message" in names
                result = await client.call_tool("ensure_project", {"human_key": PROJECT})
                assert result.structured_content["slug"] == "work-app"  # type: ignore[index]


def test_health_routes_answer_without_credentials(jwt_bridge: Bridge) -> None:
    instance = jwt_bridge.mailbox.status()["instance"]  # type: ignore[index]
    assert jwt_bridge.get("/health/liveness") == (200, {"status": "alive", "instance": instance})
    assert jwt_bridge.get("/health/readiness")[0] == 200


def test_a_valid_jwt_calls_tools_on_both_paths(jwt_bridge: Bridge) -> None:
    status, _, body = jwt_bridge.tool("health_check", {}, good())
    assert status == 200
    assert body["result"]["structuredContent"]["status"] == "ok"


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "not-a-jwt",
        "a.b.c",
        "alg-none",
        "expired",
        "not-yet-valid",
        "wrong-audience",
        "wrong-issuer",
        "wrong-secret",
        "no-subject",
    ],
)
def test_bad_credentials_get_a_bare_401(jwt_bridge: Bridge, bad: str | None) -> None:
    now = int(time.time())
    tokens = {
        "alg-none": jwt.encode({"sub": "a", "exp": now + 60, "aud": "agent-mail", "iss": "https://issuer.test"},
                               None, algorithm="none"),
        "expired": good(exp=now - 3600),
        "not-yet-valid": good(nbf=now + 3600),
        "wrong-audience": token({"aud": "someone-else", "iss": "https://issuer.test"}),
        "wrong-issuer": token({"aud": "agent-mail", "iss": "https://evil.test"}),
        "wrong-secret": token({"aud": "agent-mail", "iss": "https://issuer.test"},
                              key="another-secret-that-is-long-enough-for-hs256"),
        "no-subject": jwt.encode({"exp": now + 60, "aud": "agent-mail", "iss": "https://issuer.test"}, SECRET),
    }
    status, headers, body = jwt_bridge.tool("health_check", {}, tokens.get(bad or "", bad))
    assert status == 401
    assert body == {"error": "unauthorized"}, "no detail about what was wrong"
    assert headers["www-authenticate"] == "Bearer"


def test_jwks_keys_verify_rs256_and_es256_and_refuse_confusion(mailbox: Mailbox, keys: dict[str, Any]) -> None:
    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_algorithms = "RS256,ES256,HS256"\n'
                                   f'http_jwt_jwks_file = "{keys["jwks_file"]}"\n')
    assert bridge.tool("health_check", {}, token({}, keys["rsa"], "RS256", kid="rsa-1"))[0] == 200
    assert bridge.tool("health_check", {}, token({}, keys["ec"], "ES256", kid="ec-1"))[0] == 200
    assert bridge.tool("health_check", {}, token({}, keys["rsa"], "RS256", kid="unknown"))[0] == 401
    # Algorithm confusion: the RSA public key used as an HMAC secret must never verify.
    # (Built by hand: PyJWT itself refuses to sign HS256 with a PEM key.)
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    claims = b64(json.dumps({"sub": "mallory", "exp": int(time.time()) + 60}).encode())
    signature = hmac.new(keys["rsa_public_pem"], f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert bridge.tool("health_check", {}, f"{header}.{claims}.{b64(signature)}")[0] == 401


def test_static_bearer_and_the_localhost_rules(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, 'http_bearer_token = "static-token-123"\n')
    assert bridge.tool("health_check", {}, "static-token-123")[0] == 200
    assert bridge.tool("health_check", {}, "static-token-12")[0] == 401
    assert bridge.tool("health_check", {}, None)[0] == 401, "localhost is not trusted unless enabled"
    mailbox.stop()
    bridge = start_bridge(mailbox, "http_allow_localhost_unauthenticated = true\n")
    assert bridge.tool("health_check", {}, None)[0] == 200
    status, _, _ = bridge.post("tools/call", {"name": "health_check", "arguments": {}},
                               headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 401, "a proxied request is never treated as local"


def test_readers_get_read_only_tools_and_resources_writers_get_the_rest(jwt_bridge: Bridge) -> None:
    reader = good(role="reader", sub="reader-1")
    writer = good(role="writer", sub="writer-1")
    assert jwt_bridge.tool("health_check", {}, reader)[0] == 200
    assert jwt_bridge.tool("ensure_project", {"human_key": PROJECT}, reader)[0] == 403
    extended = {"tool_name": "acknowledge_message", "arguments": {}}
    assert jwt_bridge.tool("call_extended_tool", extended, reader)[0] == 403, "judged by the tool actually run"
    assert jwt_bridge.tool("ensure_project", {"human_key": PROJECT}, writer)[0] == 200
    status, _, body = jwt_bridge.post("resources/read", {"uri": "resource://projects"}, reader)
    assert status == 200
    assert "work-app" in json.dumps(body)


def test_the_token_agent_claim_binds_the_sender(jwt_bridge: Bridge) -> None:
    writer = good(role="writer", sub="ci-bot", agent="BlueLake")
    status, _, body = jwt_bridge.tool("register_agent", {"project_key": PROJECT, "program": "ci", "model": "m"},
                                      writer)
    assert status == 200
    assert body["result"]["structuredContent"]["name"] == "BlueLake"
    jwt_bridge.mailbox.call("register_agent", project_key=PROJECT, program="p", model="m", name="GreenCastle")
    _, _, sent = jwt_bridge.tool("send_message", {"project_key": PROJECT, "to": "GreenCastle", "subject": "hi",
                                                  "body_md": "x"}, writer)
    assert sent["result"]["structuredContent"]["deliveries"][0]["payload"]["from"] == "BlueLake"
    _, _, spoof = jwt_bridge.tool("send_message", {"project_key": PROJECT, "sender_name": "GreenCastle",
                                                   "to": "BlueLake", "subject": "x", "body_md": "x"}, writer)
    assert spoof["result"]["structuredContent"]["error"]["code"] == "AUTHENTICATION_REQUIRED"


def test_rate_limits_answer_429_with_retry_after_and_refusals_cost_nothing(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
                                   "http_rate_limit_enabled = true\nhttp_rate_limit_tools_per_minute = 2\n")
    reader = token({"role": "reader"})
    for _ in range(5):
        assert bridge.tool("ensure_project", {"human_key": "x"}, reader)[0] == 403  # no tokens spent
        assert bridge.tool("health_check", {}, "garbage")[0] == 401
    assert bridge.tool("health_check", {}, reader)[0] == 200
    assert bridge.tool("health_check", {}, reader)[0] == 200
    status, headers, _ = bridge.tool("health_check", {}, reader)
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    other = token({"role": "reader", "sub": "bob"})
    assert bridge.tool("health_check", {}, other)[0] == 200, "buckets are per identity"


def test_oversized_bodies_and_foreign_hosts_are_refused(jwt_bridge: Bridge) -> None:
    status, _, _ = jwt_bridge.tool("ensure_project", {"human_key": "x" * (5 * 1024 * 1024)}, good())
    assert status == 413
    status, _, _ = jwt_bridge.post("tools/call", {"name": "health_check", "arguments": {}}, good(),
                                   headers={"Host": "evil.example:80"})
    assert status in (400, 421), "DNS-rebinding protection refuses foreign Host headers"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None and shutil.which("apt-get"):
        for command in (["apt-get", "install", "-y", "-q", "redis-server"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "redis-server"]):
            subprocess.run(command, capture_output=True, check=False, timeout=600)
            server = shutil.which("redis-server")
            if server:
                break
    if server is None:
        pytest.skip("redis-server is not installed and apt-get could not install it")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir",
                             str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.timeout(900)  # on a fresh machine the fixture may first apt-get install redis-server
def test_two_bridges_share_limits_through_redis(mailbox: Mailbox, tmp_path: Path, redis_url: str) -> None:
    config = (f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\nhttp_rate_limit_enabled = true\n'
              f'http_rate_limit_tools_per_minute = 3\nhttp_rate_limit_backend = "redis"\n'
              f'http_rate_limit_redis_url = "{redis_url}"\n')
    first = start_bridge(mailbox, config)
    other_box = Mailbox(git_init(tmp_path / "second"), mailbox.backend)
    try:
        second = start_bridge(other_box, config)
        caller = token({"role": "reader", "sub": "shared"})
        statuses = [bridge.tool("health_check", {}, caller)[0] for bridge in (first, second, first, second)]
        assert statuses == [200, 200, 200, 429]
    finally:
        other_box.stop()


# --- CORS, Origin, deadlines ---------------------------------------------------------------------

APP_ORIGIN = "https://app.example"


def preflight(bridge: Bridge, origin: str) -> tuple[int, dict[str, str]]:
    return bridge.request("OPTIONS", {"Origin": origin, "Access-Control-Request-Method": "POST",
                                      "Access-Control-Request-Headers": "authorization, content-type"})


def test_cors_preflights_are_answered_without_credentials_and_refusals_carry_the_grant(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
                                   f'http_cors_enabled = true\nhttp_cors_origins = "{APP_ORIGIN}"\n')
    status, headers = preflight(bridge, APP_ORIGIN)
    assert status in (200, 204)
    assert headers["access-control-allow-origin"] == APP_ORIGIN
    assert "authorization" in headers["access-control-allow-headers"].lower()
    assert "POST" in headers["access-control-allow-methods"]
    status, headers, _ = bridge.post("tools/call", {"name": "health_check", "arguments": {}},
                                     headers={"Origin": APP_ORIGIN})
    assert status == 401
    assert headers["access-control-allow-origin"] == APP_ORIGIN, "the browser may read the 401"
    status, headers, _ = bridge.post("tools/call", {"name": "health_check", "arguments": {}},
                                     token({"role": "reader"}), headers={"Origin": APP_ORIGIN})
    assert status == 200
    assert headers["access-control-allow-origin"] == APP_ORIGIN
    status, headers = preflight(bridge, "https://evil.example")
    assert "access-control-allow-origin" not in headers
    assert status >= 400


def test_cors_is_off_by_default(jwt_bridge: Bridge) -> None:
    status, headers = preflight(jwt_bridge, "http://localhost:3000")
    assert "access-control-allow-origin" not in headers
    assert status == 401, "without CORS an OPTIONS request is just an unauthenticated request"


def test_a_foreign_origin_is_refused_and_a_local_one_accepted(jwt_bridge: Bridge) -> None:
    call = {"name": "health_check", "arguments": {}}
    assert jwt_bridge.post("tools/call", call, good(), headers={"Origin": "https://evil.example"})[0] == 403
    local = {"Origin": f"http://localhost:{jwt_bridge.port}"}
    assert jwt_bridge.post("tools/call", call, good(), headers=local)[0] == 200


def test_a_request_whose_body_stalls_is_cut_off_at_the_deadline(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
                                   "http_request_timeout_seconds = 0.5\n")
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=30) as conn:
        conn.sendall((f"POST /mcp/ HTTP/1.1\r\nHost: 127.0.0.1:{bridge.port}\r\n"
                      f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                      f"Authorization: Bearer {good()}\r\nContent-Length: 200\r\n\r\n{{\"jsonrpc\"").encode())
        answer = conn.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert bridge.tool("health_check", {}, good())[0] == 200, "a prompt request still works"


# --- readiness ---------------------------------------------------------------------------------------


def test_readiness_checks_the_database_and_answers_503_when_it_cannot_be_queried(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, "archive_enabled = false\n")
    status, body = bridge.get("/health/readiness")
    assert (status, body["status"], body["database"]) == (200, "ready", {"ok": True})
    db = sqlite3.connect(mailbox.paths.db, timeout=10)
    try:
        db.execute("ALTER TABLE archive_outbox RENAME TO archive_outbox_moved_away")
        db.commit()
        status, body = bridge.get("/health/readiness")
        assert (status, body["status"], body["database"]) == (503, "not ready", {"ok": False})
        db.execute("ALTER TABLE archive_outbox_moved_away RENAME TO archive_outbox")
        db.commit()
    finally:
        db.close()
    assert bridge.get("/health/readiness")[0] == 200
    assert bridge.get("/health/liveness")[0] == 200


def test_readiness_reports_the_archive(jwt_bridge: Bridge) -> None:
    status, body = jwt_bridge.get("/health/readiness")
    assert status == 200
    assert body["archive"]["ok"] is True
    assert "queue_depth" in body["archive"]
    assert "root" not in json.dumps(body), "no paths on an unauthenticated route"


# --- JWT: JWKS URL, leeway, role claim -----------------------------------------------------------------


@pytest.fixture
def jwks_server(keys: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """A JWKS served over real HTTP; yields its URL and the list of paths fetched."""
    document = keys["jwks_file"].read_bytes()
    fetched: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", fetched
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_jwks_url_is_fetched_once_cached_and_unknown_kids_cannot_force_refetches(
    mailbox: Mailbox, keys: dict[str, Any], jwks_server: tuple[str, list[str]]
) -> None:
    url, fetched = jwks_server
    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_algorithms = "RS256,ES256"\n'
                                   f'http_jwt_jwks_url = "{url}"\n')
    assert fetched == [], "fetched on first use, not at start"
    for sub in ("a", "b", "c"):
        assert bridge.tool("health_check", {}, token({"sub": sub}, keys["rsa"], "RS256", kid="rsa-1"))[0] == 200
    assert bridge.tool("health_check", {}, token({}, keys["ec"], "ES256", kid="ec-1"))[0] == 200
    assert fetched == ["/jwks.json"], "one fetch serves every later token"
    for n in range(5):
        forged = token({"sub": f"m{n}"}, keys["rsa"], "RS256", kid=f"made-up-{n}")
        assert bridge.tool("health_check", {}, forged)[0] == 401
    assert len(fetched) <= 2, "unknown kids refetch at most once per interval"
    # An ES key presented for an RS token: refused even though the kid exists.
    assert bridge.tool("health_check", {}, token({}, keys["rsa"], "RS256", kid="ec-1"))[0] == 401


def test_clock_skew_within_the_leeway_is_tolerated(jwt_bridge: Bridge) -> None:
    now = int(time.time())
    assert jwt_bridge.tool("health_check", {}, good(exp=now - 10))[0] == 200, "expired 10 s ago, leeway 30 s"
    assert jwt_bridge.tool("health_check", {}, good(nbf=now + 10))[0] == 200, "valid in 10 s, leeway 30 s"
    assert jwt_bridge.tool("health_check", {}, good(exp=now - 120))[0] == 401
    assert jwt_bridge.tool("health_check", {}, good(nbf=now + 120))[0] == 401


def test_the_leeway_and_the_role_claim_are_configurable(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
                                   'http_jwt_leeway_seconds = 0\nhttp_jwt_role_claim = "scope"\n')
    assert bridge.tool("health_check", {}, token({"exp": int(time.time()) - 10}))[0] == 401, "no leeway"
    writer = token({"scope": "openid write"})  # a space-separated scope string works as a role list
    assert bridge.tool("ensure_project", {"human_key": PROJECT}, writer)[0] == 200
    default_claim = token({"role": "writer"})  # the usual claim is ignored: the default role applies
    assert bridge.tool("ensure_project", {"human_key": PROJECT}, default_claim)[0] == 403
    assert bridge.tool("health_check", {}, default_claim)[0] == 200


# --- rate limits: resources, unlimited, eviction, Redis down ---------------------------------------


def test_resource_reads_have_their_own_limit_and_a_rate_of_zero_means_unlimited(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
                                   "http_rate_limit_enabled = true\nhttp_rate_limit_tools_per_minute = 0\n"
                                   "http_rate_limit_resources_per_minute = 2\n")
    reader = token({"role": "reader"})
    assert [bridge.tool("health_check", {}, reader)[0] for _ in range(6)] == [200] * 6, "0 = unlimited"
    read = [bridge.post("resources/read", {"uri": "resource://projects"}, reader) for _ in range(3)]
    assert [status for status, _, _ in read] == [200, 200, 429]
    assert int(read[2][1]["retry-after"]) >= 1


def test_idle_buckets_are_evicted_by_their_own_refill_time_and_the_count_stays_capped(mailbox: Mailbox) -> None:
    # Tool buckets take a minute to refill; resource buckets refill in microseconds.
    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
                                   "http_rate_limit_enabled = true\nhttp_rate_limit_tools_per_minute = 1\n"
                                   "http_rate_limit_resources_per_minute = 6000000\n"
                                   "http_rate_limit_resources_burst = 1\nhttp_rate_limit_max_buckets = 2\n")
    drained = token({"role": "reader", "sub": "drained"})
    assert bridge.tool("health_check", {}, drained)[0] == 200
    assert bridge.tool("health_check", {}, drained)[0] == 429
    for n in range(6):
        reader = token({"role": "reader", "sub": f"reader-{n}"})
        assert bridge.post("resources/read", {"uri": "resource://projects"}, reader)[0] == 200
    stats = bridge.get("/health/readiness")[1]["rate_limit"]
    assert stats["buckets"] <= 2
    assert stats["evicted"] >= 4
    assert bridge.tool("health_check", {}, drained)[0] == 429, "a bucket still refilling is not forgotten"


def test_the_memory_limiter_forgets_each_bucket_after_its_own_refill_time() -> None:
    now = [0.0]
    limiter = MemoryLimiter(max_buckets=3, clock=lambda: now[0])
    slow, fast = Limit(per_minute=1, burst=1), Limit(per_minute=600, burst=1)  # 60 s and 0.1 s to refill
    assert limiter.take_now("slow", slow) == (True, 0)
    for n in range(3):
        now[0] += 1.0
        assert limiter.take_now(f"fast-{n}", fast)[0]
    assert len(limiter) <= 3
    assert limiter.take_now("slow", slow)[0] is False, "the slow bucket survived the sweeps"
    now[0] += 61
    limiter.evict()
    assert len(limiter) == 0, "every bucket has refilled: nothing worth keeping"
    assert limiter.take_now("unlimited", Limit(per_minute=0, burst=0)) == (True, 0)
    assert len(limiter) == 0, "an unlimited rate keeps no bucket"


def test_the_memory_limiter_drops_the_least_recently_used_above_the_cap() -> None:
    now = [0.0]
    limiter = MemoryLimiter(max_buckets=10, clock=lambda: now[0])
    slow = Limit(per_minute=1, burst=1)
    for n in range(1000):
        limiter.take_now(f"k{n}", slow)
    assert len(limiter) <= 10
    assert limiter.take_now("k999", slow)[0] is False, "the most recent buckets are kept"


def test_with_redis_down_limits_fall_back_to_this_bridge_with_a_warning(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
                                   "http_rate_limit_enabled = true\nhttp_rate_limit_tools_per_minute = 2\n"
                                   f'http_rate_limit_backend = "redis"\n'
                                   f'http_rate_limit_redis_url = "redis://127.0.0.1:{free_port()}/0"\n')
    reader = token({"role": "reader"})
    assert [bridge.tool("health_check", {}, reader)[0] for _ in range(3)] == [200, 200, 429]
    stats = bridge.get("/health/readiness")[1]["rate_limit"]
    assert stats["backend"] == "redis"
    assert stats["redis_ok"] is False
    log = mailbox.paths.log_file.read_text()
    assert log.count("Redis rate-limit backend unreachable") == 1, "one warning per outage"


# --- real processes ----------------------------------------------------------------------------------


def test_mailctl_serve_http_starts_a_bridge_that_answers(mailbox: Mailbox) -> None:
    port = free_port()
    result = mailctl_serve_http(mailbox, port)
    assert f"http://127.0.0.1:{port}/mcp/" in result.stdout
    bridge = Bridge(mailbox, port)
    live = bridge.get("/health/liveness")
    assert live == (200, {"status": "alive", "instance": mailbox.status()["instance"]})  # type: ignore[index]
    assert bridge.tool("health_check", {}, None)[0] == 401, "no credentials configured: nothing passes"


def mailctl_serve_http(mailbox: Mailbox, port: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in mailbox.env.items() if not k.startswith(("HTTP_", "AGENT_MAIL_HTTP"))}
    return subprocess.run([sys.executable, "-P", "-m", "mailctl", "serve-http", "--port", str(port)],
                          env=env, cwd=mailbox.root, capture_output=True, text=True, check=True, timeout=60)


def test_maild_with_http_flag_serves_the_bridge(mailbox: Mailbox) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-P", "-m", "maild", "--root", str(mailbox.root), "--http",
                             "--http-port", str(port), "--backend", mailbox.backend],
                            env=mailbox.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_bridge(port)
        assert Bridge(mailbox, port).get("/health/readiness")[1]["status"] == "ready"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()[-500:]
