// lazarus-pit dashboard. Plain DOM, no framework, no build step.
//
// Safety: every string shown here was written by an agent (names, missions,
// statuses, notes, event fields). Data reaches the page only through
// textContent / Text nodes / setAttribute, never through innerHTML.
'use strict';

const TOKEN_KEY = 'lazarus-token';
const MAX_EVENTS = 50;
const REFRESH_MIN_MS = 150;   // at most one /api/cells fetch per 150 ms
const REFRESH_EVERY_MS = 2000;
const TICK_MS = 250;
const STREAM_IDLE_MS = 45000; // the server comments every 15 s; silence = dead link
const STATE_ORDER = ['healthy', 'unknown', 'stale', 'reviving', 'awaiting_approval',
  'exited', 'frozen', 'dead', 'abandoned'];

const $ = (id) => document.getElementById(id);

// ---- tiny DOM helpers -------------------------------------------------------

// Control characters and bidi overrides are replaced so agent text cannot
// garble or visually spoof neighbouring text.
const BAD_CHARS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
function clean(v) {
  return String(v).replace(BAD_CHARS, '\ufffd');
}

// A safe class token from data (classList rejects whitespace).
function cls(v) {
  return String(v).toLowerCase().replace(/[^a-z0-9_-]/g, '_');
}

// h('td', {class: 'x', 'data-cell': id}, 'text', childNode, ...)
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, String(v));
  }
  for (const kid of kids) {
    if (kid === null || kid === undefined) continue;
    e.append(kid instanceof Node ? kid : clean(kid));
  }
  return e;
}

const short = (uuid) => clean(uuid || '-').slice(0, 8);
const enc = encodeURIComponent;

function fmtDur(s) {
  if (s < 60) return `${Math.max(0, s).toFixed(1)}s`;
  s = Math.floor(s);
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor(s / 60) % 60}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

function say(text, kind) {
  const m = $('message');
  m.textContent = clean(text);
  m.className = kind || '';
}

// ---- token -------------------------------------------------------------------

let token = null;

function loadToken() {
  // The fragment never reaches the server or its logs; drop it from the
  // address bar (and history) once read.
  if (location.hash) {
    const t = new URLSearchParams(location.hash.slice(1)).get('token');
    if (t !== null) {
      history.replaceState(null, '', location.pathname + location.search);
      if (t) saveToken(t);
    }
  }
  try { token = token || sessionStorage.getItem(TOKEN_KEY); } catch (_) { /* storage off */ }
}

function saveToken(t) {
  token = t;
  try { sessionStorage.setItem(TOKEN_KEY, t); } catch (_) { /* keep it in memory */ }
}

function forgetToken() {
  token = null;
  try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing */ }
}

function showLogin(note) {
  $('login-note').textContent = note || '';
  $('login').hidden = false;
  $('dash').hidden = true;
  $('token-input').value = '';
  $('token-input').focus();
}

function authFailed(status) {
  forgetToken();
  stopStream();
  lastShape = '';
  showLogin(`The server refused the token (HTTP ${status}). Enter the operator token again.`);
}

function api(method, path, signal) {
  return fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}` },
    cache: 'no-store',
    signal,
  }).then((res) => {
    if (res.status === 401 || res.status === 403) { authFailed(res.status); return null; }
    return res;
  });
}

async function errorText(res) {
  try {
    const body = await res.json();
    if (body && body.error) return String(body.error);
  } catch (_) { /* not JSON */ }
  return `HTTP ${res.status} ${res.statusText}`;
}

// ---- /api/cells ----------------------------------------------------------------

let lastFetch = 0;
let refreshTimer = null;
let inFlight = false;
let again = false;
let lastShape = '';
let lastData = null; // the last /api/cells answer
let tickers = []; // live-updated spans: {el, kind: 'age'|'next', t, label}

function scheduleRefresh() {
  if (refreshTimer || !token) return;
  const wait = Math.max(0, lastFetch + REFRESH_MIN_MS - Date.now());
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, wait);
}

async function refresh() {
  if (!token) return;
  if (inFlight) { again = true; return; }
  inFlight = true;
  lastFetch = Date.now();
  try {
    const res = await api('GET', '/api/cells');
    if (!res) return;
    if (!res.ok) throw new Error(await errorText(res));
    const data = await res.json();
    $('fetch-note').textContent = '';
    // Ages and countdowns tick locally; re-render only when something else
    // changed, so buttons are not replaced under the operator's pointer.
    const shape = JSON.stringify(data, (k, v) => (k === 'heartbeat_age_s' || k === 'in_s' ? undefined : v));
    lastData = data;
    if (shape !== lastShape) { lastShape = shape; render(data); }
  } catch (e) {
    $('fetch-note').textContent = clean(`cannot load cells: ${e.message}`);
  } finally {
    inFlight = false;
    if (again) { again = false; scheduleRefresh(); }
  }
}

function render(data) {
  tickers = [];
  renderSummary(data);
  renderPending(data.pending_approvals || []);
  $('cells').replaceChildren(...(data.cells || []).map(renderCell));
  if (!(data.cells || []).length) $('cells').append(h('p', { class: 'panel muted' }, 'No cells.'));
  tick();
}

function renderSummary(data) {
  const d = data.daemon || {};
  const s = data.summary || {};
  const parts = [
    d.running
      ? h('span', { class: 'daemon up' }, `daemon running (pid ${d.pid})`)
      : h('span', { class: 'daemon down' }, 'daemon not running'),
    h('span', {}, `${s.cells || 0} cells · ${s.agents || 0} agents`),
  ];
  const states = s.states || {};
  const names = [...STATE_ORDER.filter((n) => n in states),
    ...Object.keys(states).filter((n) => !STATE_ORDER.includes(n))];
  for (const n of names) parts.push(h('span', { class: `chip state-${cls(n)}` }, `${n} ${states[n]}`));
  if (s.unreadable) parts.push(h('span', { class: 'chip bad' }, `unreadable ${s.unreadable}`));
  if (s.daemon_missing) parts.push(h('span', { class: 'chip bad' }, 'daemon missing'));
  parts.push(h('span', { class: `verdict ${data.ok ? 'ok' : 'bad'}` }, data.ok ? 'ok' : 'not ok'));
  // Spaces between the parts keep textContent readable (flex ignores them).
  $('summary').replaceChildren(...parts.flatMap((p, i) => (i ? [' ', p] : [p])));
}

function buttons(cell, agent, actions) {
  return actions.map((a) => h('button', {
    type: 'button', class: a, 'data-action': a, 'data-cell': cell, 'data-agent': agent,
  }, a));
}

function renderPending(list) {
  const items = list.map((p) => h('li', { 'data-cell': p.cell, 'data-agent': p.agent },
    h('span', { class: 'mono' }, short(p.cell)), ' ',
    h('strong', {}, p.agent), ' ',
    h('span', { class: 'muted' }, `${p.reason || ''} `),
    h('span', { class: 'mono muted' }, p.request_id || ''), ' ',
    ...buttons(p.cell, p.agent, ['approve', 'deny'])));
  if (!items.length) items.push(h('li', { class: 'muted' }, 'none'));
  $('pending').replaceChildren(...items);
}

const COLUMNS = ['agent', 'role', 'state', 'heartbeat', 'status', 'revives', 'pid',
  'control', 'isolation', 'next', ''];

function renderCell(c) {
  const head = h('h2', { class: 'cell-head' },
    h('span', { class: 'mono uuid', title: c.uuid }, short(c.uuid)), ' ',
    h('span', { class: 'cell-name' }, c.name || '(unnamed)'), ' ',
    h('span', { class: `cell-status status-${cls(c.status || 'unknown')}` }, c.status || '?'));
  const sec = h('section', { class: 'cell panel', 'data-cell': c.uuid }, head);
  if (c.mission) sec.append(h('p', { class: 'mission' }, c.mission));
  const meta = [c.daemon_pid ? `daemon pid ${c.daemon_pid}` : null, c.source ? `from ${c.source}` : null]
    .filter(Boolean).join(' · ');
  if (meta) sec.append(h('p', { class: 'muted small' }, meta));
  if (c.error) sec.append(h('p', { class: 'err' }, `unreadable: ${c.error}`));
  const agents = c.agents || [];
  if (!agents.length) return sec;
  const tbody = h('tbody');
  for (const a of agents) tbody.append(...renderAgent(c.uuid, a));
  sec.append(h('div', { class: 'scroll' }, h('table', { class: 'agents' },
    h('thead', {}, h('tr', {}, ...COLUMNS.map((n) => h('th', {}, n)))), tbody)));
  return sec;
}

function renderAgent(cell, a) {
  const state = a.state || 'unknown';
  const td = (text, klass) => h('td', { class: klass || null }, text === null || text === undefined ? '-' : String(text));

  // Heartbeat age: from last_seen and the local clock, ticking.
  const age = h('span', { class: 'age mono' });
  let seen = typeof a.last_seen === 'number' ? a.last_seen : null;
  if (seen === null && typeof a.heartbeat_age_s === 'number') seen = Date.now() / 1000 - a.heartbeat_age_s;
  if (seen === null) age.textContent = 'never';
  else tickers.push({ el: age, kind: 'age', t: seen });

  const next = h('span', { class: 'next' });
  const n = a.next;
  if (n && n.action) {
    const label = clean(n.action);
    let at = typeof n.at === 'number' ? n.at : null;
    if (at === null && typeof n.in_s === 'number') at = Date.now() / 1000 + n.in_s;
    if (n.by === 'operator') next.textContent = `${label} (operator)`;
    else if (at !== null) tickers.push({ el: next, kind: 'next', t: at, label });
    else next.textContent = n.by ? `${label} (${clean(n.by)})` : label;
  } else next.textContent = '-';

  const actions = state === 'awaiting_approval' ? ['approve', 'deny']
    : (state === 'dead' || state === 'abandoned') ? ['revive'] : [];

  const row = h('tr', { class: `agent state-${cls(state)}`, 'data-cell': cell, 'data-agent': a.name, 'data-state': state },
    h('td', { class: 'name' }, a.name || '?'),
    td(a.role),
    h('td', {}, h('span', { class: 'badge' }, state)),
    h('td', {}, age),
    td(a.heartbeat_status, 'hb-status'),
    td(a.revive_count, 'mono num'),
    td(a.pid, 'mono num'),
    td(a.control),
    td(a.isolation),
    h('td', {}, next),
    h('td', { class: 'actions' }, ...buttons(cell, a.name, actions)));

  // Why / note / problem under the row, only when there is something to say.
  const lines = [];
  if (a.problem) lines.push(h('div', { class: 'err' }, `problem: ${a.problem}`));
  if (a.why) lines.push(h('div', {}, `why: ${a.why}`));
  if (a.note) lines.push(h('div', {}, `note: ${a.note}`));
  if (a.request && a.request.id) lines.push(h('div', { class: 'muted' }, `request ${a.request.id} (${a.request.reason || ''})`));
  if (Array.isArray(a.limits) && a.limits.length) {
    lines.push(h('div', { class: 'muted' }, `limits: ${a.limits.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join(', ')}`));
  }
  if (!lines.length) return [row];
  return [row, h('tr', { class: 'detail' }, h('td', { colspan: COLUMNS.length }, ...lines))];
}

function tick() {
  const now = Date.now() / 1000;
  for (const t of tickers) {
    if (t.kind === 'age') t.el.textContent = `${fmtDur(now - t.t)} ago`;
    else {
      const left = t.t - now;
      t.el.textContent = left > 0 ? `${t.label} in ${fmtDur(left)}` : `${t.label} now`;
    }
  }
}

// ---- actions -------------------------------------------------------------------

document.addEventListener('click', async (ev) => {
  const b = ev.target.closest('button[data-action]');
  if (!b || !token) return;
  const { action, cell, agent } = b.dataset;
  if (!['approve', 'deny', 'revive'].includes(action)) return;
  const who = `${short(cell)}/${clean(agent)}`;
  b.disabled = true;
  say(`${action} ${who}…`, '');
  try {
    const res = await api('POST', `/api/cells/${enc(cell)}/agents/${enc(agent)}/${action}`);
    if (!res) return;
    if (res.ok) {
      const body = await res.json().catch(() => ({}));
      say(`${action} ${who}: ${body.done ? (typeof body.done === 'string' ? body.done : JSON.stringify(body.done)) : 'done'}`, 'ok');
    } else {
      say(`${action} ${who} failed: ${await errorText(res)}`, 'err');
    }
  } catch (e) {
    say(`${action} ${who} failed: ${e.message}`, 'err');
  } finally {
    b.disabled = false;
    scheduleRefresh();
  }
});

// ---- events panel -----------------------------------------------------------------

function addEvent(text) {
  let ev = null;
  try { ev = JSON.parse(text); } catch (_) { /* shown raw below */ }
  let li;
  if (!ev || typeof ev !== 'object' || Array.isArray(ev)) {
    li = h('li', { class: 'event raw' }, text);
  } else {
    const d = new Date(ev.ts);
    const time = Number.isNaN(d.getTime()) ? String(ev.ts ?? '') :
      `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}`;
    const rest = Object.entries(ev).filter(([k]) => !['ts', 'event', 'cell', 'agent'].includes(k))
      .map(([k, v]) => h('span', { class: 'kv' }, `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`));
    li = h('li', { class: `event ev-${cls(ev.event || 'unknown')}`, 'data-cell': ev.cell, 'data-event': ev.event },
      h('span', { class: 'mono muted', title: String(ev.ts ?? '') }, time), ' ',
      h('span', { class: 'mono' }, short(ev.cell)), ' ',
      h('strong', {}, ev.event ?? '?'), ' ',
      h('span', { class: 'ev-agent' }, ev.agent ?? ''), ' ',
      ...rest.flatMap((kv) => [kv, ' ']));
  }
  li.dataset.line = text;
  const list = $('events');
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

// ---- /api/events (SSE over fetch, since EventSource cannot send a header) -----------

let streamCtl = null;
let reconnectTimer = null;
let backoff = 1000;

function setConn(live) {
  const c = $('conn');
  c.textContent = live ? 'live' : 'reconnecting';
  c.className = `conn ${live ? 'up' : 'down'}`;
}

function stopStream() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  if (streamCtl) { streamCtl.abort(); streamCtl = null; }
  setConn(false);
}

// One SSE message: its data lines joined by "\n"; comments (":...") ignored.
function dispatch(block) {
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  addEvent(data.join('\n'));
  scheduleRefresh();
}

async function connectStream() {
  if (!token || streamCtl) return;
  const ctl = new AbortController();
  streamCtl = ctl;
  let idle = null;
  const poke = () => { clearTimeout(idle); idle = setTimeout(() => ctl.abort(), STREAM_IDLE_MS); };
  let refused = false;
  try {
    poke();
    const res = await api('GET', '/api/events', ctl.signal);
    if (!res) { refused = true; return; }
    if (!res.ok || !res.body) throw new Error(await errorText(res));
    setConn(true);
    backoff = 1000;
    scheduleRefresh(); // catch up on whatever happened while disconnected
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let carry = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      poke();
      // Normalise CRLF / CR to LF; a CR at a chunk's end may be half a CRLF.
      let text = carry + dec.decode(value, { stream: true });
      carry = text.endsWith('\r') ? '\r' : '';
      if (carry) text = text.slice(0, -1);
      buf += text.replace(/\r\n?/g, '\n');
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        dispatch(buf.slice(0, i));
        buf = buf.slice(i + 2);
      }
    }
  } catch (_) {
    /* network error, abort or idle timeout: reconnect below */
  } finally {
    clearTimeout(idle);
    if (streamCtl === ctl) {
      streamCtl = null;
      setConn(false);
      if (token && !refused) {
        reconnectTimer = setTimeout(connectStream, backoff);
        backoff = Math.min(backoff * 2, 10000);
      }
    }
  }
}

// ---- start ----------------------------------------------------------------------

function start() {
  $('login').hidden = true;
  $('dash').hidden = false;
  backoff = 1000;
  refresh().then(backfill);
  connectStream();
}

// The stream brings only new lines: the panel starts with the last hour's
// of the first cells, newest on top. A line the stream also brought (one
// written meanwhile) is shown once.
const BACKFILL_CELLS = 20;
let backfilled = false;

async function backfill() {
  if (backfilled || !lastData) return;
  backfilled = true;
  const cells = (lastData.cells || []).slice(0, BACKFILL_CELLS);
  const lines = [];
  await Promise.all(cells.map(async (c) => {
    try {
      const res = await api('GET', `/api/cells/${encodeURIComponent(c.uuid)}/events?since=1h`);
      if (!res || !res.ok) return;
      for (const line of (await res.text()).split('\n')) if (line) lines.push(line);
    } catch (_) { /* the live stream still fills the panel */ }
  }));
  const ts = (line) => { try { return String(JSON.parse(line).ts || ''); } catch (_) { return ''; } };
  lines.sort((a, b) => (ts(a) < ts(b) ? -1 : ts(a) > ts(b) ? 1 : 0));
  const present = new Set(Array.from($('events').children, (li) => li.dataset.line));
  const older = lines.slice(-MAX_EVENTS).filter((l) => !present.has(l));
  // Under what the stream already showed: appended oldest last.
  const list = $('events');
  for (const line of older.reverse()) {
    addEvent(line);
    list.append(list.firstElementChild);
  }
}

function saveFromForm() {
  const t = $('token-input').value.trim();
  if (!t) { $('login-note').textContent = 'Enter a token.'; return; }
  saveToken(t);
  $('token-input').value = '';
  say('', '');
  start();
}

function boot() {
  $('token-save').addEventListener('click', saveFromForm);
  $('token-input').addEventListener('keydown', (e) => { if (e.key === 'Enter') saveFromForm(); });
  setInterval(tick, TICK_MS);
  setInterval(scheduleRefresh, REFRESH_EVERY_MS);
  loadToken();
  if (token) start();
  else showLogin('');
}

boot();
