/*
 * The roomcast dashboard page: room toggles, one panel per joined room, one
 * card per metric (number, unit, trend mark and a live line chart), fed by
 * roomcast.js.
 *
 * URL parameters: ?rooms=a,b (rooms to show; otherwise the last choice, from
 * localStorage), ?kiosk=1 (no controls), ?lang=zh|en (default from the
 * browser), ?window=SECONDS (the charts' time span, default 300).
 *
 * It runs for weeks on a wall, so it builds DOM only when rooms or metrics
 * appear and otherwise only changes text nodes in place; chart points live
 * in bounded typed-array rings; a chart is redrawn at most once per
 * animation frame, and only when its data or the time moved. Everything
 * from the server is shown with text nodes, never parsed as HTML.
 *
 * An ES module (so nothing here is global but window.roomcastDashboard);
 * chart.js draws the charts, roomcast.js (loaded before) is the client.
 */
import {Chart} from './chart.js';

const STORE_KEY = 'roomcast.rooms';
const DEFAULT_ROOMS = ['sales'];
const CATALOG_POLL_MS = 5000;
const DEFAULT_INTERVAL_MS = 10000; // for rooms whose interval is not known
const STALE_INTERVALS = 3;         // stale after this many intervals without an update
const MAX_EXTRA_CARDS = 32;        // bounds the DOM if a producer invents keys
const NOT_METRICS = new Set(['ts', 'timestamp']);
const PALETTE = ['#38bdf8', '#a78bfa', '#34d399', '#fbbf24', '#f472b6', '#2dd4bf', '#fb923c', '#818cf8'];

// ---- settings from the URL ----

const params = new URLSearchParams(location.search);
const kiosk = /^(1|true|yes|on)$/i.test(params.get('kiosk') || '');
const lang = (params.get('lang') || navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
const locale = lang === 'zh' ? 'zh-CN' : 'en-US';
const windowMs = 1000 * Math.min(86400, Math.max(10, Math.round(Number(params.get('window'))) || 300));

// ---- UI text ----

const STRINGS = {
  en: {
    rooms: 'Rooms', connecting: 'connecting…', live: 'live', offline: 'offline',
    reconnecting: 'reconnecting (attempt {n})',
    lastUpdate: 'last update', waiting: 'waiting for data', stale: 'stale',
    s: '{n} s ago', min: '{n} min ago', h: '{n} h ago', d: '{n} d ago',
    now: 'now', winS: '−{n} s', winMin: '−{n} min', winH: '−{n} h',
    emptyPick: 'No room selected: pick one above.',
    emptyKiosk: 'No room selected: add ?rooms=<room> to the address.',
    emptyNone: 'No rooms yet: waiting for a producer to announce one.',
    bad_room: 'invalid room name', forbidden: 'not allowed to join this room',
    too_many_rooms: 'too many rooms', rate_limited: 'too many requests, retrying',
    unauthorized: 'not authorised', error: 'error ({n})',
  },
  zh: {
    rooms: '房间', connecting: '连接中…', live: '实时', offline: '离线',
    reconnecting: '重新连接中（第 {n} 次）',
    lastUpdate: '最后更新', waiting: '等待数据', stale: '停止更新',
    s: '{n} 秒前', min: '{n} 分钟前', h: '{n} 小时前', d: '{n} 天前',
    now: '现在', winS: '{n} 秒前', winMin: '{n} 分钟前', winH: '{n} 小时前',
    emptyPick: '未选择房间：请在上方选择。',
    emptyKiosk: '未选择房间：请在地址中加入 ?rooms=<房间>。',
    emptyNone: '暂无房间：等待数据源发布。',
    bad_room: '房间名无效', forbidden: '无权加入此房间',
    too_many_rooms: '房间数量超出上限', rate_limited: '请求过于频繁，正在重试',
    unauthorized: '未授权', error: '错误（{n}）',
  },
};
const ERROR_TEXTS = new Set(['bad_room', 'forbidden', 'too_many_rooms', 'rate_limited', 'unauthorized']);
const tr = (key, n) => STRINGS[lang][key].replace('{n}', String(n));

const $ = (id) => document.getElementById(id);
const ui = {
  toggles: $('toggles'), panels: $('panels'), empty: $('empty'),
  conn: $('conn'), clock: $('clock'), date: $('date'), notice: $('notice'),
  panelTpl: $('panel-tpl').content.firstElementChild,
  cardTpl: $('card-tpl').content.firstElementChild,
};

document.documentElement.lang = lang;
document.documentElement.classList.toggle('kiosk', kiosk);
for (const root of [document, $('panel-tpl').content, $('card-tpl').content]) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = tr(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', tr(el.dataset.i18nLabel));
}

const catalog = new Map(); // room -> catalogue entry, in catalogue order
const toggles = new Map(); // room -> button
const panels = new Map();  // room -> panel (see addPanel)
const charts = new Map();  // canvas -> card

// ---- small helpers ----

// The text node of an element, created once and then updated in place.
function slot(el) {
  if (!(el.firstChild instanceof Text)) el.replaceChildren(document.createTextNode(''));
  return el.firstChild;
}

function setText(node, text) {
  if (node.data !== text) node.data = text;
}

function setVar(el, name, value) {
  if (el.style.getPropertyValue(name) !== value) el.style.setProperty(name, value);
}

// Put nodes into container in this order, moving only what is misplaced.
function arrange(container, nodes) {
  nodes.forEach((node, i) => {
    const at = container.children[i];
    if (at !== node) container.insertBefore(node, at || null);
  });
}

const pad = (n) => String(n).padStart(2, '0');
const hms = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
const dateFormat = new Intl.DateTimeFormat(locale, {month: 'short', day: 'numeric', weekday: 'short'});

// Numbers keep the decimals they were sent with (as far as JSON keeps
// them: 1.50 arrives as 1.5), with the page language's separators.
const formats = new Map();
function formatFixed(v, decimals) {
  let f = formats.get(decimals);
  if (!f) {
    f = new Intl.NumberFormat(locale, {minimumFractionDigits: decimals, maximumFractionDigits: decimals});
    formats.set(decimals, f);
  }
  return f.format(v);
}
function formatNumber(v) {
  const m = /(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(v));
  return formatFixed(v, Math.min(20, Math.max(0, (m[1] ? m[1].length : 0) - (m[2] ? Number(m[2]) : 0))));
}

function formatAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return tr('s', s);
  if (s < 3600) return tr('min', Math.floor(s / 60));
  if (s < 172800) return tr('h', Math.floor(s / 3600));
  return tr('d', Math.floor(s / 86400));
}

const windowLabel = windowMs % 3600000 === 0 ? tr('winH', windowMs / 3600000)
  : windowMs % 60000 === 0 ? tr('winMin', windowMs / 60000) : tr('winS', windowMs / 1000);

// Roughly how wide a text is, in em: CJK is square, the rest narrower.
const emWidth = (s) => [...s].reduce((w, ch) => w + (ch.codePointAt(0) >= 0x1100 ? 1 : 0.6), 0);
// ... and in digit widths (1ch): separators and signs are narrower.
function chWidth(s) {
  let w = 0;
  for (const ch of s) w += ch >= '0' && ch <= '9' ? 1 : ch.codePointAt(0) >= 0x1100 ? 1.7 : 0.6;
  return w;
}

const intervalOf = (room) => (catalog.get(room) || {}).interval_ms || DEFAULT_INTERVAL_MS;

// ---- which rooms: ?rooms=a,b overrides localStorage, default sales ----

const fromURL = params.has('rooms');

function initialRooms() {
  let list = DEFAULT_ROOMS;
  if (fromURL) {
    list = params.get('rooms').split(',').map((r) => r.trim());
  } else {
    try {
      const saved = JSON.parse(localStorage.getItem(STORE_KEY));
      if (Array.isArray(saved)) list = saved;
    } catch (err) { /* storage unavailable or corrupt: use the default */ }
  }
  return [...new Set(list)].filter(Roomcast.isValidRoom);
}

// A choice made on a ?rooms= page stays in its URL, so that a wall
// configured by URL does not change what other screens start with.
function saveRooms() {
  const list = [...client.rooms()];
  if (fromURL) {
    params.set('rooms', list.join(','));
    history.replaceState(null, '', '?' + params.toString().replace(/%2C/g, ','));
    return;
  }
  try { localStorage.setItem(STORE_KEY, JSON.stringify(list)); } catch (err) { /* not persisted */ }
}

// ---- the client ----

// With auth.mode jwt the page may be opened as ...?token=<JWT> (a wall
// screen has no login form); a cookie set by your own login works too.
const token = params.get('token') || undefined;
const client = new Roomcast.Client({url: 'ws', token, rooms: initialRooms()});
window.roomcastDashboard = {client}; // for tests and the browser console

client.on('state', ({state, attempt}) => {
  setText(slot(ui.conn), state === 'reconnecting' ? tr('reconnecting', attempt) : tr(state));
  ui.conn.dataset.state = state;
});

client.on('update', ({room, data, gap}) => {
  const p = panels.get(room);
  if (p && data && typeof data === 'object') applyUpdate(p, data, gap);
});

let noticeTimer = 0;
client.on('error', ({code, message, room}) => {
  const entry = room && catalog.get(room);
  setText(slot(ui.notice), (room ? `${entry ? entry.title : room}: ` : '') +
    (ERROR_TEXTS.has(code) ? tr(code) : tr('error', code)));
  ui.notice.title = message || code || '';
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => setText(slot(ui.notice), ''), 10000);
  render(); // a refused join is no longer in client.rooms()
  saveRooms();
});

// ---- rooms: toggles, panels and cards ----

// render brings toggles and panels in line with the catalogue and the
// client's rooms. It runs on changes of either, never per update.
function render() {
  const wanted = client.rooms();
  const extra = [...wanted].filter((r) => !catalog.has(r)).sort();
  const order = [...catalog.keys(), ...extra];

  for (const [room, btn] of toggles) {
    if (!order.includes(room)) { btn.remove(); toggles.delete(room); }
  }
  for (const room of order) {
    const btn = toggles.get(room) || addToggle(room);
    const entry = catalog.get(room);
    setText(slot(btn), entry ? entry.title : room);
    btn.title = room;
    btn.setAttribute('aria-pressed', String(wanted.has(room)));
  }
  arrange(ui.toggles, order.map((r) => toggles.get(r)));

  for (const [room, p] of panels) {
    if (!wanted.has(room)) removePanel(p);
  }
  for (const room of wanted) applyCatalog(panels.get(room) || addPanel(room));
  arrange(ui.panels, order.filter((r) => wanted.has(r)).map((r) => panels.get(r).root));
  ui.panels.hidden = wanted.size === 0;
  ui.empty.hidden = wanted.size > 0;
  setText(slot(ui.empty), tr(order.length === 0 ? 'emptyNone' : kiosk ? 'emptyKiosk' : 'emptyPick'));

  // A browser cannot see the gateway's pings, so the client tells a dead
  // connection by silence: give the slowest room 3 intervals.
  let slowest = 0;
  for (const room of wanted) slowest = Math.max(slowest, intervalOf(room));
  client.deadAfter = Math.max(45000, 3 * slowest + 5000);
  layoutSoon();
}

function addToggle(room) {
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.dataset.room = room;
  btn.addEventListener('click', () => {
    if (client.rooms().has(room)) client.leave(room);
    else client.join(room);
    saveRooms();
    render();
  });
  toggles.set(room, btn);
  return btn;
}

function addPanel(room) {
  const root = ui.panelTpl.cloneNode(true);
  root.dataset.room = room;
  const q = (sel) => slot(root.querySelector(sel));
  const p = {
    room, root, grid: root.querySelector('.cards'),
    title: q('.title'), last: q('.last'), age: q('.age'),
    cards: new Map(),           // metric key -> card
    extras: 0,                  // cards for keys not in the catalogue
    since: performance.now(),   // last update received, or the panel's creation
    hasData: false, stale: false,
    skew: undefined, strikes: 0, // see pointTime
    lastT: Infinity,            // time of the last chart point
  };
  setText(q('.room'), room);
  panels.set(room, p);
  tickPanel(p, performance.now());
  return p;
}

function removePanel(p) {
  for (const c of p.cards.values()) { resizer.unobserve(c.canvas); charts.delete(c.canvas); dirty.delete(c); }
  p.root.remove();
  panels.delete(p.room);
}

// applyCatalog gives the panel its title and a card per catalogue metric,
// in catalogue order, followed by cards for keys the catalogue lacks;
// chart colours follow the order.
function applyCatalog(p) {
  const entry = catalog.get(p.room);
  setText(p.title, entry ? entry.title : p.room);
  const known = new Set();
  for (const m of entry ? entry.metrics : []) {
    known.add(m.key);
    const c = p.cards.get(m.key) || addCard(p, m.key);
    setText(c.label, m.label);
    setUnit(c, m.unit);
  }
  for (const [key, c] of p.cards) {
    if (!known.has(key)) { setText(c.label, key); setUnit(c, ''); }
  }
  p.extras = p.cards.size - known.size;
  const order = [...known, ...[...p.cards.keys()].filter((k) => !known.has(k))].map((k) => p.cards.get(k));
  order.forEach((c, i) => c.chart.setColor(PALETTE[i % PALETTE.length]) && invalidate(c));
  arrange(p.grid, order.map((c) => c.root));
}

function setUnit(c, unit) {
  setText(c.unit, unit);
  setVar(c.root, '--unit-em', String(unit ? emWidth(unit) + 0.4 : 0));
}

function addCard(p, key) {
  const root = ui.cardTpl.cloneNode(true);
  root.dataset.key = key;
  const q = (sel) => slot(root.querySelector(sel));
  const canvas = root.querySelector('canvas');
  const c = {
    root, panel: p, box: root.querySelector('.value'), value: q('.value'),
    label: q('.label'), unit: q('.unit'), trend: q('.trend'), prev: undefined, flip: false,
    chars: 0, charsAt: 0,       // see setValue
    canvas, chart: new Chart(canvas),
  };
  setText(c.label, key);
  p.cards.set(key, c);
  p.grid.appendChild(root);
  charts.set(canvas, c);
  try { resizer.observe(canvas, {box: 'device-pixel-content-box'}); } catch (err) { resizer.observe(canvas); }
  layoutSoon();
  return c;
}

// ---- updates ----

function applyUpdate(p, data, gap) {
  const now = performance.now();
  const t = pointTime(p, data, now);
  // A silence long enough to make the room stale is a gap in the chart
  // too: a solid line across it would claim values nobody sent.
  const brk = gap || t - p.lastT > STALE_INTERVALS * intervalOf(p.room);
  p.lastT = t;
  for (const key in data) {
    if (NOT_METRICS.has(key)) continue;
    const v = data[key];
    const numeric = typeof v === 'number' && Number.isFinite(v);
    let c = p.cards.get(key);
    if (!c) {
      // Keys the catalogue does not list get a card when numeric.
      if (!numeric || p.extras >= MAX_EXTRA_CARDS) continue;
      c = addCard(p, key);
      applyCatalog(p); // its label, colour and place
    }
    if (numeric) {
      setValue(c, v, now);
      if (t > now - windowMs) c.chart.push(t, v, brk);
      invalidate(c);
    } else if (typeof v === 'string') setValue(c, v.slice(0, 64), now);
  }

  let when;
  if (typeof data.timestamp === 'string' && data.timestamp) when = data.timestamp.slice(0, 32);
  else if (typeof data.ts === 'number' && Number.isFinite(data.ts)) when = hms(new Date(data.ts));
  else when = hms(new Date());
  setText(p.last, when);
  // Age and staleness count from when the update arrived here, which
  // needs no agreement between the producer's clock and this screen's.
  p.since = now;
  p.hasData = true;
  tickPanel(p, now);
}

// pointTime places an update on this screen's clock (performance.now()).
// With a producer ts it is ts + skew, skew being the smallest arrival − ts
// seen (clock difference plus the quickest delivery), so that updates
// replayed after a reconnect land where they belong rather than all at
// the reconnect. If the producer's clock jumps back, 5 spaced-out updates
// in a row that arrive > 5 s "late" reset the skew.
function pointTime(p, data, now) {
  const ts = data.ts;
  if (typeof ts !== 'number' || !Number.isFinite(ts)) return now;
  const late = now - ts - p.skew;
  if (p.skew === undefined || late < 0) {
    p.skew = now - ts;
    p.strikes = 0;
  } else if (late <= 5000) {
    p.strikes = 0;
  } else if (now - p.since > 50 && ++p.strikes >= 5) {
    p.skew = now - ts;
    p.strikes = 0;
  }
  return Math.min(now, ts + p.skew);
}

function setValue(c, v, now) {
  const numeric = typeof v === 'number';
  const text = numeric ? formatNumber(v) : v;
  let trend = '';
  if (numeric && typeof c.prev === 'number') trend = v > c.prev ? 'up' : v < c.prev ? 'down' : 'same';
  c.prev = v;
  setText(c.trend, trend === 'up' ? '▲' : trend === 'down' ? '▼' : trend ? '=' : '');
  if (c.root.dataset.trend !== trend) c.root.dataset.trend = trend;
  if (text === c.value.data) return;
  // The number's box is as wide as the longest value of the last window
  // (JSON drops trailing zeros: 8185.70 comes as 8185.7), so that neither
  // its size nor the unit beside it jumps from one update to the next.
  const len = Math.max(2, Math.ceil(chWidth(text) * 4) / 4);
  if (len >= c.chars || now - c.charsAt > windowMs) {
    if (len !== c.chars) setVar(c.box, '--chars', String(len));
    c.chars = len;
    c.charsAt = now;
  }
  setText(c.value, text);
  // Restart the flash: two identical animations take turns (see style.css).
  c.flip = !c.flip;
  c.root.dataset.flash = c.flip ? 'a' : 'b';
}

// ---- chart drawing: at most once per frame, only what changed ----

const dirty = new Set();
let frame = 0, needLayout = false;
let rem = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;

function schedule() { if (!frame) frame = requestAnimationFrame(onFrame); }
function invalidate(c) { dirty.add(c); schedule(); }
function layoutSoon() { needLayout = true; schedule(); }

function onFrame() {
  frame = 0;
  if (needLayout) { needLayout = false; layout(); }
  drawing.now = performance.now();
  drawing.rem = rem;
  for (const c of dirty) {
    drawing.stale = c.panel.stale;
    c.chart.draw(drawing);
  }
  dirty.clear();
}

// The charts scroll with time: redraw them about once per pixel of
// movement, but at most 4 and at least 1 time a second.
let widest = 0;
function scroll() {
  if (!document.hidden) for (const c of charts.values()) invalidate(c);
  setTimeout(scroll, Math.min(1000, Math.max(250, windowMs / (widest || 1000))));
}

// One options object for all draws (see Chart.draw), so drawing allocates
// nothing.
const drawing = {now: 0, windowMs, rem, font: getComputedStyle(document.body).fontFamily, stale: false,
  left: windowLabel, right: tr('now'), format: formatFixed};

// ---- layout: panels and cards as close to a good shape as the screen allows ----

// Sizes come from one ResizeObserver: on main (the space for panels) and
// on every canvas (its exact size in device pixels, so lines are sharp).
let mainW = 0, mainH = 0;
const resizer = new ResizeObserver((entries) => {
  for (const e of entries) {
    if (e.target === ui.panels) {
      ({width: mainW, height: mainH} = e.contentRect);
      rem = parseFloat(getComputedStyle(document.documentElement).fontSize) || rem;
      layoutSoon();
      continue;
    }
    const c = charts.get(e.target);
    if (!c) continue;
    c.chart.resize(e);
    widest = Math.max(widest, c.chart.cssW);
    invalidate(c);
  }
});
resizer.observe(ui.panels);

// fit picks the number of columns for n boxes in a w×h area whose boxes
// come closest to the aspect ratio 2:1; narrow boxes and empty cells cost
// extra.
function fit(n, w, h, gap, minW) {
  let best = {cols: 1, score: Infinity};
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const bw = (w - gap * (cols - 1)) / cols, bh = (h - gap * (rows - 1)) / rows;
    if (bw <= 0 || bh <= 0) break;
    const score = Math.abs(Math.log(bw / bh / 2)) + (bw < minW ? 4 : 0) + (rows * cols - n) / (rows * cols);
    if (score < best.score) best = {cols, score};
  }
  return best;
}

// layout sets main's --cols and each panel's --card-cols: the split of
// the screen whose cards have the best shapes overall, without leaving
// much of the screen empty.
function layout() {
  const list = [...panels.values()];
  if (!list.length || !mainW) return;
  const gap = 1.25 * rem, head = 3.2 * rem, padX = 2.5 * rem;
  const cardFit = (p, pw, ph) => fit(p.cards.size || 1, pw - padX, ph - head - padX, rem, 14 * rem);
  let best = {cols: 1, score: Infinity, pw: mainW, ph: mainH};
  for (let cols = 1; cols <= list.length; cols++) {
    const rows = Math.ceil(list.length / cols);
    const pw = (mainW - gap * (cols - 1)) / cols;
    const ph = Math.max(16 * rem, (mainH - gap * (rows - 1)) / rows);
    if (cols > 1 && pw < 22 * rem) break;
    const waste = 3 * list.length * (rows * cols - list.length) / (rows * cols);
    const score = list.reduce((sum, p) => sum + cardFit(p, pw, ph).score, waste);
    if (score < best.score) best = {cols, score, pw, ph};
  }
  setVar(ui.panels, '--cols', String(best.cols));
  for (const p of list) setVar(p.grid, '--card-cols', String(cardFit(p, best.pw, best.ph).cols));
}

// ---- once a second: the clock, ages and staleness ----

function tickPanel(p, now) {
  const age = now - p.since;
  setText(p.age, p.hasData ? formatAge(age) : tr('waiting'));
  const stale = age > STALE_INTERVALS * intervalOf(p.room);
  if (p.stale === stale) return;
  p.stale = stale;
  p.root.classList.toggle('stale', stale);
  for (const c of p.cards.values()) invalidate(c);
}

function tick() {
  const d = new Date();
  setText(slot(ui.clock), hms(d));
  setText(slot(ui.date), dateFormat.format(d));
  const now = performance.now();
  for (const p of panels.values()) tickPanel(p, now);
  // Aim just past the next full second, so that the clock does not drift.
  setTimeout(tick, 1010 - (Date.now() % 1000));
}

// ---- the room catalogue, polled cheaply with its ETag ----

let etag = null;

async function pollCatalog() {
  try {
    const headers = etag ? {'If-None-Match': etag} : {};
    if (token) headers.Authorization = 'Bearer ' + token;
    const res = await fetch('api/rooms', {
      headers,
      cache: 'no-store', // we revalidate ourselves; keep the browser cache out
      signal: AbortSignal.timeout(2 * CATALOG_POLL_MS),
    });
    if (res.status === 200) {
      const body = await res.json();
      setCatalog(Array.isArray(body.rooms) ? body.rooms : []);
      etag = res.headers.get('ETag');
    }
    // 304: unchanged. Anything else: keep what we have and ask again.
  } catch (err) {
    // The gateway is unreachable; the connection badge already says so.
  }
  setTimeout(pollCatalog, CATALOG_POLL_MS);
}

function setCatalog(rooms) {
  catalog.clear();
  for (const e of rooms) {
    if (!e || !Roomcast.isValidRoom(e.room) || catalog.has(e.room)) continue;
    const seen = new Set();
    catalog.set(e.room, {
      title: typeof e.title === 'string' && e.title ? e.title : e.room,
      metrics: (Array.isArray(e.metrics) ? e.metrics : [])
        .filter((m) => m && typeof m.key === 'string' && m.key && !NOT_METRICS.has(m.key) &&
          !seen.has(m.key) && seen.add(m.key))
        .map((m) => ({key: m.key, label: String(m.label || m.key), unit: String(m.unit || '')})),
      interval_ms: Number(e.interval_ms) > 0 ? Number(e.interval_ms) : 0,
    });
  }
  render();
}

render();
tick();
scroll();
client.connect();
pollCatalog();
