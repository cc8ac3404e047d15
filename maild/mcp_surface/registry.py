"""Tool and resource registries: schemas, argument validation, and error conversion.

Every tool is an async function `fn(services, args)` whose `args` is a pydantic model; its JSON
Schema (compacted: no titles, `X | None` shown as `X`) is what `tools/list` advertises, and the
same model validates every call — the low-level SDK server validates nothing itself. This is one
of the two places where `MailError` becomes a wire error (the CLI is the other).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError

from maild.mcp_surface.hints import for_caller
from shared.errors import InvalidArgument, MailError, NotFound

log = logging.getLogger(__name__)


class Args(BaseModel):
    """Base for tool argument models: unknown parameters are an error, not silently ignored.
    `defer_build`: a model's validator is built at its tool's first call, not at import — building
    all of them was most of the daemon's cold start, and the first health_check needs one."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ToolOutput:
    """A tool result with pictures beside its JSON: the server adds them as MCP ImageContent."""

    structured: dict[str, Any]
    images: list[tuple[str, bytes]]  # (media type, bytes)


@dataclass(frozen=True)
class ResourceOutput:
    """A resource answer with binary parts: `data` (JSON, optional) then one blob per item."""

    data: Any
    blobs: list[tuple[str, str, bytes]]  # (uri, media type, bytes)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    args: type[Args]
    handler: Handler
    core: bool
    category: str
    read_only: bool
    idempotent: bool

    def input_schema(self) -> dict[str, Any]:
        """The tool's JSON schema (shared, do not mutate): pydantic takes ~1 ms a tool to build one,
        and tools/list, list_extended_tools and tooling/schemas ask for every tool each time."""
        return _input_schema(self.args)


@functools.cache
def _input_schema(args: type[Args]) -> dict[str, Any]:
    schema: dict[str, Any] = compact_schema(args.model_json_schema())
    return schema


_STRING_OR_LIST = [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]


def compact_schema(schema: Any) -> Any:
    """Drop what a model does not need to read (every tools/list costs tokens on every turn):
    titles, `additionalProperties` (still enforced), a boolean's `default: false` (an absent flag
    is off), `anyOf [X, null]` -> `X`, and `anyOf [string, string[]]` -> one `type: [string, array]`."""
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: compact_schema(v) for k, v in schema.items() if k not in ("title", "additionalProperties")}
    if out.get("type") == "boolean" and out.get("default", ...) is False:
        del out["default"]
    options = out.get("anyOf")
    if isinstance(options, list) and [o for o in options if o != {"type": "null"}] == _STRING_OR_LIST:
        del out["anyOf"]
        out = {"type": ["string", "array"], "items": {"type": "string"}, **out}
        if out.get("default", ...) is None:
            del out["default"]
        return out
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        (other,) = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        out = {**other, **out}
        if out.get("default", ...) is None:
            del out["default"]
    return out


def describe_validation_error(tool: str, exc: ValidationError, model: type[Args]) -> InvalidArgument:
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        problems.append(f"{where}: {err['msg']}")
    allowed = ", ".join(
        f"{name}{'' if field.is_required() else '?'}" for name, field in model.model_fields.items()
    )
    return InvalidArgument(
        f"invalid arguments for {tool}: {'; '.join(problems)}. Parameters: {allowed or 'none'}",
        data={"errors": problems},
    )


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}

    def tool(
        self, *, core: bool, category: str, read_only: bool = False, idempotent: bool = False
    ) -> Callable[[Handler], Handler]:
        """Register `fn(services, args: SomeArgs)`; its docstring is the description a model reads."""

        def register(fn: Handler) -> Handler:
            hints = get_type_hints(fn)
            params = list(inspect.signature(fn).parameters)
            args_model = hints[params[1]]
            name = fn.__name__
            if name in self._tools:
                raise ValueError(f"tool {name} registered twice")
            self._tools[name] = ToolSpec(
                name=name,
                description=inspect.cleandoc(fn.__doc__ or ""),
                args=args_model,
                handler=fn,
                core=core,
                category=category,
                read_only=read_only,
                idempotent=idempotent,
            )
            return fn

        return register

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def all(self) -> list[ToolSpec]:
        return sorted(self._tools.values(), key=lambda spec: spec.name)

    def listed(self, mode: str) -> list[ToolSpec]:
        """The tools `tools/list` shows: everything in `extended` mode, the core ones otherwise."""
        return [spec for spec in self.all() if mode == "extended" or spec.core]

    async def call(self, services: Any, name: str, arguments: dict[str, Any] | None) -> Any:
        """Validate and run one tool. Raises MailError (NOT_FOUND for an unknown tool)."""
        spec = self._tools.get(name)
        if spec is None:
            raise NotFound(
                f"unknown tool {name!r}; call tools/list (or list_extended_tools) to see the available tools",
                data={"tool": name},
            )
        arguments = arguments or {}
        metrics = services.metrics
        if not metrics.enabled:
            return await self._run(services, spec, arguments)
        # The one place every call passes (lean and SDK dispatch, HTTP, call_extended_tool's inner
        # call): count it here. A cancelled call (a client gone) is neither a result nor an error.
        started = time.perf_counter_ns()
        try:
            result = await self._run(services, spec, arguments)
        except Exception:
            metrics.record(name, time.perf_counter_ns() - started, False, arguments)
            raise
        metrics.record(name, time.perf_counter_ns() - started, True, arguments)
        return result

    @staticmethod
    async def _run(services: Any, spec: ToolSpec, arguments: dict[str, Any]) -> Any:
        check_values(arguments)
        try:
            args = spec.args.model_validate(arguments)
        except ValidationError as exc:
            raise describe_validation_error(spec.name, exc, spec.args) from None
        return await spec.handler(services, args)


MAX_DEPTH = 32
INT64 = (-(2**63), 2**63 - 1)


def check_values(value: Any, where: str = "arguments", depth: int = 0) -> None:
    """Refuse what no tool can store: nesting past MAX_DEPTH, integers outside SQLite's 64 bits,
    and strings with lone surrogates (not Unicode text; they cannot be written as UTF-8)."""
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{where}: nested more than {MAX_DEPTH} levels deep; send flatter arguments")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgument(
                f"{where}: contains a lone surrogate at position {exc.start}; send valid Unicode text"
            ) from None
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT64[0] <= value <= INT64[1]:
            raise InvalidArgument(f"{where}: {value} is outside the 64-bit integer range")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_values(key, where, depth + 1)
            check_values(item, str(key) if where == "arguments" else f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_values(item, f"{where}[{index}]", depth + 1)


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The structured body of a failed call: stable code, message, and recoverability."""
    if isinstance(exc, MailError):
        return for_caller(exc.to_dict())  # hints worded for the CLI when the caller is mailctl
    return {
        "code": "INTERNAL_ERROR",
        "message": "internal error in maild; see .mcp_mail/maild.log (mailctl daemon logs)",
        "recoverable": False,
    }


def to_text(result: Any) -> str:
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"), default=str)


# ---------------------------------------------------------------------------------------------
# Resources: URI templates such as `resource://inbox/{agent}` with optional `?k=v` query params.


@dataclass(frozen=True)
class ResourceSpec:
    template: str
    name: str
    description: str
    handler: Callable[..., Awaitable[Any]]
    pattern: re.Pattern[str]

    def match(self, uri: str) -> dict[str, str] | None:
        base, _, query = uri.partition("?")
        found = self.pattern.fullmatch(base)
        if found is None:
            return None
        values = {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            values.setdefault(key, value)
        return values


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[a-z_][a-z0-9_]*\*?\})", template)
    out = []
    for part in parts:
        if part.startswith("{"):
            name = part.strip("{}*")
            out.append(f"(?P<{name}>.+)" if part.endswith("*}") else f"(?P<{name}>[^/]+)")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


class ResourceRegistry:
    def __init__(self) -> None:
        self._resources: list[ResourceSpec] = []

    def resource(self, template: str, name: str) -> Callable[[Handler], Handler]:
        """Register `fn(services, **params)` for a URI template; query parameters arrive as kwargs."""

        def register(fn: Handler) -> Handler:
            self._resources.append(
                ResourceSpec(template, name, inspect.cleandoc(fn.__doc__ or ""), fn, _template_regex(template))
            )
            return fn

        return register

    def all(self) -> list[ResourceSpec]:
        return list(self._resources)

    async def read(self, services: Any, uri: str) -> Any:
        check_values(uri, "uri")
        for spec in self._resources:
            params = spec.match(uri)
            if params is None:
                continue
            accepted = set(inspect.signature(spec.handler).parameters) - {"services"}
            unknown = sorted(set(params) - accepted)
            if unknown:
                raise InvalidArgument(
                    f"unknown parameter(s) {', '.join(unknown)} for {spec.template}; "
                    f"accepted: {', '.join(sorted(accepted))}"
                )
            return await spec.handler(services, **params)
        raise NotFound(f"no resource matches {uri!r}; list them with resources/templates/list", data={"uri": uri})
