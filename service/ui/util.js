// @ts-check
/**
 * Small shared helpers: building DOM nodes (never from HTML strings: event data is only ever
 * set as text) and showing times in UTC or local time.
 */

/** @typedef {'utc'|'local'} Tz */

/**
 * An element with attributes and children (strings become text nodes).
 * @param {string} tag
 * @param {Record<string, string|number|boolean|null|undefined>} [attrs]
 * @param {...(Node|string)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    e.setAttribute(k, v === true ? '' : String(v));
  }
  e.append(...children);
  return e;
}

/**
 * An SVG element with attributes.
 * @param {string} tag
 * @param {Record<string, string|number>} [attrs]
 * @returns {SVGElement}
 */
export function svg(tag, attrs = {}) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** @param {number} n */
export const pad = (n, w = 2) => String(n).padStart(w, '0');

/**
 * The parts of a date in UTC or local time.
 * @param {Date} d
 * @param {Tz} tz
 */
function parts(d, tz) {
  const u = tz === 'utc';
  return {
    y: u ? d.getUTCFullYear() : d.getFullYear(),
    mo: (u ? d.getUTCMonth() : d.getMonth()) + 1,
    d: u ? d.getUTCDate() : d.getDate(),
    h: u ? d.getUTCHours() : d.getHours(),
    mi: u ? d.getUTCMinutes() : d.getMinutes(),
    s: u ? d.getUTCSeconds() : d.getSeconds(),
    ms: u ? d.getUTCMilliseconds() : d.getMilliseconds(),
  };
}

/**
 * `2026-01-02 10:11:12.345` in the chosen time zone.
 * @param {string|Date} t
 * @param {Tz} tz
 * @param {boolean} [ms]
 */
export function fmtTime(t, tz, ms = true) {
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  const p = parts(d, tz);
  const s = `${p.y}-${pad(p.mo)}-${pad(p.d)} ${pad(p.h)}:${pad(p.mi)}:${pad(p.s)}`;
  return ms ? `${s}.${pad(p.ms, 3)}` : s;
}

/**
 * A short axis label: the time of day, with the date when the span covers days.
 * @param {Date} d
 * @param {Tz} tz
 * @param {number} spanMs
 * @param {number} bucketMs
 */
export function fmtTick(d, tz, spanMs, bucketMs) {
  const p = parts(d, tz);
  const date = `${pad(p.mo)}-${pad(p.d)}`;
  if (bucketMs >= 86_400_000) return date;
  const time = bucketMs < 60_000 ? `${pad(p.h)}:${pad(p.mi)}:${pad(p.s)}` : `${pad(p.h)}:${pad(p.mi)}`;
  return spanMs > 86_400_000 ? `${date} ${time}` : time;
}

/**
 * The value of a datetime-local input showing `iso` in the chosen time zone.
 * @param {string|null} iso
 * @param {Tz} tz
 */
export function toInput(iso, tz) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = parts(d, tz);
  return `${p.y}-${pad(p.mo)}-${pad(p.d)}T${pad(p.h)}:${pad(p.mi)}:${pad(p.s)}`;
}

/**
 * The instant a datetime-local value means in the chosen time zone, as ISO UTC; null if empty
 * or not a time.
 * @param {string} value
 * @param {Tz} tz
 */
export function fromInput(value, tz) {
  if (!value) return null;
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(value);
  if (!m) return null;
  const [y, mo, d, h, mi, s, ms] = m.slice(1).map((x) => Number(x || 0));
  const t = tz === 'utc'
    ? Date.UTC(y, mo - 1, d, h, mi, s, ms)
    : new Date(y, mo - 1, d, h, mi, s, ms).getTime();
  return Number.isNaN(t) ? null : new Date(t).toISOString();
}

/** The browser's time zone name, for labels. */
export function localZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local';
  } catch {
    return 'local';
  }
}

/** @param {number} n */
export const fmtCount = (n) => n.toLocaleString('en-US');

/**
 * One line summarising a payload: `key: value, key: value`, nested values as compact JSON.
 * @param {unknown} payload
 * @param {number} [max]
 */
export function summarize(payload, max = 200) {
  if (payload === undefined || payload === null) return '';
  let s;
  if (typeof payload === 'object' && !Array.isArray(payload)) {
    s = Object.entries(/** @type {Record<string, unknown>} */ (payload))
      .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(', ');
  } else {
    s = JSON.stringify(payload);
  }
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
