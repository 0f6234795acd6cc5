"""The board's HTTP server (aiohttp).

========================================  ===================================================
``GET /``                                 the live list (server-sent events, no reload)
``GET /incident/{id}``                    evidence, actions, the other end of the tunnel,
                                          evidence count per update, acknowledge, silence
``GET /operator``                         silences and maintenance windows
``GET /events``                           ``text/event-stream``: ``snapshot`` (every incident),
                                          then ``incident`` per update; ``snapshot`` again
                                          when the operator state changes
``GET /api/incidents[/{id}]``             JSON
``GET /api/operator``                     acks, silences, maintenance windows
``POST /api/ack``                         ``{incident_id, user, note}``
``POST /api/silences``                    ``{matchers, duration, created_by, comment}``
``POST /api/maintenance``                 ``{matchers, zone, start, end}`` or ``weekly_days``,
                                          ``weekly_start``, ``weekly_end`` (or ``weekly``)
``DELETE /api/silences/{id}``, ``DELETE /api/maintenance/{id}``
========================================  ===================================================

Write actions need ``Authorization: Bearer <token>`` (``--token`` or
``TUNNELWATCH_BOARD_TOKEN``); without a configured token they are refused. Matchers are a
mapping ``{field: [glob, ...]}`` or text ``device=edge-*, cause=psk_mismatch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from streams.core.alerting import parse_duration
from streams.core.operator import (
    OperatorError,
    check_maintenance,
    check_matchers,
    silence_record,
)
from streams.shell.board import static
from streams.shell.board.data import Feed, publish_operator

log = logging.getLogger(__name__)

FEED = web.AppKey("feed", Feed)
PRODUCER = web.AppKey("producer", object)
TOKEN = web.AppKey("token", str)
CLOSING = web.AppKey("closing", asyncio.Event)
OPERATOR_TOPIC_KEY = web.AppKey("operator_topic", str)
_KEEPALIVE_S = 15.0
_APPLY_WAIT_S = 10.0
_MAX_TEXT = 500

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _html(text: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": static.CSP, "X-Content-Type-Options": "nosniff"},
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def parse_matchers(value: Any) -> dict[str, list[str]]:
    """``{field: [glob]}`` as given, or text ``field=glob, field=glob2``."""
    if isinstance(value, str):
        out: dict[str, list[str]] = {}
        for part in value.split(","):
            if not part.strip():
                continue
            name, sep, glob = part.partition("=")
            if not sep or not name.strip() or not glob.strip():
                raise OperatorError(f"matchers: {part.strip()!r} is not field=glob")
            out.setdefault(name.strip(), []).append(glob.strip())
        value = out
    return check_matchers(value)


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise OperatorError(f"{name}: must be text")
    value = value.strip()[:_MAX_TEXT]
    if required and not value:
        raise OperatorError(f"{name}: required")
    return value


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise OperatorError("the request body is not JSON") from exc
    if not isinstance(body, dict):
        raise OperatorError("the request body must be a JSON object")
    return body


def _authorized(request: web.Request) -> web.Response | None:
    token = request.app[TOKEN]
    if not token:
        return _error(
            403,
            "write actions are disabled: start the board with --token or TUNNELWATCH_BOARD_TOKEN",
        )
    given = request.headers.get("Authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(
        given[7:].encode("utf-8"), token.encode("utf-8")
    ):
        return _error(401, "a valid token is required (Authorization: Bearer <token>)")
    return None


async def _write(request: web.Request, key: str, value: dict[str, Any] | None) -> web.Response:
    """Publish an operator record and wait until this board's feed has applied it."""
    feed = request.app[FEED]
    await publish_operator(request.app[PRODUCER], request.app[OPERATOR_TOPIC_KEY], key, value)
    kind, _, ident = key.partition(":")
    table = {
        "ack": feed.ops.acks,
        "silence": feed.ops.silences,
        "maintenance": feed.ops.maintenances,
    }[kind]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _APPLY_WAIT_S
    while loop.time() < deadline:
        if (value is None and ident not in table) or (
            value is not None and table.get(ident) == value
        ):
            break
        await asyncio.sleep(0.05)
    return _json({"ok": True, "key": key, "value": value})


def _now() -> datetime:
    return datetime.now(UTC)


async def index(_: web.Request) -> web.Response:
    return _html(static.index_page())


async def incident_page(request: web.Request) -> web.Response:
    detail = request.app[FEED].detail(request.match_info["iid"])
    if detail is None:
        raise web.HTTPNotFound(text="no such incident")
    return _html(static.incident_page(detail))


async def operator_page(request: web.Request) -> web.Response:
    return _html(static.operator_page(request.app[FEED].ops))


async def script(request: web.Request) -> web.Response:
    scripts = {"board.js": static.BOARD_JS, "actions.js": static.ACTIONS_JS}
    text = scripts.get(request.match_info["name"])
    if text is None:
        raise web.HTTPNotFound()
    return web.Response(text=text, content_type="application/javascript", charset="utf-8")


async def api_incidents(request: web.Request) -> web.Response:
    return _json(request.app[FEED].views())


async def api_incident(request: web.Request) -> web.Response:
    detail = request.app[FEED].detail(request.match_info["iid"])
    if detail is None:
        return _error(404, "no such incident")
    return _json(detail)


async def api_operator(request: web.Request) -> web.Response:
    ops = request.app[FEED].ops
    return _json({"acks": ops.acks, "silences": ops.silences, "maintenance": ops.maintenances})


async def api_ack(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    try:
        body = await _body(request)
        iid = _text(body, "incident_id", required=True)
        user = _text(body, "user", required=True)
        note = _text(body, "note")
    except OperatorError as exc:
        return _error(400, str(exc))
    if iid not in request.app[FEED].incidents:
        return _error(404, f"no such incident: {iid}")
    value = {
        "type": "ack",
        "incident_id": iid,
        "user": user,
        "note": note,
        "at": _now().isoformat(),
    }
    return await _write(request, f"ack:{iid}", value)


async def api_silence(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    try:
        body = await _body(request)
        try:
            duration = parse_duration(body.get("duration", "1h"))
        except ValueError as exc:
            raise OperatorError(f"duration: {exc}") from exc
        ident = uuid.uuid4().hex[:12]
        value = silence_record(
            ident,
            parse_matchers(body.get("matchers")),
            duration,
            _now(),
            _text(body, "created_by", required=True),
            _text(body, "comment"),
        )
    except OperatorError as exc:
        return _error(400, str(exc))
    return await _write(request, f"silence:{ident}", value)


async def api_maintenance(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    try:
        body = await _body(request)
        spec = dict(body)
        spec["matchers"] = parse_matchers(body.get("matchers"))
        if body.get("weekly_days") and "weekly" not in body:
            spec["weekly"] = {
                "days": body["weekly_days"],
                "start": body.get("weekly_start"),
                "end": body.get("weekly_end"),
            }
        if not spec.get("zone"):
            spec["zone"] = "UTC"
        checked = check_maintenance(spec)
        ident = uuid.uuid4().hex[:12]
        value = {
            "type": "maintenance",
            "id": ident,
            **checked,
            "created_by": _text(body, "created_by", required=True),
            "comment": _text(body, "comment"),
        }
    except OperatorError as exc:
        return _error(400, str(exc))
    return await _write(request, f"maintenance:{ident}", value)


def _delete(kind: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if (denied := _authorized(request)) is not None:
            return denied
        ident = request.match_info["ident"]
        ops = request.app[FEED].ops
        table = ops.silences if kind == "silence" else ops.maintenances
        if ident not in table:
            return _error(404, f"no such {kind}: {ident}")
        return await _write(request, f"{kind}:{ident}", None)

    return handler


async def events(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED]
    closing = request.app[CLOSING]
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=10_000)

    def listener(kind: str, payload: Any) -> None:
        try:
            queue.put_nowait((kind, payload))
        except asyncio.QueueFull:  # a slow client: start it again from a snapshot
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(("snapshot", feed.views()))

    feed.listeners.append(listener)
    try:
        await feed.ready.wait()
        await resp.write(b"event: snapshot\ndata: " + orjson.dumps(feed.views()) + b"\n\n")
        closer = asyncio.ensure_future(closing.wait())
        try:
            while not closing.is_set():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, closer}, timeout=_KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if not closing.is_set():
                        await resp.write(b": keepalive\n\n")
                    continue
                kind, payload = getter.result()
                await resp.write(
                    f"event: {kind}\ndata: ".encode() + orjson.dumps(payload) + b"\n\n"
                )
        finally:
            closer.cancel()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.listeners.remove(listener)
    return resp


def make_app(feed: Feed, producer: Any, token: str, operator_topic: str) -> web.Application:
    app = web.Application()
    app[FEED] = feed
    app[PRODUCER] = producer
    app[TOKEN] = token
    app[CLOSING] = asyncio.Event()
    app[OPERATOR_TOPIC_KEY] = operator_topic

    async def on_shutdown(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/incident/{iid}", incident_page)
    app.router.add_get("/operator", operator_page)
    app.router.add_get("/static/{name}", script)
    app.router.add_get("/events", events)
    app.router.add_get("/api/incidents", api_incidents)
    app.router.add_get("/api/incidents/{iid}", api_incident)
    app.router.add_get("/api/operator", api_operator)
    app.router.add_post("/api/ack", api_ack)
    app.router.add_post("/api/silences", api_silence)
    app.router.add_post("/api/maintenance", api_maintenance)
    app.router.add_delete("/api/silences/{ident}", _delete("silence"))
    app.router.add_delete("/api/maintenance/{ident}", _delete("maintenance"))
    app.router.add_get("/healthz", _healthz)
    return app


async def _healthz(request: web.Request) -> web.Response:
    ready = request.app[FEED].ready.is_set()
    return web.Response(text="ok\n" if ready else "starting\n", status=200 if ready else 503)


async def serve_board(
    bootstrap: str,
    incidents_topic: str,
    operator_topic: str,
    host: str,
    port: int,
    token: str,
    stop: asyncio.Event,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run the board until ``stop`` is set; ``on_ready(port)`` once it serves."""
    from aiokafka import AIOKafkaProducer

    from streams.shell.topics import TopicSpec, ensure_topics

    await ensure_topics(bootstrap, [TopicSpec(operator_topic, 1, {"cleanup.policy": "compact"})])
    feed = Feed(bootstrap, incidents_topic, operator_topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    reader = asyncio.ensure_future(feed.run(stop))
    runner = web.AppRunner(make_app(feed, producer, token, operator_topic), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1]) if runner.addresses else port
        await asyncio.wait(
            {reader, asyncio.ensure_future(feed.ready.wait())},
            return_when=asyncio.FIRST_COMPLETED,
        )
        if reader.done():
            reader.result()  # the feed failed: raise its error
        if on_ready is not None:
            on_ready(bound)
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if reader.done() and not stop.is_set():
            reader.result()
    finally:
        stop.set()
        await runner.cleanup()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(reader, 5)
        await producer.stop()
