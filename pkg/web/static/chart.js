/*
 * chart.js — the dashboard's live line chart on a <canvas>: a bounded ring
 * of (time, value) points and its drawing. No DOM beyond the canvas it is
 * given, no allocation per point; used by app.js (an ES module, so nothing
 * here is global).
 *
 * Times are in performance.now() milliseconds. The chart shows the last
 * `windowMs` before `now`; older points are dropped when it draws.
 */

export const MAX_POINTS = 2000; // per chart; when full, the oldest point goes

const DASH = [4, 4], SOLID = [];
const root = getComputedStyle(document.documentElement);
const colors = {
  line: root.getPropertyValue('--line').trim() || '#24324f',
  muted: root.getPropertyValue('--muted').trim() || '#8b99b5',
  card: root.getPropertyValue('--card').trim() || '#172239',
};

// A round step (1, 2 or 5 × 10^k) that cuts span into about n parts.
function niceStep(span, n) {
  const p = 10 ** Math.floor(Math.log10(span / n));
  const f = span / n / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

// textSize records on a canvas the size, in CSS px, of the smallest text
// drawn on it (data-font-px), for tests: canvas text is not in the DOM.
export function textSize(canvas, px) {
  const v = String(Math.round(px * 10) / 10);
  if (canvas.dataset.fontPx !== v) canvas.dataset.fontPx = v;
}

export class Chart {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.cssW = 0;
    this.cssH = 0;
    this.color = '#38bdf8';
    this.grad = null;
    this.shown = -1; // the data-points attribute
    // The ring: it grows by doubling up to MAX_POINTS, then wraps.
    this.t = new Float64Array(64);
    this.v = new Float64Array(64);
    this.gap = new Uint8Array(64); // 1: updates were missed before this point
    this.head = 0;
    this.len = 0;
  }

  get size() { return this.len; }

  setColor(color) {
    if (color === this.color) return false;
    this.color = color;
    this.grad = null;
    return true;
  }

  // resize takes a ResizeObserver entry for the canvas: its CSS size and,
  // where the browser tells it, its exact size in device pixels.
  resize(entry) {
    const box = entry.devicePixelContentBoxSize && entry.devicePixelContentBoxSize[0];
    const {width, height} = entry.contentRect;
    const pw = box ? box.inlineSize : Math.round(width * devicePixelRatio);
    const ph = box ? box.blockSize : Math.round(height * devicePixelRatio);
    if (this.canvas.width !== pw) this.canvas.width = pw;
    if (this.canvas.height !== ph) this.canvas.height = ph;
    this.cssW = width;
    this.cssH = height;
    this.grad = null; // it spans the height
  }

  // push adds a point; times never go backwards (a point older than the
  // last one is put at the last one's time).
  push(t, v, gap) {
    let cap = this.t.length;
    if (this.len === cap && cap < MAX_POINTS) { // grow, keeping the order
      const n = Math.min(MAX_POINTS, cap * 2);
      const g = {t: new Float64Array(n), v: new Float64Array(n), gap: new Uint8Array(n)};
      for (let k = 0; k < this.len; k++) {
        const j = (this.head + k) % cap;
        g.t[k] = this.t[j]; g.v[k] = this.v[j]; g.gap[k] = this.gap[j];
      }
      Object.assign(this, g, {head: 0});
      cap = n;
    } else if (this.len === cap) {
      this.head = (this.head + 1) % cap;
      this.len--;
    }
    const i = (this.head + this.len) % cap;
    this.t[i] = this.len ? Math.max(t, this.t[(i + cap - 1) % cap]) : t;
    this.v[i] = v;
    this.gap[i] = gap && this.len ? 1 : 0;
    this.len++;
  }

  trim(oldest) {
    while (this.len && this.t[this.head] < oldest) {
      this.head = (this.head + 1) % this.t.length;
      this.len--;
    }
  }

  // trace adds the points to the path, a subpath per run between gaps;
  // with bottom, each run is closed down to it (the area under the line).
  trace(X, Y, bottom) {
    const {ctx, t, v, gap} = this, cap = t.length;
    let x0 = 0, x = 0;
    for (let k = 0; k < this.len; k++) {
      const i = (this.head + k) % cap;
      if (k === 0 || gap[i]) {
        if (k && bottom) { ctx.lineTo(x, bottom); ctx.lineTo(x0, bottom); }
        ctx.moveTo(x0 = x = X(t[i]), Y(v[i]));
      } else ctx.lineTo(x = X(t[i]), Y(v[i]));
    }
    if (bottom) { ctx.lineTo(x, bottom); ctx.lineTo(x0, bottom); }
  }

  // draw drops points older than the window, updates data-points and
  // paints. o: {now, windowMs, rem (CSS px), font (family), stale,
  // left, right (x-axis labels), format(value, decimals, step)}.
  draw(o) {
    this.trim(o.now - o.windowMs);
    if (this.shown !== this.len) this.canvas.dataset.points = String(this.shown = this.len);
    const {ctx, t, v, gap, cssW: w, cssH: h} = this, cap = t.length;
    if (!w || !h || !this.canvas.width) return;
    ctx.setTransform(this.canvas.width / w, 0, 0, this.canvas.height / h, 0, 0);
    ctx.clearRect(0, 0, w, h);
    // Never under 16 CSS px at 1080p (0.9rem there), so that it reads from
    // across the room.
    const fs = Math.max(16, Math.round(o.rem * 0.9)), top = 2, bottom = h - fs * 1.5;
    textSize(this.canvas, fs);
    ctx.font = `${fs}px ${o.font}`;
    ctx.fillStyle = colors.muted;
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'left';
    ctx.fillText(o.left, 0, h - 2);
    ctx.textAlign = 'right';
    ctx.fillText(o.right, w, h - 2);
    if (!this.len || bottom - top < 8) return;

    let lo = Infinity, hi = -Infinity;
    for (let k = 0; k < this.len; k++) {
      const x = v[(this.head + k) % cap];
      if (x < lo) lo = x;
      if (x > hi) hi = x;
    }
    if (lo === hi) { const d = Math.abs(lo) * 0.05 || 1; lo -= d; hi += d; }
    // As many round steps as fit; rounding the ends outwards may add
    // steps, so ask for fewer until they fit.
    const fits = Math.max(1, Math.min(4, Math.floor((bottom - top) / (fs * 2.2))));
    let step;
    for (let n = fits; ; n /= 2) {
      step = niceStep(hi - lo, n);
      if (Math.ceil(hi / step) - Math.floor(lo / step) <= fits || n < 0.3) break;
    }
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
    const lines = Math.round((hi - lo) / step);
    const X = (x) => w - (o.now - x) / o.windowMs * w;
    const Y = (y) => bottom - (y - lo) / (hi - lo) * (bottom - top);

    ctx.lineWidth = 1;
    ctx.strokeStyle = colors.line;
    ctx.beginPath();
    for (let k = 0; k <= lines; k++) {
      const y = Math.round(Y(lo + k * step)) + 0.5;
      ctx.moveTo(0, y);
      ctx.lineTo(w, y);
    }
    ctx.stroke();

    if (!o.stale) { // the area under the line, fading down
      if (!this.grad) {
        this.grad = ctx.createLinearGradient(0, 0, 0, h);
        this.grad.addColorStop(0, this.color + '40');
        this.grad.addColorStop(1, this.color + '00');
      }
      ctx.fillStyle = this.grad;
      ctx.beginPath();
      this.trace(X, Y, bottom);
      ctx.fill();
    }
    ctx.strokeStyle = o.stale ? colors.muted : this.color;
    ctx.lineWidth = Math.max(1.5, o.rem * 0.14);
    ctx.lineJoin = 'round';
    ctx.beginPath();
    this.trace(X, Y, 0);
    ctx.stroke();
    // Across a gap (missed updates, or a long silence) a dashed line: what
    // happened in between is unknown.
    ctx.setLineDash(DASH);
    ctx.beginPath();
    for (let k = 1; k < this.len; k++) {
      const i = (this.head + k) % cap, j = (i + cap - 1) % cap;
      if (!gap[i]) continue;
      ctx.moveTo(X(t[j]), Y(v[j]));
      ctx.lineTo(X(t[i]), Y(v[i]));
    }
    ctx.stroke();
    ctx.setLineDash(SOLID);
    const last = (this.head + this.len - 1) % cap; // the latest point
    ctx.fillStyle = ctx.strokeStyle;
    ctx.beginPath();
    ctx.arc(X(t[last]), Y(v[last]), Math.max(2.5, o.rem * 0.22), 0, 2 * Math.PI);
    ctx.fill();

    // The grid lines' values, over the line, with a halo to stay readable.
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    ctx.textAlign = 'left';
    ctx.textBaseline = 'bottom';
    ctx.lineWidth = 3;
    ctx.strokeStyle = colors.card;
    ctx.fillStyle = colors.muted;
    for (let k = 0; k <= lines; k++) {
      const y = Math.round(Y(lo + k * step)) - 1;
      if (y - fs <= top) continue;
      const label = o.format(lo + k * step, decimals, step);
      ctx.strokeText(label, 2, y);
      ctx.fillText(label, 2, y);
    }
  }
}
