"""The notifier's one YAML file, validated at start with one clear error per bad field.

::

    board_url: http://127.0.0.1:8514      # generatorURL / links point there
    max_age: 1h                           # replays older than this behind the fleet: not sent
                                          # ("none": no limit); --max-age overrides it
    repost_interval: 60s                  # open alerts are posted again this often
    templates:                            # str.format templates over the incident's fields
      runbook_url: "https://wiki.example.net/vpn/{cause}"
    sinks:
      am:
        type: alertmanager
        url: http://127.0.0.1:9093
      noc:
        type: webhook
        url: https://noc.example.net/hooks/vpn
        format: record                    # or pagerduty (Events API v2)
        secret_env: TW_NOC_SECRET         # HMAC-SHA256 key (or secret: ...)
        routing_key_env: TW_PD_KEY        # pagerduty: the integration key (or routing_key)
        timeout: 10s
        retry: {initial: 0.5s, max: 30s, attempts: 0}   # attempts 0: until accepted
    routes:                               # none: every sink gets every incident
      - sinks: [am]
      - sinks: [noc]
        match: {cause: [psk_mismatch, peer_unreachable], device: ["edge-*"]}

Only ``yaml.safe_load`` reads the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from streams.core.alerting import (
    DEFAULT_TEMPLATES,
    MATCH_FIELDS,
    TEMPLATE_FIELDS,
    parse_duration,
    template_fields,
)
from streams.errors import ConfigError

SINK_TYPES = ("alertmanager", "webhook")
WEBHOOK_FORMATS = ("record", "pagerduty")
SIGNATURE_HEADER = "X-Tunnelwatch-Signature"
DEFAULT_BOARD_URL = "http://127.0.0.1:8514"
DEFAULT_MAX_AGE = 3600.0
DEFAULT_REPOST = 60.0
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"


class NotifyConfigError(ConfigError):
    """The notifier's configuration is invalid; ``problems`` lists every bad field."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Retry:
    initial: float = 0.5
    maximum: float = 30.0
    attempts: int = 0  # 0: retry until the sink accepts


@dataclass(frozen=True, slots=True)
class SinkConfig:
    name: str
    type: str
    url: str
    format: str = "record"
    secret: bytes | None = None
    routing_key: str | None = None
    timeout: float = 10.0
    retry: Retry = field(default_factory=Retry)


@dataclass(frozen=True, slots=True)
class Route:
    sinks: tuple[str, ...]
    match: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    sinks: tuple[SinkConfig, ...]
    routes: tuple[Route, ...]
    templates: Mapping[str, str]
    board_url: str = DEFAULT_BOARD_URL
    max_age: float | None = DEFAULT_MAX_AGE
    repost_interval: float = DEFAULT_REPOST

    def sink(self, name: str) -> SinkConfig:
        return next(s for s in self.sinks if s.name == name)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def keys(self, where: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                self.bad(f"{where}.{key}", f"unknown field (known: {', '.join(allowed)})")

    def duration(self, where: str, value: Any, default: float) -> float:
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.bad(where, str(exc))
            return default

    def url(self, where: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            self.bad(where, "required: an http:// or https:// URL")
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.bad(where, f"not an http:// or https:// URL: {value!r}")
        return value

    def secret(self, where: str, spec: Mapping[str, Any], name: str) -> str | None:
        """``name`` given inline, or ``name_env`` naming an environment variable."""
        inline, env = spec.get(name), spec.get(f"{name}_env")
        if inline is not None and env is not None:
            self.bad(f"{where}.{name}", f"give {name} or {name}_env, not both")
        if inline is not None:
            if not isinstance(inline, str) or not inline:
                self.bad(f"{where}.{name}", "must be a non-empty string")
                return None
            return inline
        if env is not None:
            if not isinstance(env, str) or not env:
                self.bad(f"{where}.{name}_env", "must name an environment variable")
                return None
            value = os.environ.get(env)
            if not value:
                self.bad(f"{where}.{name}_env", f"environment variable {env} is not set")
                return None
            return value
        return None


def _sink(c: _Checker, name: str, spec: Any) -> SinkConfig | None:
    where = f"sinks.{name}"
    if not isinstance(spec, dict):
        c.bad(where, "must be a mapping (type, url, ...)")
        return None
    c.keys(
        where,
        spec,
        (
            "type", "url", "format", "secret", "secret_env", "routing_key",
            "routing_key_env", "timeout", "retry",
        ),
    )  # fmt: skip
    kind = spec.get("type")
    if kind not in SINK_TYPES:
        c.bad(f"{where}.type", f"must be one of {', '.join(SINK_TYPES)} (got {kind!r})")
        return None
    fmt = spec.get("format", "record")
    if kind == "webhook" and fmt not in WEBHOOK_FORMATS:
        c.bad(f"{where}.format", f"must be one of {', '.join(WEBHOOK_FORMATS)} (got {fmt!r})")
    if kind == "alertmanager" and "format" in spec:
        c.bad(f"{where}.format", "only webhook sinks have a format")
    url = spec.get("url", PAGERDUTY_URL if fmt == "pagerduty" else None)
    url = c.url(f"{where}.url", url)
    secret = c.secret(where, spec, "secret")
    routing_key = c.secret(where, spec, "routing_key")
    if kind == "webhook" and fmt == "pagerduty" and routing_key is None:
        c.bad(f"{where}.routing_key", "required by format pagerduty (or routing_key_env)")
    timeout = c.duration(f"{where}.timeout", spec.get("timeout"), 10.0)
    if timeout <= 0:
        c.bad(f"{where}.timeout", "must be more than 0")
    retry_spec = spec.get("retry") or {}
    retry = Retry()
    if not isinstance(retry_spec, dict):
        c.bad(f"{where}.retry", "must be a mapping (initial, max, attempts)")
    else:
        c.keys(f"{where}.retry", retry_spec, ("initial", "max", "attempts"))
        attempts = retry_spec.get("attempts", 0)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            c.bad(f"{where}.retry.attempts", "must be an integer >= 0 (0: until accepted)")
            attempts = 0
        initial = c.duration(f"{where}.retry.initial", retry_spec.get("initial"), 0.5)
        maximum = c.duration(f"{where}.retry.max", retry_spec.get("max"), 30.0)
        if initial <= 0 or maximum < initial:
            c.bad(f"{where}.retry", "needs 0 < initial <= max")
        retry = Retry(initial, maximum, attempts)
    return SinkConfig(
        name=name,
        type=str(kind),
        url=url,
        format=str(fmt),
        secret=secret.encode("utf-8") if secret is not None else None,
        routing_key=routing_key,
        timeout=timeout,
        retry=retry,
    )


def _route(c: _Checker, i: int, spec: Any, names: set[str]) -> Route | None:
    where = f"routes[{i}]"
    if not isinstance(spec, dict):
        c.bad(where, "must be a mapping (sinks, match)")
        return None
    c.keys(where, spec, ("sinks", "match"))
    sinks = spec.get("sinks")
    if isinstance(sinks, str):
        sinks = [sinks]
    if not isinstance(sinks, list) or not sinks or not all(isinstance(s, str) for s in sinks):
        c.bad(f"{where}.sinks", "required: a list of sink names")
        return None
    for s in sinks:
        if s not in names:
            c.bad(f"{where}.sinks", f"no sink named {s!r} (sinks: {', '.join(sorted(names))})")
    match_spec = spec.get("match") or {}
    match: dict[str, tuple[str, ...]] = {}
    if not isinstance(match_spec, dict):
        c.bad(f"{where}.match", "must be a mapping of field: [glob, ...]")
    else:
        for key, value in match_spec.items():
            if key not in MATCH_FIELDS:
                c.bad(f"{where}.match.{key}", f"unknown field (known: {', '.join(MATCH_FIELDS)})")
                continue
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values:
                c.bad(f"{where}.match.{key}", "must be a glob or a list of globs")
                continue
            if not all(isinstance(v, str) for v in values):
                c.bad(f"{where}.match.{key}", "every pattern must be a string")
                continue
            match[str(key)] = tuple(values)
    return Route(tuple(sinks), match)


def parse_config(data: Any, source: str = "notify config") -> NotifyConfig:
    """Validate an already-loaded document; :class:`NotifyConfigError` lists every problem."""
    c = _Checker()
    if not isinstance(data, dict):
        raise NotifyConfigError(source, ["the file must be a YAML mapping (sinks, routes, ...)"])
    c.keys(
        "config", data, ("board_url", "max_age", "repost_interval", "templates", "sinks", "routes")
    )
    board_url = DEFAULT_BOARD_URL
    if "board_url" in data:
        board_url = c.url("board_url", data["board_url"])
    max_age: float | None = DEFAULT_MAX_AGE
    if data.get("max_age") in ("none", "None") or ("max_age" in data and data["max_age"] is None):
        max_age = None
    elif "max_age" in data:
        max_age = c.duration("max_age", data["max_age"], DEFAULT_MAX_AGE)
    repost = c.duration("repost_interval", data.get("repost_interval"), DEFAULT_REPOST)
    if repost <= 0:
        c.bad("repost_interval", "must be more than 0")
    templates: dict[str, str] = {}
    tspec = data.get("templates") or {}
    if not isinstance(tspec, dict):
        c.bad("templates", "must be a mapping of name: template")
    else:
        for name, text in tspec.items():
            where = f"templates.{name}"
            if name not in DEFAULT_TEMPLATES:
                c.bad(where, f"unknown template (known: {', '.join(DEFAULT_TEMPLATES)})")
                continue
            if not isinstance(text, str):
                c.bad(where, "must be a string")
                continue
            try:
                used = template_fields(text)
            except ValueError as exc:
                c.bad(where, f"malformed template: {exc}")
                continue
            unknown = [u for u in used if u not in TEMPLATE_FIELDS]
            if unknown:
                c.bad(
                    where,
                    f"unknown field {{{unknown[0]}}} (known: {', '.join(TEMPLATE_FIELDS)})",
                )
                continue
            templates[str(name)] = text
    sinks: list[SinkConfig] = []
    sspec = data.get("sinks")
    if not isinstance(sspec, dict) or not sspec:
        c.bad("sinks", "required: a mapping of sink name to its settings")
    else:
        for name, spec in sspec.items():
            sink = _sink(c, str(name), spec)
            if sink is not None:
                sinks.append(sink)
    names = {str(n) for n in sspec} if isinstance(sspec, dict) else set()
    routes: list[Route] = []
    rspec = data.get("routes")
    if rspec is None:
        routes = [Route(tuple(sorted(names)), {})]
    elif not isinstance(rspec, list):
        c.bad("routes", "must be a list of {sinks, match}")
    else:
        for i, spec in enumerate(rspec):
            route = _route(c, i, spec, names)
            if route is not None:
                routes.append(route)
    if c.problems:
        raise NotifyConfigError(source, c.problems)
    return NotifyConfig(
        sinks=tuple(sinks),
        routes=tuple(routes),
        templates=templates,
        board_url=board_url,
        max_age=max_age,
        repost_interval=repost,
    )


def load_config(path: Path) -> NotifyConfig:
    """Read and validate the notifier's YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NotifyConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise NotifyConfigError(str(path), [f"not valid YAML: {exc}"]) from exc
    return parse_config(data, str(path))
