"""The board's pages: HTML built with every device-provided string escaped, and two small
scripts (served from ``/static/``, so the Content-Security-Policy forbids inline script).
The list is built in the browser with ``textContent`` only, never ``innerHTML``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

SEVERITIES = ("critical", "major", "minor", "warning")
STATES = ("open", "updated", "resolved", "suppressed")

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#10151c;color:#dde3ea}
header{display:flex;gap:1.5em;align-items:baseline;padding:.6em 1em;background:#1b2430}
h1{font-size:1.3em;margin:0}h2{font-size:1.1em;margin:1.2em 0 .4em}
a{color:#7cc4ff}main{padding:0 1em 1em}
table{border-collapse:collapse;width:100%}th,td{padding:.3em .6em;text-align:left}
th{cursor:pointer;background:#1b2430;user-select:none}tbody tr{cursor:pointer}
tbody tr:nth-child(odd){background:#151c25}tbody tr:hover{background:#233043}
.filters{display:flex;gap:1em;flex-wrap:wrap;padding:.6em 0}
input,select,button,textarea{background:#0c1117;color:#dde3ea;border:1px solid #3a4a5e;
padding:.25em .4em;border-radius:3px}
.sev-critical{color:#ff6b6b;font-weight:bold}.sev-major{color:#ffa94d}.sev-minor{color:#ffe066}
.sev-warning{color:#a5d8ff}.state-suppressed{color:#9aa5b1;font-style:italic}
.state-resolved{color:#69db7c}.muted{color:#8795a5}
pre,code{font:12px/1.35 ui-monospace,monospace}pre{background:#0c1117;padding:.6em;
overflow-x:auto;white-space:pre-wrap}
form{display:flex;gap:.5em;flex-wrap:wrap;align-items:center;margin:.4em 0}
.msg{color:#ffa94d}
"""

CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
)


def _page(title: str, body: str, scripts: Sequence[str] = ()) -> str:
    tags = "".join(f'<script src="/static/{escape(s)}"></script>' for s in scripts)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        '<header><h1><a href="/">tunnelwatch</a></h1>'
        '<span id="conn" class="muted"></span>'
        '<a href="/operator">silences &amp; maintenance</a>'
        '<label class="muted">token <input id="token" type="password" size="12" '
        'autocomplete="off"></label></header>'
        f"<main>{body}</main>{tags}</body></html>"
    )


def index_page() -> str:
    sev = "".join(f"<option>{s}</option>" for s in SEVERITIES)
    states = "".join(f"<option>{s}</option>" for s in STATES)
    cols = [
        ("severity", "severity"), ("state", "state"), ("device", "device"), ("peer", "peer"),
        ("cause", "cause"), ("count", "n"), ("last_seen", "last seen"), ("ack", "ack"),
    ]  # fmt: skip
    head = "".join(f'<th data-key="{k}">{label}</th>' for k, label in cols)
    body = (
        '<div class="filters">'
        f'<label>severity <select id="f-severity"><option value="">any</option>{sev}</select>'
        "</label>"
        f'<label>state <select id="f-state"><option value="">any</option>{states}</select>'
        "</label>"
        '<label>cause <input id="f-cause" size="14"></label>'
        '<label>device <input id="f-device" size="14"></label>'
        '<label>peer <input id="f-peer" size="14"></label>'
        '<span id="shown" class="muted"></span></div>'
        f'<table id="incidents"><thead><tr>{head}</tr></thead><tbody></tbody></table>'
    )
    return _page("tunnelwatch board", body, ["board.js"])


def _svg_timeline(history: Sequence[Sequence[Any]]) -> str:
    """Evidence count after each update, as bars (an inline SVG, no script)."""
    if not history:
        return '<p class="muted">no updates seen</p>'
    width, height = 480, 80
    top = max(int(h[1]) for h in history) or 1
    step = width / len(history)
    bars = []
    for i, (seen, count, status) in enumerate(history):
        h = max(2.0, height * int(count) / top)
        bars.append(
            f'<rect x="{i * step + 1:.1f}" y="{height - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="#4dabf7"><title>{escape(str(seen))}: {int(count)} '
            f"({escape(str(status))})</title></rect>"
        )
    return (
        f'<svg id="timeline" width="{width}" height="{height + 16}" role="img" '
        f'aria-label="evidence count per update">{"".join(bars)}'
        f'<text x="0" y="{height + 14}" fill="#8795a5" font-size="11">'
        f"{escape(str(history[0][0]))[:19]} … {escape(str(history[-1][0]))[:19]}, "
        f"max {top}</text></svg>"
    )


def _row(label: str, value: Any) -> str:
    return (
        f"<tr><th>{escape(label)}</th><td>{escape('-' if value is None else str(value))}</td></tr>"
    )


def incident_page(detail: Mapping[str, Any]) -> str:
    rec, view = detail["record"], detail["view"]
    iid = escape(str(rec["incident_id"]))
    state = escape(str(view["state"]))
    why = f" ({escape(str(view['suppressed_by']))})" if view.get("suppressed_by") else ""
    facts = "".join(
        [
            _row("device", rec.get("device")),
            _row("peer", rec.get("peer")),
            _row("cause", rec.get("cause")),
            _row("severity", rec.get("severity")),
            _row("confidence", rec.get("confidence")),
            _row("evidence lines", rec.get("count")),
            _row("first seen", rec.get("first_seen")),
            _row("last seen", rec.get("last_seen")),
            _row("resolved at", rec.get("resolved_at")),
        ]
    )
    evidence = "".join(f"<li><code>{escape(str(e))}</code></li>" for e in rec.get("evidence", []))
    actions = "".join(
        f"<li><code>{escape(str(a))}</code></li>" for a in rec.get("recommended_actions", [])
    )
    related = "".join(
        f'<li><a href="/incident/{escape(str(r["incident_id"]))}">'
        f"{escape(str(r['device']))} {escape(str(r['cause']))}</a> "
        f'<span class="state-{escape(str(r["state"]))}">{escape(str(r["state"]))}</span></li>'
        for r in detail["related"]
    )
    ack = view.get("ack")
    ack_text = (
        f'<p id="ack-state">acknowledged by <b>{escape(str(ack["user"]))}</b> at '
        f"{escape(str(ack['at']))}: {escape(str(ack['note'] or ''))}</p>"
        if ack
        else '<p id="ack-state" class="muted">not acknowledged</p>'
    )
    device = escape(str(rec.get("device")), quote=True)
    body = (
        f'<h2 id="title">{escape(str(rec.get("title") or rec.get("cause")))} on '
        f"{escape(str(rec.get('device')))}"
        f' <span id="state" class="state-{state}">{state}{why}</span></h2>'
        f'<p id="summary">{escape(str(rec.get("summary", "")))}</p>'
        f"<table>{facts}</table>"
        f'<h2>Evidence</h2><ol id="evidence">{evidence}</ol>'
        f'<h2>Actions</h2><ol id="actions">{actions}</ol>'
        "<h2>The other end of the tunnel</h2>"
        + (
            f'<ul id="related">{related}</ul>'
            if related
            else '<p id="related" class="muted">no related incident</p>'
        )
        + f"<h2>Evidence count</h2>{_svg_timeline(detail['history'])}"
        f"<h2>Acknowledge</h2>{ack_text}"
        f'<form id="ack-form" data-api="/api/ack"><input type="hidden" name="incident_id" '
        f'value="{iid}"><input name="user" placeholder="your name" required>'
        '<input name="note" placeholder="note" size="40"><button>acknowledge</button></form>'
        "<h2>Silence</h2>"
        '<form id="silence-form" data-api="/api/silences">'
        f'<input name="matchers" size="40" value="device={device}">'
        '<input name="duration" value="1h" size="6"><input name="created_by" '
        'placeholder="your name" required><input name="comment" placeholder="comment">'
        '<button>silence</button></form><p id="msg" class="msg"></p>'
    )
    return _page(f"{rec.get('device')} {rec.get('cause')}", body, ["actions.js"])


def operator_page(ops: Any) -> str:
    def matchers(m: Mapping[str, Sequence[str]]) -> str:
        return escape(", ".join(f"{k}={'|'.join(v)}" for k, v in m.items()))

    silences = "".join(
        f"<tr><td>{escape(str(i))}</td><td>{matchers(s.get('matchers', {}))}</td>"
        f"<td>{escape(str(s.get('starts_at')))}</td><td>{escape(str(s.get('ends_at')))}</td>"
        f"<td>{escape(str(s.get('created_by')))}</td><td>{escape(str(s.get('comment')))}</td>"
        f'<td><button data-delete="/api/silences/{escape(str(i))}">expire</button></td></tr>'
        for i, s in ops.silences.items()
    )
    windows = "".join(
        f"<tr><td>{escape(str(i))}</td><td>{matchers(w.get('matchers', {}))}</td>"
        f"<td>{escape(str(w.get('zone')))}</td><td>"
        + (
            escape(
                f"weekly {','.join(w['weekly']['days'])} {w['weekly']['start']}-"
                f"{w['weekly']['end']}"
            )
            if w.get("weekly")
            else escape(f"{w.get('start')} - {w.get('end')}")
        )
        + f"</td><td>{escape(str(w.get('created_by')))}</td>"
        f'<td><button data-delete="/api/maintenance/{escape(str(i))}">remove</button></td></tr>'
        for i, w in ops.maintenances.items()
    )
    body = (
        "<h2>Silences</h2>"
        f'<table id="silences"><tr><th>id</th><th>matchers</th><th>from</th><th>until</th>'
        f"<th>by</th><th>comment</th><th></th></tr>{silences}</table>"
        '<form id="silence-form" data-api="/api/silences">'
        '<input name="matchers" size="36" placeholder="device=edge-*, cause=psk_mismatch" '
        'required><input name="duration" value="2h" size="6">'
        '<input name="created_by" placeholder="your name" required>'
        '<input name="comment" placeholder="comment"><button>add silence</button></form>'
        "<h2>Maintenance windows</h2>"
        f'<table id="maintenance"><tr><th>id</th><th>matchers</th><th>zone</th><th>when</th>'
        f"<th>by</th><th></th></tr>{windows}</table>"
        '<form id="maintenance-form" data-api="/api/maintenance">'
        '<input name="matchers" size="30" placeholder="device=paris-*" required>'
        '<input name="zone" value="UTC" size="14" placeholder="Europe/Paris">'
        '<label>from <input name="start" type="datetime-local"></label>'
        '<label>to <input name="end" type="datetime-local"></label>'
        '<label>or weekly on <input name="weekly_days" size="10" placeholder="sat,sun"></label>'
        '<input name="weekly_start" size="5" placeholder="22:00">'
        '<input name="weekly_end" size="5" placeholder="02:00">'
        '<input name="created_by" placeholder="your name" required>'
        '<button>add window</button></form><p id="msg" class="msg"></p>'
    )
    return _page("tunnelwatch: silences and maintenance", body, ["actions.js"])


TOKEN_JS = """
const tokenBox = document.getElementById('token');
tokenBox.value = localStorage.getItem('tunnelwatch-token') || '';
tokenBox.addEventListener('change', () => localStorage.setItem('tunnelwatch-token',
  tokenBox.value));
function authHeaders() {
  return {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + tokenBox.value};
}
"""

BOARD_JS = (
    TOKEN_JS
    + """
const incidents = new Map();
let sortKey = 'last_seen', sortDir = -1;
const rank = {critical: 0, major: 1, minor: 2, warning: 3};
const tbody = document.querySelector('#incidents tbody');
const filters = ['severity', 'state', 'cause', 'device', 'peer'];
function value(v, key) {
  if (key === 'severity') return rank[v.severity] ?? 9;
  if (key === 'ack') return v.ack ? v.ack.user : '';
  const x = v[key];
  return x === null || x === undefined ? '' : x;
}
function keep(v) {
  for (const f of filters) {
    const want = document.getElementById('f-' + f).value.trim().toLowerCase();
    if (!want) continue;
    const have = String(v[f] ?? '-').toLowerCase();
    if (f === 'severity' || f === 'state' ? have !== want : !have.includes(want)) return false;
  }
  return true;
}
function render() {
  const rows = [...incidents.values()].filter(keep);
  rows.sort((a, b) => {
    const x = value(a, sortKey), y = value(b, sortKey);
    return (x < y ? -1 : x > y ? 1 : 0) * sortDir;
  });
  const out = document.createDocumentFragment();
  for (const v of rows) {
    const tr = document.createElement('tr');
    tr.dataset.id = v.incident_id;
    tr.className = 'state-' + v.state;
    const cells = [v.severity, v.state, v.device, v.peer ?? '-', v.cause, v.count,
      String(v.last_seen).slice(0, 19), v.ack ? v.ack.user : ''];
    cells.forEach((text, i) => {
      const td = document.createElement('td');
      td.textContent = String(text);
      if (i === 0) td.className = 'sev-' + v.severity;
      tr.appendChild(td);
    });
    tr.addEventListener('click', () => { location.href = '/incident/' +
      encodeURIComponent(v.incident_id); });
    out.appendChild(tr);
  }
  tbody.replaceChildren(out);
  document.getElementById('shown').textContent = rows.length + ' of ' + incidents.size;
  document.body.dataset.rows = String(rows.length);
}
for (const th of document.querySelectorAll('th[data-key]')) {
  th.addEventListener('click', () => {
    sortDir = sortKey === th.dataset.key ? -sortDir : 1;
    sortKey = th.dataset.key;
    render();
  });
}
for (const f of filters) {
  document.getElementById('f-' + f).addEventListener('input', render);
}
const conn = document.getElementById('conn');
const source = new EventSource('/events');
source.addEventListener('snapshot', (e) => {
  incidents.clear();
  for (const v of JSON.parse(e.data)) incidents.set(v.incident_id, v);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  render();
});
source.addEventListener('incident', (e) => {
  const v = JSON.parse(e.data);
  incidents.set(v.incident_id, v);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  render();
});
source.onopen = () => { conn.textContent = 'live'; document.body.dataset.live = '1'; };
source.onerror = () => { conn.textContent = 'reconnecting…'; };
"""
)

ACTIONS_JS = (
    TOKEN_JS
    + """
const msg = document.getElementById('msg');
async function call(method, url, body) {
  const resp = await fetch(url, {method, headers: authHeaders(),
    body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await resp.json().catch(() => ({error: resp.statusText}));
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}
for (const form of document.querySelectorAll('form[data-api]')) {
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = Object.fromEntries(new FormData(form).entries());
    try {
      await call('POST', form.dataset.api, body);
      location.reload();
    } catch (err) {
      msg.textContent = err.message;
      document.body.dataset.error = err.message;
    }
  });
}
for (const button of document.querySelectorAll('button[data-delete]')) {
  button.addEventListener('click', async () => {
    try { await call('DELETE', button.dataset.delete); location.reload(); }
    catch (err) { msg.textContent = err.message; }
  });
}
"""
)
