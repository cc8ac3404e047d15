"""Settings, resolved in one function with one documented precedence.

    command-line flag  >  environment variable  >  <root>/.mcp_mail/config.toml  >  default

Environment names follow upstream MCP Agent Mail where it had one (`MCP_TOOLS_MODE`,
`AGENT_NAME_ENFORCEMENT_MODE`, ...) so existing setups keep working. The TOML file uses the field
names below. This module only resolves values; it does not watch files or apply settings.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def _env(*names: str) -> dict[str, Any]:
    return {"env": names}


@dataclass(frozen=True)
class Settings:
    # Daemon lifecycle
    idle_timeout_seconds: float = field(default=900.0, metadata=_env("AGENT_MAIL_IDLE_TIMEOUT"))
    log_level: str = field(default="INFO", metadata=_env("AGENT_MAIL_LOG_LEVEL", "LOG_LEVEL"))
    log_json: bool = field(default=False, metadata=_env("AGENT_MAIL_LOG_JSON", "LOG_JSON_ENABLED"))
    # maild.log rotates at this size, keeping `log_backups` old files (maild.log.1, .2, ...).
    log_max_bytes: int = field(default=10 * 1024 * 1024, metadata=_env("AGENT_MAIL_LOG_MAX_BYTES"))
    log_backups: int = field(default=3, metadata=_env("AGENT_MAIL_LOG_BACKUPS"))
    # How often the daemon checks that its mailbox root still exists (it exits once it is deleted).
    root_check_seconds: float = field(default=5.0, metadata=_env("AGENT_MAIL_ROOT_CHECK_SECONDS"))
    # Store. NORMAL survives any process crash (kill -9); FULL also survives power loss.
    synchronous: str = field(default="NORMAL", metadata=_env("AGENT_MAIL_SYNCHRONOUS"))
    busy_timeout_ms: int = field(default=5000, metadata=_env("AGENT_MAIL_BUSY_TIMEOUT_MS"))
    # Read-only connections, each on its own thread (searches and inbox polls run side by side).
    reader_connections: int = field(default=4, metadata=_env("AGENT_MAIL_READER_CONNECTIONS"))
    # MCP surface
    tools_mode: str = field(default="core", metadata=_env("MCP_TOOLS_MODE"))
    # Serve tools/call, tools/list and resources/read through the lean dispatcher (false: the SDK
    # answers everything, for comparison; the answers are the same JSON).
    transport_fast_path: bool = field(default=True, metadata=_env("AGENT_MAIL_TRANSPORT_FAST_PATH"))
    # Tool metrics (resource://tooling/metrics): recorded in memory per call, flushed to the database
    # this often and at shutdown. false records nothing (the bench's baseline).
    tool_metrics_enabled: bool = field(default=True, metadata=_env("AGENT_MAIL_TOOL_METRICS"))
    tool_metrics_flush_seconds: float = field(default=30.0, metadata=_env("AGENT_MAIL_TOOL_METRICS_FLUSH_SECONDS"))
    # Identity and messaging (used by the messaging services)
    name_enforcement_mode: str = field(default="coerce", metadata=_env("AGENT_NAME_ENFORCEMENT_MODE"))
    auto_register_recipients: bool = field(
        default=False, metadata=_env("MESSAGING_AUTO_REGISTER_RECIPIENTS")
    )
    max_body_bytes: int = field(default=1024 * 1024, metadata=_env("AGENT_MAIL_MAX_BODY_BYTES"))
    # Attachments (upstream names). Paths resolve against the mailbox root; images become WebP.
    convert_images: bool = field(default=True, metadata=_env("CONVERT_IMAGES"))
    keep_original_images: bool = field(default=False, metadata=_env("KEEP_ORIGINAL_IMAGES"))
    inline_image_max_bytes: int = field(default=64 * 1024, metadata=_env("INLINE_IMAGE_MAX_BYTES"))
    allow_absolute_attachment_paths: bool = field(default=False, metadata=_env("ALLOW_ABSOLUTE_ATTACHMENT_PATHS"))
    attachment_max_bytes: int = field(default=25 * 1024 * 1024, metadata=_env("ATTACHMENT_MAX_BYTES"))
    attachment_message_max_bytes: int = field(
        default=100 * 1024 * 1024, metadata=_env("ATTACHMENT_MESSAGE_MAX_BYTES")
    )
    webp_method: int = field(default=6, metadata=_env("WEBP_METHOD"))  # libwebp effort 0 (fast) .. 6 (small)
    webp_quality: int = field(default=80, metadata=_env("WEBP_QUALITY"))
    # Who reads a project's mail: every agent of the project (`project`, upstream's model) or only
    # its sender and recipients (`participants`). Inboxes and bcc stay personal either way.
    message_visibility: str = field(default="project", metadata=_env("MESSAGE_VISIBILITY"))
    broadcast_max_recipients: int = field(default=100, metadata=_env("BROADCAST_MAX_RECIPIENTS"))
    # `@Name` in a body shows the message in Name's fetch_inbox (source "mention"), not a delivery.
    mentions_enabled: bool = field(default=True, metadata=_env("MESSAGING_MENTIONS_ENABLED"))
    # Retire agents idle longer than this many days (0: never), checked by a background sweep.
    agent_auto_retire_days: float = field(default=0.0, metadata=_env("AGENT_AUTO_RETIRE_DAYS"))
    # Archive
    archive_enabled: bool = field(default=True, metadata=_env("AGENT_MAIL_ARCHIVE_ENABLED"))
    # A git URL (ssh, https, or a path) the archive is pushed to after group commits; "" = no mirror.
    archive_remote: str = field(default="", metadata=_env("AGENT_MAIL_ARCHIVE_REMOTE", "ARCHIVE_REMOTE"))
    archive_push_interval_seconds: float = field(default=2.0, metadata=_env("ARCHIVE_PUSH_INTERVAL_SECONDS"))
    # Under sustained load a group commit starts at most this often: every commit rewrites the trees
    # of each folder it touches, so fewer, larger commits keep the archive small (docs/archive.md).
    archive_commit_interval_seconds: float = field(
        default=0.5, metadata=_env("ARCHIVE_COMMIT_INTERVAL_SECONDS")
    )
    git_author_name: str = field(default="agent-mail", metadata=_env("GIT_AUTHOR_NAME"))
    git_author_email: str = field(default="agent-mail@localhost", metadata=_env("GIT_AUTHOR_EMAIL"))
    reservation_sweep_seconds: float = field(
        default=60.0, metadata=_env("FILE_RESERVATIONS_CLEANUP_INTERVAL_SECONDS")
    )
    # Force-release: a holder is stale after this long without agent activity, and with no mail,
    # file change or commit touching the reserved paths within the grace period.
    reservation_inactivity_seconds: float = field(
        default=1800.0, metadata=_env("FILE_RESERVATION_INACTIVITY_SECONDS")
    )
    reservation_activity_grace_seconds: float = field(
        default=900.0, metadata=_env("FILE_RESERVATION_ACTIVITY_GRACE_SECONDS")
    )
    # HTTP bridge (upstream names). Lists are comma-separated.
    http_enabled: bool = field(default=False, metadata=_env("AGENT_MAIL_HTTP", "HTTP_ENABLED"))
    http_host: str = field(default="127.0.0.1", metadata=_env("HTTP_HOST"))
    http_port: int = field(default=8765, metadata=_env("HTTP_PORT"))
    http_path: str = field(default="/mcp/", metadata=_env("HTTP_PATH"))
    # Upstream's stateless bridge: a POST of tools/call needs no initialize and no session id.
    # A client that does initialize still gets a stateful session.
    http_stateless: bool = field(default=True, metadata=_env("HTTP_STATELESS"))
    http_bearer_token: str = field(default="", metadata=_env("HTTP_BEARER_TOKEN"))
    http_allow_localhost_unauthenticated: bool = field(
        default=False, metadata=_env("HTTP_ALLOW_LOCALHOST_UNAUTHENTICATED")
    )
    http_jwt_enabled: bool = field(default=False, metadata=_env("HTTP_JWT_ENABLED"))
    http_jwt_algorithms: str = field(default="HS256", metadata=_env("HTTP_JWT_ALGORITHMS"))
    http_jwt_secret: str = field(default="", metadata=_env("HTTP_JWT_SECRET"))
    http_jwt_jwks_file: str = field(default="", metadata=_env("HTTP_JWT_JWKS_FILE"))
    http_jwt_jwks_url: str = field(default="", metadata=_env("HTTP_JWT_JWKS_URL"))
    http_jwt_audience: str = field(default="", metadata=_env("HTTP_JWT_AUDIENCE"))
    http_jwt_issuer: str = field(default="", metadata=_env("HTTP_JWT_ISSUER"))
    http_jwt_role_claim: str = field(default="role", metadata=_env("HTTP_JWT_ROLE_CLAIM"))
    http_jwt_agent_claim: str = field(default="agent", metadata=_env("HTTP_JWT_AGENT_CLAIM"))
    http_jwt_leeway_seconds: float = field(default=30.0, metadata=_env("HTTP_JWT_LEEWAY_SECONDS"))
    http_rbac_enabled: bool = field(default=True, metadata=_env("HTTP_RBAC_ENABLED"))
    http_rbac_reader_roles: str = field(default="reader,read,ro", metadata=_env("HTTP_RBAC_READER_ROLES"))
    http_rbac_writer_roles: str = field(default="writer,write,tools,rw", metadata=_env("HTTP_RBAC_WRITER_ROLES"))
    http_rbac_default_role: str = field(default="reader", metadata=_env("HTTP_RBAC_DEFAULT_ROLE"))
    http_rbac_readonly_tools: str = field(
        default="health_check,fetch_inbox,whois,search_messages,summarize_thread,summarize_threads",
        metadata=_env("HTTP_RBAC_READONLY_TOOLS"),
    )
    http_rate_limit_enabled: bool = field(default=False, metadata=_env("HTTP_RATE_LIMIT_ENABLED"))
    http_rate_limit_backend: str = field(default="memory", metadata=_env("HTTP_RATE_LIMIT_BACKEND"))
    http_rate_limit_redis_url: str = field(default="", metadata=_env("HTTP_RATE_LIMIT_REDIS_URL"))
    http_rate_limit_tools_per_minute: int = field(default=60, metadata=_env("HTTP_RATE_LIMIT_TOOLS_PER_MINUTE"))
    http_rate_limit_resources_per_minute: int = field(
        default=120, metadata=_env("HTTP_RATE_LIMIT_RESOURCES_PER_MINUTE")
    )
    http_rate_limit_tools_burst: int = field(default=0, metadata=_env("HTTP_RATE_LIMIT_TOOLS_BURST"))
    http_rate_limit_resources_burst: int = field(default=0, metadata=_env("HTTP_RATE_LIMIT_RESOURCES_BURST"))
    http_rate_limit_max_buckets: int = field(default=100_000, metadata=_env("HTTP_RATE_LIMIT_MAX_BUCKETS"))
    http_cors_enabled: bool = field(default=False, metadata=_env("HTTP_CORS_ENABLED"))
    http_cors_origins: str = field(default="", metadata=_env("HTTP_CORS_ORIGINS"))
    # Behind a reverse proxy we trust: logs and refusals name the client from X-Forwarded-For's last hop.
    http_trust_forwarded_for: bool = field(default=False, metadata=_env("HTTP_TRUST_FORWARDED_FOR"))
    http_allowed_hosts: str = field(default="", metadata=_env("HTTP_ALLOWED_HOSTS"))
    http_max_body_bytes: int = field(default=4 * 1024 * 1024, metadata=_env("HTTP_MAX_BODY_BYTES"))
    http_request_timeout_seconds: float = field(default=30.0, metadata=_env("HTTP_REQUEST_TIMEOUT_SECONDS"))
    # The bridge's HTTP server (docs/transport.md): auto = uvicorn + httptools on asyncio, hypercorn on trio.
    http_server: str = field(default="auto", metadata=_env("HTTP_SERVER"))
    # Web mailbox on the bridge (docs/web.md): login-link lifetime and the session cookie's.
    web_enabled: bool = field(default=True, metadata=_env("AGENT_MAIL_WEB"))
    web_login_ttl_seconds: float = field(default=600.0, metadata=_env("AGENT_MAIL_WEB_LOGIN_TTL"))
    web_session_seconds: float = field(default=12 * 3600.0, metadata=_env("AGENT_MAIL_WEB_SESSION_SECONDS"))
    # Ack deadlines (docs/messaging.md, "Ack deadlines"): an ack_required message still unacknowledged
    # ACK_TTL_SECONDS after it was sent is overdue. With ACK_TTL_ENABLED a background scanner logs
    # `ack_overdue` for each (message, recipient) once and, with ACK_ESCALATION_ENABLED, escalates it
    # once: `message` reminds the recipient and tells the sender, `file_reservation` reserves the
    # recipient's archive inbox folder (upstream), `log` only logs.
    ack_ttl_seconds: int = field(default=1800, metadata=_env("ACK_TTL_SECONDS"))
    ack_ttl_enabled: bool = field(default=False, metadata=_env("ACK_TTL_ENABLED"))
    ack_ttl_scan_interval_seconds: float = field(default=60.0, metadata=_env("ACK_TTL_SCAN_INTERVAL_SECONDS"))
    ack_escalation_enabled: bool = field(default=False, metadata=_env("ACK_ESCALATION_ENABLED"))
    ack_escalation_mode: str = field(default="log", metadata=_env("ACK_ESCALATION_MODE"))
    ack_escalation_claim_ttl_seconds: int = field(default=3600, metadata=_env("ACK_ESCALATION_CLAIM_TTL_SECONDS"))
    ack_escalation_claim_exclusive: bool = field(default=False, metadata=_env("ACK_ESCALATION_CLAIM_EXCLUSIVE"))
    ack_escalation_claim_holder_name: str = field(default="", metadata=_env("ACK_ESCALATION_CLAIM_HOLDER_NAME"))
    # Search: bm25 ranks only the newest N matches a caller may see (cost grows with matches).
    search_rank_window: int = field(default=2000, metadata=_env("AGENT_MAIL_SEARCH_RANK_WINDOW"))
    # LLM summaries (litellm). Off unless LLM_ENABLED and a model are set: no provider is ever
    # called by default. `llm_mock_response` is litellm's mock_response, for tests and demos.
    llm_enabled: bool = field(default=False, metadata=_env("LLM_ENABLED"))
    llm_default_model: str = field(default="", metadata=_env("LLM_DEFAULT_MODEL"))
    llm_temperature: float = field(default=0.2, metadata=_env("LLM_TEMPERATURE"))
    llm_max_tokens: int = field(default=512, metadata=_env("LLM_MAX_TOKENS"))
    llm_cache_enabled: bool = field(default=True, metadata=_env("LLM_CACHE_ENABLED"))
    llm_cache_backend: str = field(default="memory", metadata=_env("LLM_CACHE_BACKEND"))
    llm_cost_logging_enabled: bool = field(default=True, metadata=_env("LLM_COST_LOGGING_ENABLED"))
    llm_timeout_seconds: float = field(default=30.0, metadata=_env("LLM_TIMEOUT_SECONDS"))
    llm_input_token_budget: int = field(default=3000, metadata=_env("LLM_INPUT_TOKEN_BUDGET"))
    llm_mock_response: str = field(default="", metadata=_env("LLM_MOCK_RESPONSE"))


_CHOICES = {
    "tools_mode": ("core", "extended"),
    "name_enforcement_mode": ("strict", "coerce", "always_auto"),
    "message_visibility": ("project", "participants"),
    "synchronous": ("NORMAL", "FULL"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "http_rate_limit_backend": ("memory", "redis"),
    "http_server": ("auto", "uvicorn", "uvicorn-h11", "hypercorn"),
    "llm_cache_backend": ("memory",),
    "ack_escalation_mode": ("log", "message", "file_reservation"),
}
_RANGES = {"reader_connections": (1, 64), "webp_method": (0, 6), "webp_quality": (1, 100),
           "broadcast_max_recipients": (1, 10_000), "log_max_bytes": (4096, 2**40), "log_backups": (1, 100),
           "ack_ttl_seconds": (1, 10**8), "ack_escalation_claim_ttl_seconds": (60, 10**8)}
# Upstream treats an invalid tools mode as `core`; we keep that lenience for this one key only.
_LENIENT = {"tools_mode": "core"}


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the key and the allowed values."""


def _in_range(name: str, number: int, source: str) -> int:
    low, high = _RANGES.get(name, (number, number))
    if not low <= number <= high:
        raise ConfigError(f"{name} from {source} must be between {low} and {high}, got {number}")
    return number


def _convert(name: str, kind: type, raw: Any, source: str) -> Any:
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(raw)  # noqa: TRY301 - joins the conversion errors handled just below
        if kind is int:
            return _in_range(name, int(raw), source)
        if kind is float:
            return float(raw)
        value = str(raw).strip()
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{name} from {source} must be a {kind.__name__}, got {raw!r}") from None
    choices = _CHOICES.get(name)
    if choices is not None:
        normalised = value.upper() if name in ("synchronous", "log_level") else value.lower()
        if normalised not in choices:
            if name in _LENIENT:
                return _LENIENT[name]
            raise ConfigError(f"{name} from {source} must be one of {', '.join(choices)}, got {raw!r}")
        return normalised
    return value


HTTP_NO_AUTH_WARNING = (
    "the HTTP bridge has no authentication configured, so every request gets 401. Set HTTP_BEARER_TOKEN, "
    "or HTTP_JWT_ENABLED=true with HTTP_JWT_SECRET or a JWKS, or HTTP_ALLOW_LOCALHOST_UNAUTHENTICATED=true "
    "for local use only (docs/http.md)"
)


def http_auth_methods(settings: Settings) -> list[str]:
    """The ways an HTTP request can authenticate with these settings (empty: nothing ever passes)."""
    methods = []
    if settings.http_bearer_token:
        methods.append("bearer")
    if settings.http_jwt_enabled and (
        settings.http_jwt_secret or settings.http_jwt_jwks_file or settings.http_jwt_jwks_url
    ):
        methods.append("jwt")
    if settings.http_allow_localhost_unauthenticated:
        methods.append("localhost")
    return methods


def csv(value: str) -> list[str]:
    """A comma-separated setting as a list (empty items dropped)."""
    return [item.strip() for item in value.split(",") if item.strip()]


def load_settings(
    state_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting: overrides (flags) > environment > config.toml > defaults."""
    env = os.environ if environ is None else environ
    file_values: dict[str, Any] = {}
    if state_dir is not None:
        path = state_dir / "config.toml"
        try:
            with path.open("rb") as handle:
                file_values = tomllib.load(handle)
        except FileNotFoundError:
            pass
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}; fix or delete the file") from None
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"unknown keys in {state_dir}/config.toml: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    types = {"bool": bool, "int": int, "float": float, "str": str}
    for spec in fields(Settings):
        kind = types[str(spec.type)]
        if overrides and overrides.get(spec.name) is not None:
            values[spec.name] = _convert(spec.name, kind, overrides[spec.name], "the command line")
            continue
        for env_name in spec.metadata.get("env", ()):
            if env.get(env_name, "") != "":
                values[spec.name] = _convert(spec.name, kind, env[env_name], f"${env_name}")
                break
        else:
            if spec.name in file_values:
                values[spec.name] = _convert(spec.name, kind, file_values[spec.name], "config.toml")
    return Settings(**values)
