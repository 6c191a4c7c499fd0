/*
 * The roomcast dashboard page: one panel per room, one card per metric,
 * drawn as the room's catalogue entry says (panels.js: number, total,
 * line, ranking, share, list), fed by roomcast.js.
 *
 * URL parameters:
 *   ?screen=NAME   a named screen (dashboard.screens or the catalogue
 *                  bucket): its title, rooms, panels, order and sizes
 *   ?rooms=a,b     these rooms (toggling them changes the URL)
 *   (neither)      the last choice from localStorage, else — and always
 *                  in kiosk mode — the default screen: every room of the
 *                  catalogue, following it as rooms come and go
 *   ?kiosk=1       no controls, no pointer
 *   ?lang=zh|en|…  texts of the page and of the catalogue (titles, labels,
 *                  units, names) in this language; default the browser's
 *   ?up=red|green  the colour of "up" (default red in Chinese, 红涨绿跌,
 *                  green elsewhere)
 *   ?window=SECS   the line charts' span, default 300
 *
 * It runs for weeks on a wall, so it builds DOM only when rooms or metrics
 * appear and otherwise only changes text nodes in place; chart points live
 * in bounded typed-array rings; a canvas is redrawn at most once per
 * animation frame, and only when its data or the time moved. Everything
 * from the server is shown with text nodes, never parsed as HTML.
 *
 * An ES module (nothing here is global but window.roomcastDashboard);
 * roomcast.js (loaded before) is the client.
 */
import {Formatter} from './format.js';
import {makeCard, PALETTE, slot, setText, setVar} from './panels.js';

const STORE_KEY = 'roomcast.rooms';
const CATALOG_POLL_MS = 5000;
const DEFAULT_INTERVAL_MS = 10000; // for rooms whose interval is not known
const STALE_INTERVALS = 3;         // stale after this many intervals without an update
const MAX_EXTRA_CARDS = 32;        // bounds the DOM if a producer invents keys
const NOT_METRICS = new Set(['ts', 'timestamp']);
const KINDS = new Set(['number', 'line', 'total', 'ranking', 'share', 'list']);
// Ask each join for the chart window's worth of history, so that charts
// and feeds are full at once after a load. Gateways that do not know the
// field ignore it (unknown fields are accepted); set to false to stop
// sending it.
const ASK_HISTORY = true;

// ---- settings from the URL ----

const params = new URLSearchParams(location.search);
const kiosk = /^(1|true|yes|on)$/i.test(params.get('kiosk') || '');
// The language asked for, as a tag ('zh-tw'); the page's own texts exist
// in Chinese and English.
const langTag = (params.get('lang') || navigator.language || 'en').toLowerCase();
const lang = langTag.startsWith('zh') ? 'zh' : 'en';
const locale = lang === 'zh' ? 'zh-CN' : 'en-US';
const windowMs = 1000 * Math.min(86400, Math.max(10, Math.round(Number(params.get('window'))) || 300));
const screenName = params.get('screen') || '';
const upParam = (params.get('up') || '').toLowerCase();
const redUp = upParam ? upParam === 'red' : lang === 'zh';

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
    unknownRoom: 'Unknown room “{n}”: no producer has announced it or sent data.',
    unknownScreen: 'Unknown screen “{n}”: it is not in dashboard.screens or the catalogue.',
    today: 'today', target: 'Target', total: 'Total', other: 'Other',
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
    unknownRoom: '未知房间“{n}”：没有数据源发布它，也没有收到数据。',
    unknownScreen: '未知大屏“{n}”：dashboard.screens 和目录中都没有它。',
    today: '今日累计', target: '目标', total: '合计', other: '其他',
    bad_room: '房间名无效', forbidden: '无权加入此房间',
    too_many_rooms: '房间数量超出上限', rate_limited: '请求过于频繁，正在重试',
    unauthorized: '未授权', error: '错误（{n}）',
  },
};
const ERROR_TEXTS = new Set(['bad_room', 'forbidden', 'too_many_rooms', 'rate_limited', 'unauthorized']);
const tr = (key, n) => STRINGS[lang][key].replace('{n}', String(n));

// pick returns a catalogue text in the page's language: a plain string as
// it is; of a map by language the exact tag, then its language, then the
// page's UI language, then English, then any.
function pick(t) {
  if (typeof t === 'string') return t;
  if (!t || typeof t !== 'object') return '';
  const keys = Object.keys(t).filter((k) => typeof t[k] === 'string');
  const byLower = new Map(keys.map((k) => [k.toLowerCase(), k]));
  for (const want of [langTag, langTag.split('-')[0], lang, 'en']) {
    if (byLower.has(want)) return t[byLower.get(want)];
  }
  keys.sort();
  return keys.length ? t[keys[0]] : '';
}

const $ = (id) => document.getElementById(id);
const ui = {
  title: $('title'), toggles: $('toggles'), panels: $('panels'), empty: $('empty'),
  conn: $('conn'), clock: $('clock'), date: $('date'), notice: $('notice'),
  panelTpl: $('panel-tpl').content.firstElementChild,
};

document.documentElement.lang = lang;
document.documentElement.classList.toggle('kiosk', kiosk);
document.documentElement.classList.toggle('red-up', redUp);
document.documentElement.classList.toggle('screen', !!screenName);
for (const root of [document, $('panel-tpl').content]) {
  for (const e of root.querySelectorAll('[data-i18n]')) e.textContent = tr(e.dataset.i18n);
  for (const e of root.querySelectorAll('[data-i18n-label]')) e.setAttribute('aria-label', tr(e.dataset.i18nLabel));
}

const catalog = new Map(); // room -> normalised entry, in catalogue order
let catalogLoaded = false;
let screens = [];          // from /api/rooms
let screen = null;         // the screen shown, with ?screen=
let siteTitle = '';        // dashboard.title
const toggles = new Map(); // room -> button
const panels = new Map();  // room -> panel (see addPanel)
const canvases = new Map(); // canvas -> card
const refused = new Set(); // rooms the gateway refused: the default screen does not ask again

// ---- small helpers ----

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
const fmt = new Formatter(lang);

function formatAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return tr('s', s);
  if (s < 3600) return tr('min', Math.floor(s / 60));
  if (s < 172800) return tr('h', Math.floor(s / 3600));
  return tr('d', Math.floor(s / 86400));
}

const windowLabel = windowMs % 3600000 === 0 ? tr('winH', windowMs / 3600000)
  : windowMs % 60000 === 0 ? tr('winMin', windowMs / 60000) : tr('winS', windowMs / 1000);
const historyWindow = windowMs % 60000 === 0 ? `${windowMs / 60000}m` : `${windowMs / 1000}s`;

const intervalOf = (room) => (catalog.get(room) || {}).interval_ms || DEFAULT_INTERVAL_MS;

// ---- which rooms ----

// mode: 'screen' (?screen=), 'rooms' (?rooms= or a saved choice) or 'all'
// (the default screen: every catalogue room).
const fromURL = params.has('rooms');
let mode = screenName ? 'screen' : fromURL ? 'rooms' : 'all';

function initialRooms() {
  if (mode === 'screen') return [];
  let list = [];
  if (fromURL) {
    list = params.get('rooms').split(',').map((r) => r.trim());
  } else if (!kiosk) {
    try {
      const saved = JSON.parse(localStorage.getItem(STORE_KEY));
      if (Array.isArray(saved)) { list = saved; mode = 'rooms'; }
    } catch (err) { /* storage unavailable or corrupt: the default screen */ }
  }
  return [...new Set(list)].filter(Roomcast.isValidRoom);
}

// A choice made on a ?rooms= page stays in its URL, so that a wall
// configured by URL does not change what other screens start with.
function saveRooms() {
  if (mode === 'screen') return;
  const list = [...client.rooms()];
  if (fromURL) {
    params.set('rooms', list.join(','));
    history.replaceState(null, '', '?' + params.toString().replace(/%2C/g, ','));
    return;
  }
  if (mode === 'all') return; // the default screen follows the catalogue
  try { localStorage.setItem(STORE_KEY, JSON.stringify(list)); } catch (err) { /* not persisted */ }
}

// ---- the client ----

// With auth.mode jwt the page may be opened as ...?token=<JWT> (a wall
// screen has no login form); a cookie set by your own login works too.
const token = params.get('token') || undefined;
const client = new Roomcast.Client({url: 'ws', token});
window.roomcastDashboard = {client, panels}; // for tests and the browser console

function joinRoom(room) {
  if (ASK_HISTORY) client.join(room, {history: historyWindow});
  else client.join(room);
}

for (const room of initialRooms()) joinRoom(room);

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
  if (room && !client.rooms().has(room)) refused.add(room);
  render(); // a refused join is no longer in client.rooms()
  saveRooms();
});

// follow joins and leaves what the default screen or a named screen
// shows; on other pages the rooms are the user's choice.
function follow() {
  let want;
  if (mode === 'all') want = [...catalog.keys()].filter((r) => !refused.has(r));
  else if (mode === 'screen') want = screen ? [...new Set(screen.panels.map((p) => p.room))] : [];
  else return;
  const have = client.rooms();
  for (const r of have) if (!want.includes(r)) client.leave(r);
  for (const r of want) if (!have.has(r)) joinRoom(r);
}

// ---- rooms: toggles, panels and cards ----

// order lists the rooms to show, in screen or catalogue order.
function roomOrder() {
  const wanted = client.rooms();
  if (mode === 'screen') return screen ? [...new Set(screen.panels.map((p) => p.room))].filter((r) => wanted.has(r)) : [];
  const extra = [...wanted].filter((r) => !catalog.has(r)).sort();
  return [...catalog.keys(), ...extra].filter((r) => wanted.has(r));
}

// render brings the header, toggles and panels in line with the
// catalogue, the screen and the client's rooms. It runs on changes of
// those, never per update.
function render() {
  const title = (screen && screen.title) || siteTitle || 'roomcast';
  setText(slot(ui.title), title);
  if (document.title !== title) document.title = title;

  const wanted = client.rooms();
  const all = [...catalog.keys(), ...[...wanted].filter((r) => !catalog.has(r)).sort()];
  for (const [room, btn] of toggles) {
    if (!all.includes(room)) { btn.remove(); toggles.delete(room); }
  }
  for (const room of all) {
    const btn = toggles.get(room) || addToggle(room);
    const entry = catalog.get(room);
    setText(slot(btn), entry ? entry.title : room);
    btn.title = room;
    btn.setAttribute('aria-pressed', String(wanted.has(room)));
  }
  arrange(ui.toggles, all.map((r) => toggles.get(r)));

  const order = roomOrder();
  for (const [room, p] of panels) {
    if (!order.includes(room)) removePanel(p);
  }
  for (const room of order) applyCatalog(panels.get(room) || addPanel(room));
  arrange(ui.panels, order.map((r) => panels.get(r).root));
  ui.panels.hidden = order.length === 0;
  ui.empty.hidden = order.length > 0;
  let empty;
  if (mode === 'screen') empty = catalogLoaded && !screen ? tr('unknownScreen', screenName) : '';
  else empty = tr(catalog.size === 0 ? 'emptyNone' : kiosk ? 'emptyKiosk' : 'emptyPick');
  setText(slot(ui.empty), empty);

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
    // A choice by hand leaves the default screen for a saved choice.
    if (mode === 'all') mode = 'rooms';
    if (client.rooms().has(room)) client.leave(room);
    else { refused.delete(room); joinRoom(room); }
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
    room, root, grid: root.querySelector('.cards'), msgEl: root.querySelector('.panel-msg'),
    title: q('.title'), last: q('.last'), age: q('.age'), msg: q('.panel-msg'),
    cards: new Map(),           // metric key -> card
    order: [],                  // the cards in their order
    extras: 0,                  // cards for keys not in the catalogue
    hidden: new Set(),          // keys that are not cards (comparison bases, targets)
    closed: false,              // a screen listing metrics: no cards for other keys
    spec: null,                 // the screen's panel: {metrics, w, h}
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
  for (const c of p.cards.values()) { c.destroy(); dirty.delete(c); }
  p.root.remove();
  panels.delete(p.room);
}

const env = {
  fmt, tr, windowMs,
  name: (m, n) => (m.names && Object.hasOwn(m.names, n) && pick(m.names[n])) || n,
  invalidate: (c) => invalidate(c),
  observe: (canvas, card) => {
    canvases.set(canvas, card);
    try { resizer.observe(canvas, {box: 'device-pixel-content-box'}); } catch (err) { resizer.observe(canvas); }
  },
  unobserve: (canvas) => { resizer.unobserve(canvas); canvases.delete(canvas); },
};

// applyCatalog gives the panel its title and a card per catalogue metric
// (of the screen's list, if it has one), in that order, followed by cards
// for numeric keys the catalogue lacks; line colours follow the order.
function applyCatalog(p) {
  const entry = catalog.get(p.room);
  p.spec = screen ? screen.panels.find((s) => s.room === p.room) || null : null;
  setText(p.title, entry ? entry.title : p.room);
  let metrics = entry ? entry.metrics : [];
  p.closed = !!(p.spec && p.spec.metrics.length);
  if (p.closed) {
    const byKey = new Map(metrics.map((m) => [m.key, m]));
    metrics = p.spec.metrics.map((k) => byKey.get(k) || {key: k, label: k, unit: '', panel: ''});
  }
  p.hidden = new Set();
  for (const m of entry ? entry.metrics : []) {
    for (const c of m.compare) p.hidden.add(c.key);
    if (m.target && m.target.key) p.hidden.add(m.target.key);
  }
  const known = new Set();
  for (const m of metrics) {
    known.add(m.key);
    let c = p.cards.get(m.key);
    if (c && c.kind !== (m.panel || 'line')) { c.destroy(); dirty.delete(c); c = null; }
    if (!c) { c = makeCard(env, p, m); c.w = 1; c.h = 1; p.cards.set(m.key, c); p.grid.append(c.root); }
    c.w = m.size.w;
    c.h = m.size.h;
    c.configure(m);
  }
  for (const [key, c] of p.cards) {
    if (known.has(key)) continue;
    if (p.closed || p.hidden.has(key)) { c.destroy(); dirty.delete(c); p.cards.delete(key); continue; }
    c.configure(plainMetric(key));
  }
  p.extras = p.cards.size - known.size;
  p.order = [...known, ...[...p.cards.keys()].filter((k) => !known.has(k))].map((k) => p.cards.get(k));
  let line = 0;
  for (const c of p.order) if (c.chart) c.setColor(PALETTE[line++ % PALETTE.length]);
  arrange(p.grid, p.order.map((c) => c.root));
  tickPanel(p, performance.now());
  layoutSoon();
}

function plainMetric(key) {
  return {key, label: key, unit: '', panel: '', format: '', compare: [], thresholds: [], target: null, size: {w: 1, h: 1}};
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
    if (NOT_METRICS.has(key) || p.hidden.has(key)) continue;
    const v = data[key];
    let c = p.cards.get(key);
    if (!c) {
      // Numeric keys the catalogue does not list get a line card.
      if (p.closed || typeof v !== 'number' || !Number.isFinite(v) || p.extras >= MAX_EXTRA_CARDS) continue;
      const m = plainMetric(key);
      c = makeCard(env, p, m);
      c.w = 1; c.h = 1;
      p.cards.set(key, c);
      p.grid.append(c.root);
      c.configure(m);
      applyCatalog(p); // its place and colour
    }
    c.update(v, data, t, now, brk);
  }

  let when;
  if (typeof data.timestamp === 'string' && data.timestamp) when = data.timestamp.slice(0, 32);
  else if (typeof data.ts === 'number' && Number.isFinite(data.ts)) when = hms(new Date(data.ts));
  else when = hms(new Date());
  setText(p.last, when);
  // Age and staleness count from when the update arrived here, which
  // needs no agreement between the producer's clock and this screen's.
  p.since = now;
  if (!p.hasData) { p.hasData = true; layoutSoon(); }
  tickPanel(p, now);
}

// pointTime places an update on this screen's clock (performance.now()).
// With a producer ts it is ts + skew. The skew starts from the wall clock
// (the producer's and this screen's clocks agree, as NTP makes them), so
// that the history sent after a join lands where it belongs; it shrinks
// to the smallest arrival − ts seen when the producer's clock is ahead,
// and if the producer's clock jumps back, 5 spaced-out updates in a row
// that arrive > 5 s "late" reset it.
function pointTime(p, data, now) {
  const ts = data.ts;
  if (typeof ts !== 'number' || !Number.isFinite(ts)) return now;
  if (p.skew === undefined) p.skew = now - Date.now();
  const late = now - ts - p.skew;
  if (late < 0) {
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

// ---- drawing: at most once per frame, only what changed ----

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
    c.draw(drawing);
  }
  dirty.clear();
}

// The line charts scroll with time: redraw them about once per pixel of
// movement, but at most 4 and at least 1 time a second.
let widest = 0;
function scroll() {
  if (!document.hidden) for (const c of canvases.values()) if (c.chart) invalidate(c);
  setTimeout(scroll, Math.min(1000, Math.max(250, windowMs / (widest || 1000))));
}

// One options object for all draws, so that drawing allocates nothing.
const drawing = {now: 0, windowMs, rem, font: getComputedStyle(document.body).fontFamily, stale: false,
  left: windowLabel, right: tr('now'), format: null};

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
    const c = canvases.get(e.target);
    if (!c) continue;
    c.resize(e);
    if (c.chart) widest = Math.max(widest, c.chart.cssW);
    invalidate(c);
  }
});
resizer.observe(ui.panels);

// cardArea is the number of grid cells the panel's cards take with cols
// columns (a card is never wider than the grid).
function cardArea(p, cols) {
  let a = 0;
  for (const c of p.cards.values()) a += Math.min(c.w, cols) * c.h;
  return a;
}

// cardRows is the number of rows the cards take on a grid of cols
// columns, placed as CSS places them (grid-auto-flow: row dense: each in
// the first free spot, in order).
function cardRows(p, cols) {
  const used = []; // rows of booleans
  const free = (r, c, w, h) => {
    for (let y = r; y < r + h; y++) for (let x = c; x < c + w; x++) if (used[y] && used[y][x]) return false;
    return true;
  };
  for (const card of p.order) {
    const w = Math.min(card.w, cols), h = card.h;
    placed: for (let r = 0; ; r++) {
      for (let c = 0; c + w <= cols; c++) {
        if (!free(r, c, w, h)) continue;
        for (let y = r; y < r + h; y++) {
          used[y] = used[y] || [];
          for (let x = c; x < c + w; x++) used[y][x] = true;
        }
        break placed;
      }
    }
  }
  return used.length;
}

// fitCards picks the number of card columns for a w×h area whose cells
// come closest to the aspect ratio 2:1; narrow or flat cells and empty
// cells cost extra.
function fitCards(p, w, h) {
  const gap = rem, minW = 13 * rem, minH = 7 * rem;
  let best = {cols: 1, score: 1e6}; // nothing fits: one column, scrolled
  const n = Math.max(1, cardArea(p, 12));
  for (let cols = 1; cols <= Math.min(12, n); cols++) {
    const area = Math.max(1, cardArea(p, cols));
    const rows = Math.max(1, cardRows(p, cols));
    const bw = (w - gap * (cols - 1)) / cols, bh = (h - gap * (rows - 1)) / rows;
    if (bw <= 0) break;
    if (bh <= 0) continue;
    const score = Math.abs(Math.log(bw / bh / 2)) + (bw < minW ? 4 : 0) + (bh < minH ? 4 : 0) +
      2 * (rows * cols - area) / (rows * cols);
    if (score < best.score) best = {cols, score, cell: bw * bh};
  }
  return best;
}

// balance costs panels whose cards come out of very different sizes: on
// one screen, a card should weigh about as much as any other.
function balance(fits) {
  const cells = fits.map((f) => f.cell).filter((c) => c > 0);
  if (cells.length < 2) return 0;
  const mean = Math.exp(cells.reduce((s, c) => s + Math.log(c), 0) / cells.length);
  return cells.reduce((s, c) => s + Math.abs(Math.log(c / mean)), 0);
}

// layout sets the panels' grid and each panel's card columns. A named
// screen says its columns and the panels' spans; otherwise the best of a
// uniform grid and one row of panels as wide as their cards need.
function layout() {
  const list = roomOrder().map((r) => panels.get(r)).filter(Boolean);
  if (!list.length || !mainW) return;
  const gap = 1.25 * rem, head = 3.4 * rem, pad = 2.4 * rem;
  const inner = (pw, ph) => [pw - pad, ph - head - pad];
  const fit = (p, pw, ph) => fitCards(p, ...inner(pw, ph));
  let plan;
  if (screen) {
    const cols = screen.columns || Math.min(4, list.length);
    const spans = list.map((p) => ({w: Math.min(cols, (p.spec && p.spec.w) || 1), h: (p.spec && p.spec.h) || 1}));
    const cells = spans.reduce((s, x) => s + x.w * x.h, 0);
    const rows = Math.max(1, Math.ceil(cells / cols));
    const cw = (mainW - gap * (cols - 1)) / cols, ch = Math.max(12 * rem, (mainH - gap * (rows - 1)) / rows);
    plan = {template: `repeat(${cols}, minmax(0, 1fr))`, rows: `repeat(${rows}, minmax(12rem, 1fr))`,
      size: list.map((p, i) => [spans[i].w * cw + (spans[i].w - 1) * gap, spans[i].h * ch + (spans[i].h - 1) * gap]), spans};
  } else {
    const weight = (p) => Math.max(1, cardArea(p, 4));
    plan = {score: Infinity, template: 'minmax(0, 1fr)', rows: 'none', size: list.map(() => [mainW, mainH])};
    // A uniform grid of panels.
    for (let cols = 1; cols <= list.length; cols++) {
      const rows = Math.ceil(list.length / cols);
      const pw = (mainW - gap * (cols - 1)) / cols;
      const ph = Math.max(16 * rem, (mainH - gap * (rows - 1)) / rows);
      if (cols > 1 && pw < 22 * rem) break;
      const waste = 3 * list.length * (rows * cols - list.length) / (rows * cols);
      const fits = list.map((p) => fit(p, pw, ph));
      const s = fits.reduce((sum, f) => sum + f.score, waste + balance(fits));
      if (s < plan.score) {
        plan = {score: s, template: `repeat(${cols}, minmax(0, 1fr))`, rows: 'none', size: list.map(() => [pw, ph])};
      }
    }
    // One row, each panel as wide as its share of the cards.
    if (list.length > 1 && list.length <= 4) {
      const total = list.reduce((s, p) => s + weight(p), 0);
      const free = mainW - gap * (list.length - 1);
      const size = list.map((p) => [free * weight(p) / total, mainH]);
      const fits = list.map((p, i) => fit(p, ...size[i]));
      const s = fits.reduce((sum, f, i) => sum + f.score + (size[i][0] < 22 * rem ? 4 : 0), balance(fits));
      plan.oneRow = s;
      if (s < plan.score) plan = {score: s, template: list.map((p) => `minmax(0, ${weight(p)}fr)`).join(' '), rows: 'none', size};
    }
  }
  window.roomcastDashboard.layout = plan; // for tests
  setVar(ui.panels, '--grid-cols', plan.template);
  setVar(ui.panels, '--grid-rows', plan.rows);
  list.forEach((p, i) => {
    setVar(p.root, '--span-w', String(plan.spans ? plan.spans[i].w : 1));
    setVar(p.root, '--span-h', String(plan.spans ? plan.spans[i].h : 1));
    const cols = fitCards(p, ...inner(...plan.size[i])).cols;
    setVar(p.grid, '--card-cols', String(cols));
    for (const c of p.cards.values()) {
      setVar(c.root, '--w', String(Math.min(c.w, cols)));
      setVar(c.root, '--h', String(c.h));
    }
  });
}

// ---- once a second: the clock, ages, staleness and unknown rooms ----

function tickPanel(p, now) {
  const age = now - p.since;
  setText(p.age, p.hasData ? formatAge(age) : tr('waiting'));
  // A room nobody announced and nothing arrived for: say so, in the
  // middle of its panel, naming it.
  const unknown = catalogLoaded && !catalog.has(p.room) && !p.hasData;
  if (p.msgEl.hidden === unknown) {
    p.msgEl.hidden = !unknown;
    p.root.classList.toggle('unknown', unknown);
  }
  setText(p.msg, unknown ? tr('unknownRoom', p.room) : '');
  const stale = p.hasData && age > STALE_INTERVALS * intervalOf(p.room);
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
      setCatalog(body && typeof body === 'object' ? body : {});
      etag = res.headers.get('ETag');
    }
    // 304: unchanged. Anything else: keep what we have and ask again.
  } catch (err) {
    // The gateway is unreachable; the connection badge already says so.
  }
  setTimeout(pollCatalog, CATALOG_POLL_MS);
}

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
const intIn = (v, lo, hi, dflt) => (Number.isInteger(v) && v >= lo && v <= hi ? v : dflt);
const COLOR = /^(good|warn|bad|#[0-9a-f]{3}|#[0-9a-f]{6})$/i;

// normMetric checks a catalogue metric field by field (the gateway
// validated it, but the page trusts nothing) and picks its texts.
function normMetric(m) {
  const t = m.target && typeof m.target === 'object' ? m.target : null;
  const size = m.size && typeof m.size === 'object' ? m.size : {};
  return {
    key: m.key,
    label: pick(m.label) || m.key,
    unit: pick(m.unit),
    panel: KINDS.has(m.panel) ? m.panel : '',
    format: typeof m.format === 'string' ? m.format : '',
    currency: typeof m.currency === 'string' ? m.currency : '',
    decimals: intIn(m.decimals, 0, 6, undefined),
    target: t && (isNum(t.value) || typeof t.key === 'string')
      ? {value: isNum(t.value) ? t.value : undefined, key: typeof t.key === 'string' ? t.key : '', label: pick(t.label), style: t.style === 'gauge' ? 'gauge' : 'bar'}
      : null,
    compare: (Array.isArray(m.compare) ? m.compare : []).slice(0, 4)
      .filter((c) => c && typeof c.key === 'string' && c.key).map((c) => ({key: c.key, label: pick(c.label)})),
    thresholds: (Array.isArray(m.thresholds) ? m.thresholds : []).slice(0, 8)
      .filter((r) => r && typeof r.color === 'string' && COLOR.test(r.color) && (isNum(r.above) || isNum(r.below))),
    top: intIn(m.top, 1, 50, undefined),
    names: m.names && typeof m.names === 'object' ? m.names : null,
    size: {w: intIn(size.w, 1, 12, 1), h: intIn(size.h, 1, 12, 1)},
  };
}

function setCatalog(body) {
  const rooms = Array.isArray(body.rooms) ? body.rooms : [];
  catalog.clear();
  for (const e of rooms) {
    if (!e || !Roomcast.isValidRoom(e.room) || catalog.has(e.room)) continue;
    const seen = new Set();
    catalog.set(e.room, {
      title: pick(e.title) || e.room,
      metrics: (Array.isArray(e.metrics) ? e.metrics : [])
        .filter((m) => m && typeof m.key === 'string' && m.key && !NOT_METRICS.has(m.key) &&
          !seen.has(m.key) && seen.add(m.key))
        .map(normMetric),
      interval_ms: Number(e.interval_ms) > 0 ? Number(e.interval_ms) : 0,
    });
  }
  siteTitle = pick(body.title);
  screens = (Array.isArray(body.screens) ? body.screens : []).filter((s) => s && typeof s.name === 'string');
  if (mode === 'screen') {
    const s = screens.find((x) => x.name === screenName);
    screen = s ? {
      title: pick(s.title),
      columns: intIn(s.columns, 1, 12, 0),
      panels: (Array.isArray(s.panels) ? s.panels : []).filter((x) => x && Roomcast.isValidRoom(x.room)).map((x) => ({
        room: x.room,
        metrics: (Array.isArray(x.metrics) ? x.metrics : []).filter((k) => typeof k === 'string' && k),
        w: intIn(x.w, 1, 12, 1), h: intIn(x.h, 1, 12, 1),
      })),
    } : null;
  }
  catalogLoaded = true;
  follow();
  render();
}

render();
tick();
scroll();
client.connect();
pollCatalog();
