"""The board, served by ``tunnelwatch board`` on the real Kafka broker and used in a real
headless Chromium: the demo's incidents appear live, a click shows the evidence, an
acknowledge survives a restart of the board, a silence makes the next update suppressed.
Screenshots go to ``.state/board/``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from board_support import BoardProcess, demo_incidents
from browser_support import Browser, chromium_binary
from notify_support import aproduce, incident, produce

from streams.shell.topics import TopicSpec, ensure_topics

if TYPE_CHECKING:
    from kafka_support import KafkaNames

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / ".state" / "board"
TOKEN = "t0ken-for-tests"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("Debian chromium is not installed and load/install-chromium.sh could not")
    return binary


@pytest.fixture
def topics(kafka_bootstrap: str, kafka_names: KafkaNames) -> tuple[str, str]:
    operator = kafka_names.another_topic("operator")
    asyncio.run(
        ensure_topics(
            kafka_bootstrap,
            [
                TopicSpec(kafka_names.topic, 2),
                TopicSpec(operator, 1, {"cleanup.policy": "compact"}),
            ],
        )
    )
    return kafka_names.topic, operator


@pytest.fixture
def board(kafka_bootstrap: str, topics: tuple[str, str], tmp_path: Path) -> Iterator[BoardProcess]:
    proc = BoardProcess(kafka_bootstrap, *topics, tmp_path, TOKEN).start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


def _rows(column: int) -> str:
    return (
        f"[...document.querySelectorAll('#incidents tbody tr')]"
        f".map(r => r.children[{column}].textContent)"
    )


def test_the_demo_incidents_appear_live_sort_filter_and_a_click_shows_the_evidence(
    kafka_bootstrap: str,
    topics: tuple[str, str],
    board: BoardProcess,
    chromium: str,
    tmp_path: Path,
) -> None:
    demo = demo_incidents()
    assert len(demo) == 12
    # Each incident first as an earlier, smaller update, then its final state.
    earlier = [dict(r, count=max(1, r["count"] // 2), status="open") for r in demo]
    produce(kafka_bootstrap, topics[0], [*earlier, *demo])
    psk = next(r for r in demo if r["cause"] == "psk_mismatch")

    async def scenario() -> None:
        async with Browser(chromium, tmp_path / "profile") as b:
            await b.goto(board.url + "/")
            await b.wait_for("document.body.dataset.rows === '12'")
            assert sorted(await b.eval(_rows(2))) == sorted(r["device"] for r in demo)
            await b.eval("window.__samePage = 'yes'")
            # A new incident arrives: the list grows without a reload.
            live = incident(1, datetime.now(UTC), device="edge-live", cause="peer_unreachable")
            await aproduce(kafka_bootstrap, topics[0], [live])
            await b.wait_for("document.body.dataset.rows === '13'")
            assert await b.eval("window.__samePage") == "yes"
            # Filter by device (substring) and by state.
            await b.eval(
                "(() => { const i = document.getElementById('f-device');"
                " i.value = 'asa-'; i.dispatchEvent(new Event('input')); })()"
            )
            asa = sum(r["device"].startswith("asa-") for r in demo)
            await b.wait_for(f"document.body.dataset.rows === '{asa}'")
            assert all(d.startswith("asa-") for d in await b.eval(_rows(2)))
            await b.eval(
                "(() => { const i = document.getElementById('f-device');"
                " i.value = ''; i.dispatchEvent(new Event('input'));"
                " const s = document.getElementById('f-state'); s.value = 'resolved';"
                " s.dispatchEvent(new Event('input')); })()"
            )
            resolved = sum(r["status"] == "resolved" for r in demo)
            await b.wait_for(f"document.body.dataset.rows === '{resolved}'")
            await b.eval(
                "(() => { const s = document.getElementById('f-state'); s.value = '';"
                " s.dispatchEvent(new Event('input')); })()"
            )
            # Sort by severity: critical first, then the other way round.
            await b.eval("document.querySelector('th[data-key=severity]').click()")
            severities = await b.eval(_rows(0))
            assert severities[0] == "critical" and severities[-1] == "minor"
            await b.eval("document.querySelector('th[data-key=severity]').click()")
            assert (await b.eval(_rows(0)))[0] == "minor"
            await b.screenshot(SHOTS / "list.png")
            # A click on a row opens the incident: evidence, actions, the other end.
            await b.eval(f"document.querySelector('tr[data-id=\"{psk['incident_id']}\"]').click()")
            await b.wait_for("document.querySelectorAll('#evidence li').length > 0")
            evidence = await b.eval(
                "[...document.querySelectorAll('#evidence li')].map(li => li.textContent)"
            )
            assert evidence == psk["evidence"]
            actions = await b.eval(
                "[...document.querySelectorAll('#actions li')].map(li => li.textContent)"
            )
            assert actions == psk["recommended_actions"]
            related = await b.eval(
                "[...document.querySelectorAll('#related a')].map(a => a.getAttribute('href'))"
            )
            assert related == [f"/incident/{i}" for i in psk["related"]]
            assert await b.eval("document.querySelectorAll('#timeline rect').length") == 2
            await b.screenshot(SHOTS / "incident.png")

    asyncio.run(scenario())
    for name in ("list.png", "incident.png"):
        data = (SHOTS / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, (name, len(data))


def test_an_acknowledge_survives_a_board_restart_and_a_silence_suppresses_the_next_update(
    kafka_bootstrap: str,
    topics: tuple[str, str],
    board: BoardProcess,
    chromium: str,
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    target = incident(1, now, device="asa-dc", cause="peer_unreachable", tag="ack")
    other = incident(2, now, device="rtr-hq", tag="ack")
    produce(kafka_bootstrap, topics[0], [target, other])
    page = f"/incident/{target['incident_id']}"

    async def submit(b: Browser, form: str, fields: dict[str, str]) -> None:
        await b.eval(
            "(() => { const t = document.getElementById('token');"
            f" t.value = {json.dumps(TOKEN)}; t.dispatchEvent(new Event('change')); }})()"
        )
        for name, value in fields.items():
            await b.eval(
                f"document.querySelector('#{form} [name={name}]').value = {json.dumps(value)}"
            )
        await b.eval("window.__beforeSubmit = 1")
        await b.eval(f"document.getElementById('{form}').requestSubmit()")
        await b.wait_for(
            "window.__beforeSubmit === undefined && document.readyState === 'complete'"
        )

    async def first_board() -> None:
        async with Browser(chromium, tmp_path / "profile") as b:
            await b.goto(board.url + page)
            assert "not acknowledged" in await b.eval(
                "document.getElementById('ack-state').textContent"
            )
            await submit(b, "ack-form", {"user": "alice", "note": "on it <b>now</b>"})
            text = await b.eval("document.getElementById('ack-state').textContent")
            assert "alice" in text and "on it <b>now</b>" in text

    asyncio.run(first_board())
    board.stop()
    board.start()  # a new process, a new port: the acknowledge comes back from Kafka

    async def second_board() -> None:
        async with Browser(chromium, tmp_path / "profile2") as b:
            await b.goto(board.url + page)
            text = await b.eval("document.getElementById('ack-state').textContent")
            assert "acknowledged by alice" in text and "on it <b>now</b>" in text
            await submit(
                b,
                "silence-form",
                {"matchers": "device=asa-dc", "duration": "1h", "created_by": "alice"},
            )
            await b.goto(board.url + "/")
            await b.wait_for("document.body.dataset.rows === '2'")
            row = f"document.querySelector('tr[data-id=\"{target['incident_id']}\"]')"
            assert await b.eval(f"{row}.children[1].textContent") == "open"
            assert await b.eval(f"{row}.children[7].textContent") == "alice"
            # The next update of the silenced device's incident: shown suppressed, live.
            update = dict(
                target,
                count=target["count"] + 1,
                status="updated",
                last_seen=(datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
            )
            await aproduce(kafka_bootstrap, topics[0], [update])
            await b.wait_for(f"{row}.children[1].textContent === 'suppressed'")
            other_row = f"document.querySelector('tr[data-id=\"{other['incident_id']}\"]')"
            assert await b.eval(f"{other_row}.children[1].textContent") == "open"
            await b.screenshot(SHOTS / "suppressed.png")

    asyncio.run(second_board())


def test_device_text_is_escaped_everywhere_and_never_runs(
    kafka_bootstrap: str,
    topics: tuple[str, str],
    board: BoardProcess,
    chromium: str,
    tmp_path: Path,
) -> None:
    rec = incident(1, datetime.now(UTC), device=HOSTILE, tag="xss")
    rec["evidence"] = [f"{HOSTILE} %CRYPTO-4-IKMP_NO_SA"]
    produce(kafka_bootstrap, topics[0], [rec])

    async def scenario() -> str:
        async with Browser(chromium, tmp_path / "profile") as b:
            await b.goto(board.url + "/")
            await b.wait_for("document.body.dataset.rows === '1'")
            assert await b.eval(_rows(2)) == [HOSTILE]
            await b.goto(f"{board.url}/incident/{rec['incident_id']}")
            assert (
                await b.eval("document.querySelector('#evidence li').textContent")
                == (rec["evidence"][0])
            )
            assert await b.eval("typeof window.__pwned") == "undefined"
            assert await b.eval("document.querySelectorAll('main img, main script').length") == 0
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{board.url}/incident/{rec['incident_id']}") as resp,
        ):
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
            return await resp.text()

    html = asyncio.run(scenario())
    assert "<script>window.__pwned" not in html and "&lt;script&gt;" in html


def test_write_actions_need_the_token(
    kafka_bootstrap: str, topics: tuple[str, str], board: BoardProcess, tmp_path: Path
) -> None:
    rec = incident(1, datetime.now(UTC), tag="token")
    produce(kafka_bootstrap, topics[0], [rec])
    body = {"incident_id": rec["incident_id"], "user": "mallory", "note": "x"}

    async def scenario(url: str, token: str | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s:
            for _ in range(100):  # until the board has read the incident
                async with s.get(f"{url}/api/incidents") as resp:
                    if await resp.json():
                        break
                await asyncio.sleep(0.1)
            async with s.post(f"{url}/api/ack", json=body, headers=headers) as resp:
                return resp.status, await resp.json()

    assert asyncio.run(scenario(board.url, None))[0] == 401
    assert asyncio.run(scenario(board.url, "wrong"))[0] == 401
    status, answer = asyncio.run(scenario(board.url, TOKEN))
    assert status == 200 and answer["value"]["user"] == "mallory"
    bad = dict(body, user="")

    async def empty_user() -> int:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{board.url}/api/ack", json=bad, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp,
        ):
            assert "user: required" in (await resp.json())["error"]
            return resp.status

    assert asyncio.run(empty_user()) == 400
    # A board started without any token refuses every write.
    board.stop()
    read_only = BoardProcess(kafka_bootstrap, *topics, tmp_path, "").start()
    try:
        status, answer = asyncio.run(scenario(read_only.url, TOKEN))
        assert status == 403 and "write actions are disabled" in answer["error"]
    finally:
        read_only.stop()


def test_maintenance_windows_and_silences_are_managed_on_the_operator_page(
    kafka_bootstrap: str, topics: tuple[str, str], board: BoardProcess, chromium: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    async def scenario() -> None:
        async with Browser(chromium, tmp_path / "profile") as b:
            await b.goto(board.url + "/operator")
            await b.eval("(() => { const t = document.getElementById('token');"
                         f" t.value = {json.dumps(TOKEN)}; t.dispatchEvent(new Event('change')); }})()")  # fmt: skip
            fields = {"matchers": "device=paris-*", "zone": "Europe/Paris",
                      "weekly_days": "sat,sun", "weekly_start": "22:00", "weekly_end": "02:00",
                      "created_by": "carol"}  # fmt: skip
            for name, value in fields.items():
                await b.eval(f"document.querySelector('#maintenance-form [name={name}]').value"
                             f" = {json.dumps(value)}")  # fmt: skip
            await b.eval("window.__before = 1; "
                         "document.getElementById('maintenance-form').requestSubmit()")  # fmt: skip
            await b.wait_for("window.__before === undefined && "
                             "document.querySelectorAll('#maintenance tr').length === 2")  # fmt: skip
            row = await b.eval("document.querySelectorAll('#maintenance tr')[1].textContent")
            assert "device=paris-*" in row and "Europe/Paris" in row
            assert "weekly sat,sun 22:00-02:00" in row
            # A bad zone is refused with the field named, nothing written.
            for name, value in {**fields, "zone": "Mars/Olympus"}.items():
                await b.eval(f"document.querySelector('#maintenance-form [name={name}]').value"
                             f" = {json.dumps(value)}")  # fmt: skip
            await b.eval("document.getElementById('maintenance-form').requestSubmit()")
            await b.wait_for("document.getElementById('msg').textContent.includes('zone')")
            assert await b.eval("document.querySelectorAll('#maintenance tr').length") == 2
            # A silence, then its expiry.
            for name, value in {"matchers": "cause=psk_mismatch", "duration": "30m",
                                "created_by": "carol"}.items():  # fmt: skip
                await b.eval(f"document.querySelector('#silence-form [name={name}]').value"
                             f" = {json.dumps(value)}")  # fmt: skip
            await b.eval("window.__before = 1; "
                         "document.getElementById('silence-form').requestSubmit()")  # fmt: skip
            await b.wait_for("window.__before === undefined && "
                             "document.querySelectorAll('#silences tr').length === 2")  # fmt: skip
            await b.screenshot(SHOTS / "operator.png")
            await b.eval("window.__before = 1; "
                         "document.querySelector('#silences button[data-delete]').click()")  # fmt: skip
            await b.wait_for("window.__before === undefined && "
                             "document.querySelectorAll('#silences tr').length === 1")  # fmt: skip

    asyncio.run(scenario())

    async def operator_state() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{board.url}/api/operator") as r:
            result: dict[str, Any] = await r.json()
            return result

    state = asyncio.run(operator_state())
    assert state["silences"] == {}
    [window] = state["maintenance"].values()
    assert window["weekly"] == {"days": ["sat", "sun"], "start": "22:00", "end": "02:00"}
    assert window["zone"] == "Europe/Paris" and window["created_by"] == "carol"
