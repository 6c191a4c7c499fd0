/*
 * The roomcast dashboard page: room toggles, one panel per joined room and
 * one card per metric, fed by roomcast.js.
 *
 * It runs for weeks on a wall, so it builds DOM only when rooms or metrics
 * appear and otherwise only changes text nodes in place. Everything from
 * the server is shown with text nodes, never parsed as HTML.
 */
(() => {
  'use strict';

  const STORE_KEY = 'roomcast.rooms';
  const DEFAULT_ROOMS = ['sales'];
  const CATALOG_POLL_MS = 5000;
  const STALE_DEFAULT_MS = 10000; // for rooms whose interval is not known
  const MAX_EXTRA_CARDS = 32;     // bounds the DOM if a producer invents keys
  const NOT_METRICS = new Set(['ts', 'timestamp']);

  const $ = (id) => document.getElementById(id);
  const ui = {
    toggles: $('toggles'), panels: $('panels'), empty: $('empty'),
    conn: $('conn'), clock: $('clock'), notice: $('notice'),
    panelTpl: $('panel-tpl').content.firstElementChild,
    cardTpl: $('card-tpl').content.firstElementChild,
  };

  const catalog = new Map(); // room -> catalogue entry, in catalogue order
  const toggles = new Map(); // room -> button
  const panels = new Map();  // room -> panel (see addPanel)

  // ---- small helpers ----

  // The text node of an element, created once and then updated in place.
  function slot(el) {
    if (!(el.firstChild instanceof Text)) el.replaceChildren(document.createTextNode(''));
    return el.firstChild;
  }

  function setText(node, text) {
    if (node.data !== text) node.data = text;
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

  // Numbers keep the decimals they were sent with (as far as JSON keeps
  // them: 1.50 arrives as 1.5) and get the locale's thousands separators.
  const formats = new Map();
  function formatNumber(v) {
    const m = /(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(v));
    const decimals = Math.min(20, Math.max(0, (m[1] ? m[1].length : 0) - (m[2] ? Number(m[2]) : 0)));
    let f = formats.get(decimals);
    if (!f) {
      f = new Intl.NumberFormat(undefined, {minimumFractionDigits: decimals, maximumFractionDigits: decimals});
      formats.set(decimals, f);
    }
    return f.format(v);
  }

  function formatAge(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 172800) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  // ---- which rooms: ?rooms=a,b overrides localStorage, default sales ----

  const params = new URLSearchParams(location.search);
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

  const client = new Roomcast.Client({url: 'ws', rooms: initialRooms()});

  client.on('state', ({state, attempt}) => {
    const text = {
      connecting: 'connecting…',
      live: 'live',
      reconnecting: `reconnecting (attempt ${attempt})`,
      offline: 'offline',
    }[state];
    setText(slot(ui.conn), text);
    ui.conn.dataset.state = state;
  });

  client.on('update', ({room, data}) => {
    const p = panels.get(room);
    if (p && data && typeof data === 'object') applyUpdate(p, data);
  });

  let noticeTimer = 0;
  client.on('error', ({code, message, room}) => {
    setText(slot(ui.notice), (room ? `${room}: ` : '') + (message || code));
    ui.notice.title = code || '';
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => setText(slot(ui.notice), ''), 10000);
    render(); // a refused join is no longer in client.rooms()
    saveRooms();
  });

  // ---- rendering of rooms: toggles and panels ----

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
      if (!wanted.has(room)) { p.root.remove(); panels.delete(room); }
    }
    for (const room of wanted) {
      applyCatalog(panels.get(room) || addPanel(room));
    }
    arrange(ui.panels, order.filter((r) => wanted.has(r)).map((r) => panels.get(r).root));
    ui.empty.hidden = wanted.size > 0;
  }

  function addToggle(room) {
    const btn = document.createElement('button');
    btn.type = 'button';
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
    const q = (sel) => slot(root.querySelector(sel));
    const p = {
      room, root,
      grid: root.querySelector('.cards'),
      title: q('.title'), last: q('.last'), age: q('.age'),
      cards: new Map(),      // metric key -> card
      extras: 0,             // cards for keys not in the catalogue
      since: performance.now(), // last update received, or the panel's creation
      hasData: false,
    };
    setText(q('.room'), room);
    panels.set(room, p);
    tickPanel(p, performance.now());
    return p;
  }

  // applyCatalog gives the panel its title and a card per catalogue metric,
  // in catalogue order, followed by cards for keys the catalogue lacks.
  function applyCatalog(p) {
    const entry = catalog.get(p.room);
    setText(p.title, entry ? entry.title : p.room);
    const known = new Set();
    for (const m of entry ? entry.metrics : []) {
      known.add(m.key);
      const c = p.cards.get(m.key) || addCard(p, m.key);
      setText(c.label, m.label || m.key);
      setText(c.unit, m.unit || '');
    }
    for (const [key, c] of p.cards) {
      if (!known.has(key)) { setText(c.label, key); setText(c.unit, ''); }
    }
    p.extras = p.cards.size - known.size;
    const keys = [...p.cards.keys()];
    arrange(p.grid, [...keys.filter((k) => known.has(k)), ...keys.filter((k) => !known.has(k))]
      .map((k) => p.cards.get(k).root));
  }

  function addCard(p, key) {
    const root = ui.cardTpl.cloneNode(true);
    const q = (sel) => slot(root.querySelector(sel));
    const c = {root, box: root.querySelector('.value'), label: q('.label'), value: q('.value'),
      unit: q('.unit'), trend: q('.trend'), prev: undefined};
    setText(c.label, key);
    p.cards.set(key, c);
    p.grid.appendChild(root);
    return c;
  }

  // ---- updates ----

  function applyUpdate(p, data) {
    for (const [key, v] of Object.entries(data)) {
      if (NOT_METRICS.has(key)) continue;
      const numeric = typeof v === 'number' && Number.isFinite(v);
      let c = p.cards.get(key);
      if (!c) {
        // Keys the catalogue does not list get a card when numeric.
        if (!numeric || p.extras >= MAX_EXTRA_CARDS) continue;
        c = addCard(p, key);
        p.extras++;
      }
      if (numeric) setValue(c, v);
      else if (typeof v === 'string') setValue(c, v.slice(0, 64));
    }

    let when;
    if (typeof data.timestamp === 'string' && data.timestamp) when = data.timestamp.slice(0, 32);
    else if (typeof data.ts === 'number' && Number.isFinite(data.ts)) when = hms(new Date(data.ts));
    else when = hms(new Date());
    setText(p.last, when);
    // Age and staleness count from when the update arrived here, which
    // needs no agreement between the producer's clock and this screen's.
    p.since = performance.now();
    p.hasData = true;
    tickPanel(p, p.since);
  }

  function setValue(c, v) {
    const numeric = typeof v === 'number';
    const text = numeric ? formatNumber(v) : v;
    if (text.length !== c.value.length) c.box.style.setProperty('--chars', Math.max(text.length, 4));
    setText(c.value, text);
    let trend = '';
    let mark = '';
    if (numeric && typeof c.prev === 'number') {
      trend = v > c.prev ? 'up' : v < c.prev ? 'down' : 'same';
      mark = {up: '▲', down: '▼', same: '='}[trend];
    }
    c.prev = v;
    setText(c.trend, mark);
    if (c.root.dataset.trend !== trend) c.root.dataset.trend = trend;
  }

  // ---- once a second: the clock, ages and staleness ----

  function tickPanel(p, now) {
    const entry = catalog.get(p.room);
    const staleAfter = entry && entry.interval_ms > 0 ? 3 * entry.interval_ms : STALE_DEFAULT_MS;
    const age = now - p.since;
    setText(p.age, p.hasData ? formatAge(age) : 'waiting for data');
    const stale = age > staleAfter;
    if (p.root.classList.contains('stale') !== stale) p.root.classList.toggle('stale', stale);
  }

  function tick() {
    const d = new Date();
    setText(slot(ui.clock), hms(d));
    const now = performance.now();
    for (const p of panels.values()) tickPanel(p, now);
    // Aim just past the next full second, so that the clock does not drift.
    setTimeout(tick, 1010 - (Date.now() % 1000));
  }

  // ---- the room catalogue, polled cheaply with its ETag ----

  let etag = null;

  async function pollCatalog() {
    try {
      const res = await fetch('api/rooms', {
        headers: etag ? {'If-None-Match': etag} : {},
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
        interval_ms: Number(e.interval_ms) || 0,
      });
    }
    render();
  }

  render();
  tick();
  client.connect();
  pollCatalog();
})();
