// @ts-check
/**
 * The service's API as the page uses it: `GET /v1/find` and `GET /v1/histogram` with the key
 * of this tab, and its errors turned into sentences a reader can act on. The key lives in
 * sessionStorage only (this tab, until it is closed or the reader signs out).
 */

/**
 * @typedef {{id: string, type: string, consumer: string, created_at: string, payload?: unknown}} Event
 * @typedef {{events: Event[], next_cursor?: string, complete_until?: string, tiers?: string[]}} FindPage
 * @typedef {{start: string, count: number, counts?: Record<string, number>, other?: number}} Bucket
 * @typedef {{bucket: string, bucket_ms: number, created_from: string, created_to: string, by?: string,
 *   total: number, series: string[], buckets: Bucket[], complete_until?: string, tiers?: string[]}} Histogram
 * @typedef {Record<string, string|number|boolean|null|undefined>} Params
 */

const KEY = 'auditlog.apiKey';

/** The key of this tab, or null. */
export function getKey() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

/** @param {string} key */
export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    /* storage unavailable: nothing kept */
  }
}

/** An answer other than 2xx, or no answer at all (`status` "network"). */
export class ApiError extends Error {
  /**
   * @param {number|'network'} status
   * @param {string} code
   * @param {string} message the server's message (or the network error's)
   * @param {number|null} retryAfter seconds, from Retry-After
   */
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** What the reader should know, and do. */
  describe() {
    const wait = this.retryAfter ? ` Try again in ${this.retryAfter} s.` : ' Try again shortly.';
    switch (this.status) {
      case 'network':
        return 'Cannot reach the audit log service. Check your network connection, then try again.';
      case 401:
        return 'The API key was refused: it is wrong, or it was revoked or replaced. Sign in again with a valid key.';
      case 403:
        if (this.code === 'consumer_not_allowed') {
          return `This key may not read that consumer. Clear the consumer filter or choose one of the key's consumers. (${this.message})`;
        }
        return 'This key may not read events: it lacks the "read" right. Ask your administrator for a key with the read right.';
      case 400:
      case 422:
        return `The search was refused: ${this.message}`;
      case 429:
        return `Too many requests for now.${wait}`;
      case 503:
        if (this.code === 'archive_unavailable') {
          return `The archive of older events is unavailable right now.${wait} Recent time ranges still work.`;
        }
        if (this.code === 'query_timeout') {
          return `The search took too long. Narrow the time range or filter by type or consumer.${wait}`;
        }
        return `The event store is unavailable right now.${wait}`;
      default:
        return `The service answered ${this.status}${this.message ? `: ${this.message}` : ''}.`;
    }
  }
}

/**
 * GET `path` with `params` (empty values left out) and the key.
 * @param {string} path
 * @param {Params} params
 * @param {{signal?: AbortSignal, key?: string|null}} [opts]
 * @returns {Promise<any>}
 */
async function get(path, params, opts = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
  }
  const key = opts.key ?? getKey() ?? '';
  let resp;
  try {
    resp = await fetch(`${path}?${qs}`, {
      headers: { 'X-Api-Key': key, Accept: 'application/json' },
      signal: opts.signal,
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError('network', 'network', String(e), null);
  }
  if (resp.ok) {
    try {
      return await resp.json();
    } catch (e) {
      throw new ApiError(resp.status, 'bad_answer', 'the answer was not JSON', null);
    }
  }
  let code = '';
  let message = '';
  try {
    const body = await resp.json();
    code = body?.error?.code ?? '';
    message = body?.error?.message ?? '';
  } catch {
    /* no JSON body */
  }
  const ra = Number.parseInt(resp.headers.get('Retry-After') ?? '', 10);
  throw new ApiError(resp.status, code, message, Number.isFinite(ra) ? ra : null);
}

/**
 * One page of `GET /v1/find`.
 * @param {Params} params type, consumer, created_from, created_to, limit, cursor, order
 * @param {{signal?: AbortSignal, key?: string|null}} [opts]
 * @returns {Promise<FindPage>}
 */
export const find = (params, opts) => get('/v1/find', params, opts);

/**
 * `GET /v1/histogram`.
 * @param {Params} params type, consumer, created_from, created_to, bucket, by, top
 * @param {{signal?: AbortSignal}} [opts]
 * @returns {Promise<Histogram>}
 */
export const histogram = (params, opts) => get('/v1/histogram', params, opts);

/**
 * Which store answered a find page, from its `tiers`: `archive`, `mongodb` or `mixed`.
 * Events carry no tier of their own, so every row of a page gets its page's.
 * @param {string[]|undefined} tiers
 * @returns {'archive'|'mongodb'|'mixed'}
 */
export function pageTier(tiers) {
  const t = new Set(tiers ?? []);
  if (t.has('archive') && t.has('mongodb')) return 'mixed';
  if (t.has('archive')) return 'archive';
  return 'mongodb';
}
