/*
 * format.js — numbers as a wall screen shows them, by language: 万 and 亿
 * in Chinese, K, M and B in English; ¥ (and other signs) for money; ratios
 * as percentages. Used by app.js and panels.js (ES modules, nothing
 * global). Every formatter is cached: the page formats several numbers per
 * update for weeks.
 */

const SIGNS = {CNY: '¥', JPY: '¥', USD: '$', EUR: '€', GBP: '£', HKD: 'HK$', TWD: 'NT$', KRW: '₩'};

// The decimals a number was sent with (as far as JSON keeps them: 1.50
// arrives as 1.5), for numbers whose metric does not say.
export function sentDecimals(v) {
  const m = /(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(v));
  return Math.min(20, Math.max(0, (m[1] ? m[1].length : 0) - (m[2] ? Number(m[2]) : 0)));
}

export class Formatter {
  constructor(lang) {
    this.lang = lang;
    this.locale = lang === 'zh' ? 'zh-CN' : 'en-US';
    // Largest first. Chinese counts in 万 (10⁴) and 亿 (10⁸).
    // [divisor, suffix, from]: English keeps four digits (6,999) before K.
    this.steps = lang === 'zh' ? [[1e8, '亿', 1e8], [1e4, '万', 1e4]] : [[1e9, 'B', 1e9], [1e6, 'M', 1e6], [1e3, 'K', 1e4]];
    this.cache = new Map();
  }

  // fixed formats v with exactly d decimals and the language's separators.
  fixed(v, d) {
    let f = this.cache.get(d);
    if (!f) {
      f = new Intl.NumberFormat(this.locale, {minimumFractionDigits: d, maximumFractionDigits: d});
      this.cache.set(d, f);
    }
    return f.format(v);
  }

  // compact scales v to 万/亿 or K/M/B; d decimals on a scaled number
  // (default 1, or none for a round number: ¥115M), none below the first
  // step unless v has them.
  compact(v, d) {
    const a = Math.abs(v);
    for (const [n, suffix, from] of this.steps) {
      if (a >= from) return this.fixed(v / n, d === undefined ? (Number.isInteger(v / n) ? 0 : 1) : d) + suffix;
    }
    return this.fixed(v, Math.min(d === undefined ? 0 : d, sentDecimals(v)));
  }

  // format shows v as metric m says (m.format, m.decimals, m.currency).
  format(v, m) {
    const d = m && Number.isInteger(m.decimals) ? m.decimals : undefined;
    switch (m && m.format) {
      case 'percent':
        return this.fixed(v * 100, d === undefined ? 1 : d) + '%';
      case 'money': {
        const code = m.currency || 'CNY';
        const sign = SIGNS[code] || code + ' ';
        return (v < 0 ? '−' : '') + sign + this.compact(Math.abs(v), d);
      }
      case 'compact':
        return this.compact(v, d);
      default:
        return this.fixed(v, d === undefined ? sentDecimals(v) : d);
    }
  }

  // delta is a signed percentage change: +12.3% / −4.0%.
  delta(ratio) {
    const s = this.fixed(Math.abs(ratio) * 100, 1) + '%';
    return (ratio > 0 ? '+' : ratio < 0 ? '−' : '±') + s;
  }
}
