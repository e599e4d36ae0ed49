// @ts-check
/**
 * The view's filters and the URL: every filter lives in the query string, so a copied URL
 * opens the same view and back/forward move between views. Presets (`range=1h`) are relative
 * to now when the view loads; a custom range is `from`/`to`, ISO UTC.
 *
 *   ?type=login&consumer=billing&range=24h&tz=local&by=type
 *   ?from=2026-01-01T00:00:00.000Z&to=2026-01-02T00:00:00.000Z&tz=utc&by=consumer
 */

/**
 * @typedef {'15m'|'1h'|'24h'|'7d'|'custom'} Range
 * @typedef {'type'|'consumer'|'none'} By
 * @typedef {{type: string, consumer: string, range: Range, from: string|null, to: string|null,
 *   tz: import('./util.js').Tz, by: By}} Filters
 * @typedef {{from: string, to: string|null}} Window  ISO UTC; `to` null: until now
 */

/** @type {Record<string, number>} */
export const PRESETS = { '15m': 15 * 60_000, '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 };

/** @type {Filters} */
export const DEFAULTS = { type: '', consumer: '', range: '24h', from: null, to: null, tz: 'local', by: 'type' };

/**
 * A time of the URL: kept as written when it names its zone (so the URL stays the one that
 * was shared), else read as UTC — as the API reads it — and written ISO UTC; null if not a time.
 * @param {string|null} v
 */
function iso(v) {
  if (!v) return null;
  const zoned = /(Z|[+-]\d\d:?\d\d)$/i.test(v);
  const d = new Date(zoned || !v.includes('T') ? v : `${v}Z`);
  if (Number.isNaN(d.getTime())) return null;
  return zoned ? v : d.toISOString();
}

/**
 * The filters a query string says (defaults for what it leaves out or gets wrong).
 * @param {string} search
 * @returns {Filters}
 */
export function fromQuery(search) {
  const q = new URLSearchParams(search);
  const from = iso(q.get('from'));
  const to = iso(q.get('to'));
  const range = q.get('range') ?? '';
  const tz = q.get('tz');
  const by = q.get('by');
  return {
    type: (q.get('type') ?? '').trim(),
    consumer: (q.get('consumer') ?? '').trim(),
    range: from || to ? 'custom' : range in PRESETS ? /** @type {Range} */ (range) : DEFAULTS.range,
    from,
    to,
    tz: tz === 'utc' || tz === 'local' ? tz : DEFAULTS.tz,
    by: by === 'type' || by === 'consumer' || by === 'none' ? by : DEFAULTS.by,
  };
}

/**
 * The query string of `f`.
 * @param {Filters} f
 */
export function toQuery(f) {
  const q = new URLSearchParams();
  if (f.type) q.set('type', f.type);
  if (f.consumer) q.set('consumer', f.consumer);
  if (f.range === 'custom') {
    if (f.from) q.set('from', f.from);
    if (f.to) q.set('to', f.to);
  } else {
    q.set('range', f.range);
  }
  q.set('tz', f.tz);
  q.set('by', f.by);
  return `?${q}`;
}

/**
 * The time window of `f` at `now`: a preset ends now; a custom range without `to` too.
 * @param {Filters} f
 * @param {number} now
 * @returns {Window}
 */
export function windowOf(f, now) {
  if (f.range !== 'custom') {
    return { from: new Date(now - PRESETS[f.range]).toISOString(), to: null };
  }
  const to = f.to;
  const from = f.from ?? new Date((to ? Date.parse(to) : now) - PRESETS['24h']).toISOString();
  return { from, to };
}

/**
 * Whether two filters show the same view.
 * @param {Filters} a
 * @param {Filters} b
 */
export const same = (a, b) => toQuery(a) === toQuery(b);

const RECENT = 'auditlog.recent.';

/**
 * Values recently searched for (`type` or `consumer`), newest first; kept in localStorage
 * (never the key).
 * @param {'type'|'consumer'} field
 * @returns {string[]}
 */
export function recent(field) {
  try {
    const v = JSON.parse(localStorage.getItem(RECENT + field) ?? '[]');
    return Array.isArray(v) ? v.filter((x) => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

/**
 * @param {'type'|'consumer'} field
 * @param {string} value
 */
export function remember(field, value) {
  if (!value) return;
  const list = [value, ...recent(field).filter((v) => v !== value)].slice(0, 20);
  try {
    localStorage.setItem(RECENT + field, JSON.stringify(list));
  } catch {
    /* storage full or off: suggestions only */
  }
}
