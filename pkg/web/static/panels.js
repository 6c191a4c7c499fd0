/*
 * panels.js — the cards of the dashboard, one class per panel kind the
 * catalogue can ask for (docs/client.md, "Panel kinds"):
 *
 *   number   a big number; with target (a bar or a gauge), compare
 *            (同比/环比: change against a base value the producer sends)
 *            and thresholds (colour rules)
 *   total    a running total the producer sends ("today so far")
 *   line     a big number over a line chart of the window (the default)
 *   ranking  top N of an array of {name, value}
 *   share    a donut of an object of parts ({"app": 52, "web": 31})
 *   list     a feed of the latest items ({time, name, detail, value})
 *
 * Every card builds its DOM once, when it is created or its catalogue
 * entry changes, and then only changes text nodes and CSS variables, so
 * that a screen that runs for weeks neither leaks nor moves: rows of
 * rankings and lists are made for the N the catalogue asks for and filled
 * in place. Everything from producers is shown with text nodes.
 *
 * A card gets an env from app.js: {fmt (a Formatter), tr (UI text), name
 * (a part's label by language), invalidate(card), observe(canvas, card),
 * unobserve(canvas), windowMs}.
 */
import {Chart, textSize} from './chart.js';

export const PALETTE = ['#38bdf8', '#a78bfa', '#34d399', '#fbbf24', '#f472b6', '#2dd4bf', '#fb923c', '#818cf8'];
const TONES = {good: 'var(--good)', warn: 'var(--warn)', bad: 'var(--bad)'};
const MAX_PARTS = 8; // a donut with more slices is unreadable: the rest is "other"
const DEFAULT_TOP = 5;
const root = getComputedStyle(document.documentElement);
const css = (name, dflt) => root.getPropertyValue(name).trim() || dflt;
const colors = {
  line: css('--line', '#24324f'), muted: css('--muted', '#8b99b5'), text: css('--text', '#e6edf7'),
  accent: css('--accent', '#38bdf8'), good: css('--good', '#22c55e'), warn: css('--warn', '#f59e0b'),
  bad: css('--bad', '#ef4444'),
};

// ---- DOM helpers ----

export function el(tag, cls, ...kids) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const k of kids) e.append(k);
  return e;
}

// The text node of an element, created once and then updated in place.
export function slot(e) {
  if (!(e.firstChild instanceof Text)) e.replaceChildren(document.createTextNode(''));
  return e.firstChild;
}

export function setText(node, text) {
  if (node.data !== text) node.data = text;
}

export function setVar(e, name, value) {
  if (e.style.getPropertyValue(name) !== value) e.style.setProperty(name, value);
}

function setData(e, name, value) {
  if (value === undefined || value === '') { if (name in e.dataset) delete e.dataset[name]; return; }
  if (e.dataset[name] !== value) e.dataset[name] = value;
}

// Roughly how wide a text is, in em: CJK is square, the rest narrower.
export const emWidth = (s) => [...s].reduce((w, ch) => w + (ch.codePointAt(0) >= 0x1100 ? 1 : 0.6), 0);
// ... and in digit widths (1ch): separators are narrower, letters and
// signs (K, ¥, %) wider, CJK (万) nearly two.
function chWidth(s) {
  let w = 0;
  for (const ch of s) {
    w += ch >= '0' && ch <= '9' ? 1 : '.,: '.includes(ch) ? 0.5 : ch.codePointAt(0) >= 0x1100 ? 1.8 : 1.25;
  }
  return w;
}

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

// tone returns the colour of the first threshold rule v passes, or ''.
function tone(v, rules) {
  for (const r of rules || []) {
    if ((isNum(r.above) && v > r.above) || (isNum(r.below) && v < r.below)) return TONES[r.color] || r.color;
  }
  return '';
}

function canvasColor(c) {
  if (!c) return colors.accent;
  const m = /^var\(--(\w+)\)$/.exec(c);
  return m ? colors[m[1]] || colors.accent : c;
}

// The device-pixel size of a canvas from a ResizeObserver entry.
function fitCanvas(canvas, entry) {
  const box = entry.devicePixelContentBoxSize && entry.devicePixelContentBoxSize[0];
  const {width, height} = entry.contentRect;
  const pw = box ? box.inlineSize : Math.round(width * devicePixelRatio);
  const ph = box ? box.blockSize : Math.round(height * devicePixelRatio);
  if (canvas.width !== pw) canvas.width = pw;
  if (canvas.height !== ph) canvas.height = ph;
  return {w: width, h: height};
}

// ---- the card every kind starts from ----

class Card {
  constructor(env, panel, key, kind) {
    this.env = env;
    this.panel = panel;
    this.key = key;
    this.kind = kind;
    this.m = {key};
    this.labelEl = el('span', 'label');
    this.label = slot(this.labelEl);
    this.head = el('div', 'head', this.labelEl);
    this.root = el('div', 'card', this.head);
    this.root.dataset.key = key;
    this.root.dataset.kind = kind;
    this.canvases = [];
  }

  // configure takes the metric as app.js normalised it: texts already in
  // the page's language.
  configure(m) {
    this.m = m;
    setText(this.label, m.label);
  }

  canvas(cls) {
    const c = el('canvas', cls);
    this.canvases.push(c);
    this.env.observe(c, this);
    return c;
  }

  destroy() {
    for (const c of this.canvases) this.env.unobserve(c);
    this.root.remove();
  }

  resize() {}
  draw() {}
  update() {}
}

// ---- number, total and line: a big number and what goes with it ----

class NumberCard extends Card {
  constructor(env, panel, key, kind) {
    super(env, panel, key, kind);
    this.valueEl = el('span', 'value');
    this.value = slot(this.valueEl);
    setText(this.value, '—');
    this.unitEl = el('span', 'unit');
    this.unit = slot(this.unitEl);
    this.trendEl = el('span', 'trend');
    this.trendEl.setAttribute('aria-hidden', 'true');
    this.trend = slot(this.trendEl);
    this.main = el('div', 'main', el('div', 'num', el('span', 'vu', this.valueEl, this.unitEl), this.trendEl));
    this.body = el('div', 'body', this.main);
    this.root.append(this.body);
    this.prev = undefined;
    this.chars = 0;
    this.charsAt = 0;
    this.flip = false;
    this.cmps = [];      // {root, label, value}
    this.bar = null;     // target as a bar
    this.gauge = null;   // target as a gauge: {canvas, w, h}
    this.chart = null;   // line
    this.ratio = NaN;    // progress toward the target
    if (kind === 'total') {
      this.tag = slot(el('span', 'tag'));
      this.head.append(this.tag.parentNode);
    }
    if (kind === 'line') {
      const c = this.canvas('chart');
      c.dataset.points = '0';
      this.chart = new Chart(c);
      this.body.append(el('div', 'plot', c));
    }
  }

  configure(m) {
    super.configure(m);
    setText(this.unit, m.unit || '');
    setVar(this.root, '--unit-em', String(m.unit ? emWidth(m.unit) + 0.4 : 0));
    if (this.tag) setText(this.tag, this.env.tr('today'));
    // Comparisons: one line each, built when their number changes.
    const cmp = m.compare || [];
    if (cmp.length !== this.cmps.length) {
      for (const c of this.cmps) c.root.remove();
      this.cmps = cmp.map(() => {
        const label = slot(el('span', 'cl')), value = slot(el('span', 'cv'));
        const r = el('div', 'cmp', label.parentNode, value.parentNode);
        this.main.append(r);
        return {root: r, label, value};
      });
    }
    cmp.forEach((c, i) => setText(this.cmps[i].label, c.label || c.key));
    // The target: a bar under the number, or a gauge beside it.
    const style = m.target ? (m.target.style === 'gauge' ? 'gauge' : 'bar') : '';
    if (style !== 'bar' && this.bar) { this.bar.root.remove(); this.bar = null; }
    if (style !== 'gauge' && this.gauge) { this.env.unobserve(this.gauge.canvas); this.gauge.canvas.parentNode.remove(); this.gauge = null; }
    if (style === 'bar' && !this.bar) {
      const fill = el('div', 'fill');
      const text = slot(el('span', 'bt')), pct = slot(el('span', 'bp'));
      const r = el('div', 'bar', el('div', 'track', fill), el('div', 'bar-text', text.parentNode, pct.parentNode));
      this.main.append(r);
      this.bar = {root: r, fill, text, pct};
    }
    if (style === 'gauge' && !this.gauge) {
      const c = this.canvas('gauge');
      this.body.append(el('div', 'side', c));
      this.gauge = {canvas: c, w: 0, h: 0};
    }
    setData(this.root, 'target', style);
    // Totals only grow and a comparison already says which way things go:
    // their ▲ would say nothing.
    this.showTrend = kind(m) === 'line' || (kind(m) === 'number' && !cmp.length);
    this.env.invalidate(this);
  }

  update(v, data, t, now, brk) {
    const m = this.m;
    if (typeof v === 'string') { this.setValue(v.slice(0, 64), now); return; }
    if (!isNum(v)) return;
    let trend = '';
    if (this.showTrend && isNum(this.prev)) trend = v > this.prev ? 'up' : v < this.prev ? 'down' : 'same';
    this.prev = v;
    setText(this.trend, trend === 'up' ? '▲' : trend === 'down' ? '▼' : trend ? '=' : '');
    // data-trend present (even empty) means "has a value": see style.css.
    const dt = this.showTrend ? trend : 'none';
    if (this.root.dataset.trend !== dt) this.root.dataset.trend = dt;
    const tn = tone(v, m.thresholds);
    setData(this.root, 'tone', tn ? 'on' : '');
    setVar(this.root, '--tone', tn);
    this.tone = tn;
    this.setValue(this.env.fmt.format(v, m), now);

    (m.compare || []).forEach((c, i) => {
      const base = data[c.key];
      const row = this.cmps[i];
      if (!row) return;
      if (!isNum(base) || base === 0) { setText(row.value, '—'); setData(row.root, 'dir', ''); return; }
      const r = (v - base) / Math.abs(base);
      setText(row.value, (r > 0 ? '▲ ' : r < 0 ? '▼ ' : '') + this.env.fmt.delta(r));
      setData(row.root, 'dir', r > 0.0005 ? 'up' : r < -0.0005 ? 'down' : 'same');
    });

    if (m.target) {
      const goal = isNum(m.target.value) ? m.target.value : data[m.target.key];
      this.ratio = isNum(goal) && goal > 0 ? v / goal : NaN;
      this.goalText = isNum(goal) ? `${m.target.label || this.env.tr('target')} ${this.env.fmt.format(goal, {...m, decimals: undefined})}` : '';
      if (this.bar) {
        setVar(this.bar.fill, '--p', Number.isFinite(this.ratio) ? String(Math.min(1, this.ratio)) : '0');
        setText(this.bar.text, this.goalText);
        setText(this.bar.pct, Number.isFinite(this.ratio) ? this.env.fmt.fixed(this.ratio * 100, 1) + '%' : '—');
      }
      if (this.gauge) this.env.invalidate(this);
    }

    if (this.chart) {
      if (t > now - this.env.windowMs) this.chart.push(t, v, brk);
      this.env.invalidate(this);
    }
  }

  setValue(text, now) {
    if (text === this.value.data) return;
    // The number's box is as wide as the longest value of the last window,
    // so that neither its size nor the unit beside it jumps from one
    // update to the next.
    const len = Math.max(2, Math.ceil(chWidth(text) * 4) / 4);
    if (len >= this.chars || now - this.charsAt > this.env.windowMs) {
      if (len !== this.chars) setVar(this.valueEl, '--chars', String(len));
      this.chars = len;
      this.charsAt = now;
    }
    setText(this.value, text);
    // Restart the flash: two identical animations take turns (style.css).
    this.flip = !this.flip;
    this.root.dataset.flash = this.flip ? 'a' : 'b';
  }

  setColor(color) {
    if (this.chart && this.chart.setColor(color)) this.env.invalidate(this);
  }

  resize(entry) {
    if (this.chart && entry.target === this.chart.canvas) this.chart.resize(entry);
    if (this.gauge && entry.target === this.gauge.canvas) Object.assign(this.gauge, fitCanvas(this.gauge.canvas, entry));
  }

  draw(o) {
    if (this.chart) {
      o.format = this.axisFormat || (this.axisFormat = (v, d, step) => this.formatAxis(v, d, step));
      this.chart.draw(o);
    }
    if (this.gauge) this.drawGauge(o);
  }

  // Axis labels in the metric's own format, with as many decimals as the
  // grid step needs once scaled to 万 or K.
  formatAxis(v, d, step) {
    const m = this.m, f = this.env.fmt;
    if (m.format === 'money' || m.format === 'compact') {
      const big = Math.max(Math.abs(v), step);
      const n = (f.steps.find(([k]) => big >= k) || [1])[0];
      return f.format(v, {...m, decimals: Math.max(0, -Math.floor(Math.log10(step / n) + 1e-9))});
    }
    if (m.format === 'percent') return f.format(v, {...m, decimals: Math.max(0, d - 2)});
    return f.fixed(v, d);
  }

  drawGauge(o) {
    const {canvas, w, h} = this.gauge;
    if (!w || !h || !canvas.width) return;
    const ctx = canvas.getContext('2d');
    ctx.setTransform(canvas.width / w, 0, 0, canvas.height / h, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const fs = Math.max(16, o.rem * 0.9);
    textSize(canvas, fs); // the goal; the percentage is larger
    const r = Math.max(8, Math.min(w / 2, (h - fs * 1.6) / 1.45) - o.rem * 0.4);
    const lw = Math.max(6, r * 0.16);
    const cx = w / 2, cy = r + lw / 2 + 2;
    // 240° of arc, open at the bottom.
    const a0 = Math.PI * 5 / 6, span = Math.PI * 4 / 3;
    ctx.lineCap = 'round';
    ctx.lineWidth = lw;
    ctx.strokeStyle = colors.line;
    ctx.beginPath();
    ctx.arc(cx, cy, r - lw / 2, a0, a0 + span);
    ctx.stroke();
    const p = Number.isFinite(this.ratio) ? Math.max(0, Math.min(1, this.ratio)) : 0;
    if (p > 0) {
      ctx.strokeStyle = o.stale ? colors.muted : canvasColor(this.tone);
      ctx.beginPath();
      ctx.arc(cx, cy, r - lw / 2, a0, a0 + span * p);
      ctx.stroke();
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillStyle = colors.text;
    ctx.font = `650 ${Math.max(fs, r * 0.42)}px ${o.font}`;
    ctx.fillText(Number.isFinite(this.ratio) ? this.env.fmt.fixed(this.ratio * 100, 1) + '%' : '—', cx, cy);
    ctx.fillStyle = colors.muted;
    ctx.font = `${fs}px ${o.font}`;
    ctx.textBaseline = 'alphabetic';
    // Never smaller than fs: a goal text too wide loses its label.
    let goal = this.goalText || '';
    if (ctx.measureText(goal).width > w && goal.includes(' ')) goal = goal.slice(goal.indexOf(' ') + 1);
    ctx.fillText(goal, cx, Math.min(h - 2, cy + r * 0.95 + fs * 0.4));
  }
}

function kind(m) { return m.panel || 'line'; }

// ---- ranking: top N rows, bars to scale ----

class RankingCard extends Card {
  constructor(env, panel, key) {
    super(env, panel, key, 'ranking');
    this.list = el('ol', 'rows');
    this.root.append(this.list);
    this.rows = [];
  }

  configure(m) {
    super.configure(m);
    const n = m.top || DEFAULT_TOP;
    while (this.rows.length > n) this.rows.pop().root.remove();
    while (this.rows.length < n) {
      const i = this.rows.length;
      const rk = el('span', 'rk', String(i + 1)), nm = slot(el('span', 'nm')), vl = slot(el('span', 'vl'));
      const fill = el('div', 'fill');
      const r = el('li', 'row', rk, nm.parentNode, vl.parentNode, el('div', 'rbar', fill));
      this.list.append(r);
      this.rows.push({root: r, nm, vl, fill});
    }
    setVar(this.list, '--n', String(n));
    if (this.last) this.update(this.last);
  }

  update(v) {
    if (!Array.isArray(v)) return;
    this.last = v;
    const items = v.filter((x) => x && typeof x === 'object' && isNum(x.value) && x.name !== undefined)
      .slice(0, 200).sort((a, b) => b.value - a.value);
    const max = items.length ? Math.max(items[0].value, 0) : 0;
    this.rows.forEach((r, i) => {
      const it = items[i];
      setText(r.nm, it ? this.env.name(this.m, String(it.name)) : '');
      setText(r.vl, it ? this.env.fmt.format(it.value, this.m) : '');
      setVar(r.fill, '--p', it && max > 0 ? String(Math.max(0, it.value) / max) : '0');
      setData(r.root, 'empty', it ? '' : 'yes');
    });
  }
}

// ---- share: a donut and its legend ----

class ShareCard extends Card {
  constructor(env, panel, key) {
    super(env, panel, key, 'share');
    this.c = this.canvas('donut');
    this.legend = el('ul', 'legend');
    this.root.append(el('div', 'body', el('div', 'side', this.c), this.legend));
    this.parts = new Map(); // name -> {root, nm, pc, value, color}
    this.total = 0;
    this.size = {w: 0, h: 0}; // the canvas's CSS size (w and h are the card's span)
  }

  configure(m) {
    super.configure(m);
    for (const [name, p] of this.parts) setText(p.nm, this.env.name(m, name));
    this.env.invalidate(this);
  }

  update(v) {
    let entries;
    if (Array.isArray(v)) entries = v.filter((x) => x && isNum(x.value)).map((x) => [String(x.name), x.value]);
    else if (v && typeof v === 'object') entries = Object.entries(v).filter(([, x]) => isNum(x));
    else return;
    entries = entries.filter(([, x]) => x >= 0);
    // Parts keep their colour and place once seen; beyond MAX_PARTS the
    // smallest go into "other".
    if (entries.length > MAX_PARTS) {
      entries.sort((a, b) => b[1] - a[1]);
      const rest = entries.slice(MAX_PARTS - 1).reduce((s, [, x]) => s + x, 0);
      entries = [...entries.slice(0, MAX_PARTS - 1), ['\u0000other', rest]];
    }
    const seen = new Set(entries.map(([name]) => name));
    // A producer that keeps inventing part names must not grow the legend
    // for ever: past twice the most shown, parts not in this update go.
    if (this.parts.size >= 2 * MAX_PARTS && entries.some(([name]) => !this.parts.has(name))) {
      for (const [name, p] of this.parts) if (!seen.has(name)) { p.root.remove(); this.parts.delete(name); }
    }
    for (const [name, x] of entries) {
      let p = this.parts.get(name);
      if (!p) {
        const nm = slot(el('span', 'nm')), pc = slot(el('span', 'pc'));
        const sw = el('i', 'sw');
        const color = PALETTE[this.parts.size % PALETTE.length];
        sw.style.background = color;
        const r = el('li', '', sw, nm.parentNode, pc.parentNode);
        this.legend.append(r);
        p = {root: r, nm, pc, value: 0, color};
        this.parts.set(name, p);
        setText(nm, name === '\u0000other' ? this.env.tr('other') : this.env.name(this.m, name));
      }
      p.value = x;
    }
    for (const [name, p] of this.parts) if (!seen.has(name)) p.value = 0;
    this.total = 0;
    for (const p of this.parts.values()) this.total += p.value;
    for (const p of this.parts.values()) {
      setText(p.pc, this.total > 0 ? this.env.fmt.fixed(p.value / this.total * 100, 1) + '%' : '—');
    }
    this.env.invalidate(this);
  }

  resize(entry) { this.size = fitCanvas(this.c, entry); }

  draw(o) {
    const {c} = this, {w, h} = this.size;
    if (!w || !h || !c.width) return;
    const ctx = c.getContext('2d');
    ctx.setTransform(c.width / w, 0, 0, c.height / h, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const r = Math.min(w, h) / 2 - 2;
    if (r < 10) return;
    const lw = r * 0.3, cx = w / 2, cy = h / 2;
    ctx.lineWidth = lw;
    let a = -Math.PI / 2;
    if (this.total <= 0) {
      ctx.strokeStyle = colors.line;
      ctx.beginPath();
      ctx.arc(cx, cy, r - lw / 2, 0, 2 * Math.PI);
      ctx.stroke();
    }
    for (const p of this.parts.values()) {
      if (!(this.total > 0) || p.value <= 0) continue;
      const span = p.value / this.total * 2 * Math.PI;
      ctx.strokeStyle = o.stale ? colors.muted : p.color;
      ctx.beginPath();
      ctx.arc(cx, cy, r - lw / 2, a, a + Math.max(0, span - 0.015));
      ctx.stroke();
      a += span;
    }
    // The total in the middle.
    const fs = Math.max(16, o.rem * 0.9);
    textSize(c, fs); // "Total"; the number is larger
    ctx.textAlign = 'center';
    ctx.fillStyle = colors.muted;
    ctx.font = `${fs}px ${o.font}`;
    ctx.textBaseline = 'bottom';
    ctx.fillText(this.env.tr('total'), cx, cy - 2);
    ctx.fillStyle = colors.text;
    const total = this.total > 0 ? this.env.fmt.format(this.total, this.m) : '—';
    // As large as fits in the hole (a digit is about 0.6 em wide).
    ctx.font = `650 ${Math.max(fs, Math.min(r * 0.3, (r - lw) * 1.7 / (emWidth(total) || 1)))}px ${o.font}`;
    ctx.textBaseline = 'top';
    ctx.fillText(total, cx, cy + 2);
  }
}

// ---- list: the latest items, newest on top ----

class ListCard extends Card {
  constructor(env, panel, key) {
    super(env, panel, key, 'list');
    this.list = el('ol', 'rows');
    this.root.append(this.list);
    this.rows = [];
    this.feed = []; // newest first, at most top items
    this.flip = false;
  }

  configure(m) {
    super.configure(m);
    const n = m.top || 8;
    while (this.rows.length > n) this.rows.pop().root.remove();
    while (this.rows.length < n) {
      const tm = slot(el('span', 'tm')), nm = slot(el('span', 'nm')), dt = slot(el('span', 'dt')), vl = slot(el('span', 'vl'));
      const r = el('li', 'row', tm.parentNode, nm.parentNode, dt.parentNode, vl.parentNode);
      this.list.append(r);
      this.rows.push({root: r, tm, nm, dt, vl});
    }
    setVar(this.list, '--n', String(n));
    this.feed.length = Math.min(this.feed.length, n);
    this.render(0);
  }

  update(v) {
    const items = (Array.isArray(v) ? v : [v]).filter((x) => x && typeof x === 'object');
    if (!items.length) return;
    // Items of one update are newest first, as producers list them.
    this.feed.unshift(...items.slice(0, this.rows.length));
    this.feed.length = Math.min(this.feed.length, this.rows.length);
    this.render(Math.min(items.length, this.rows.length));
  }

  render(fresh) {
    const {fmt, name} = this.env;
    this.flip = !this.flip;
    this.rows.forEach((r, i) => {
      const it = this.feed[i];
      const when = it && (typeof it.time === 'string' ? it.time.slice(0, 16)
        : isNum(it.ts) ? new Date(it.ts).toTimeString().slice(0, 8) : '');
      setText(r.tm, it ? when : '');
      setText(r.nm, it && it.name !== undefined ? name(this.m, String(it.name)).slice(0, 64) : '');
      setText(r.dt, it && it.detail !== undefined ? name(this.m, String(it.detail)).slice(0, 64) : '');
      setText(r.vl, it && isNum(it.value) ? fmt.format(it.value, this.m) : '');
      // New rows light up; two identical animations take turns.
      if (i < fresh) r.root.dataset.fresh = this.flip ? 'a' : 'b';
      else if (r.root.dataset.fresh) delete r.root.dataset.fresh;
    });
  }
}

// makeCard returns the card for metric m's panel kind.
export function makeCard(env, panel, m) {
  switch (kind(m)) {
    case 'ranking': return new RankingCard(env, panel, m.key);
    case 'share': return new ShareCard(env, panel, m.key);
    case 'list': return new ListCard(env, panel, m.key);
    case 'number': case 'total': return new NumberCard(env, panel, m.key, kind(m));
    default: return new NumberCard(env, panel, m.key, 'line');
  }
}
