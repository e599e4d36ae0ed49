// @ts-check
/**
 * Export of the current view: every event of its filters and time window — all pages, not
 * only the rows loaded — as NDJSON (one event per line, as the API gives it) or CSV (id,
 * created_at, type, consumer, payload as a JSON string; RFC 4180 quoting, CRLF lines), newest
 * first like the table, downloaded from a Blob. Progress is reported as it pages.
 */
import { find } from './api.js';

/** @typedef {import('./api.js').Event} Event */

/**
 * One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
 * @param {string} v
 */
export function csvField(v) {
  return /[",\r\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
}

/** @param {Event} e */
const csvLine = (e) => [e.id, e.created_at, e.type, e.consumer, e.payload === undefined ? '' : JSON.stringify(e.payload)]
  .map(csvField).join(',');

/**
 * Pages through `filters` (newest first, 1000 a page), then downloads the file.
 * @param {'ndjson'|'csv'} format
 * @param {{type: string, consumer: string, created_from: string, created_to: string}} filters
 * @param {(count: number) => void} progress
 * @param {AbortSignal} signal
 * @returns {Promise<number>} events exported
 */
export async function exportView(format, filters, progress, signal) {
  /** @type {string[][]} */
  const pages = [];
  let cursor;
  let count = 0;
  /** @type {Set<string>} */
  const seen = new Set();
  for (;;) {
    const page = await find({ ...filters, order: 'desc', limit: 1000, cursor }, { signal });
    const lines = [];
    for (const e of page.events) {
      if (seen.has(e.id)) continue;
      seen.add(e.id);
      lines.push(format === 'csv' ? csvLine(e) : JSON.stringify(e));
    }
    pages.push(lines);
    count += lines.length;
    progress(count);
    if (!page.next_cursor || page.events.length === 0) break;
    cursor = page.next_cursor;
  }
  const eol = format === 'csv' ? '\r\n' : '\n';
  const parts = format === 'csv' ? [`id,created_at,type,consumer,payload${eol}`] : [];
  for (const lines of pages) {
    if (lines.length) parts.push(lines.join(eol) + eol);
  }
  const blob = new Blob(parts, { type: format === 'csv' ? 'text/csv;charset=utf-8' : 'application/x-ndjson' });
  const stamp = (/** @type {string} */ t) => t.replace(/[:]/g, '').replace(/\.\d+Z$/, 'Z');
  const name = `auditlog-${stamp(filters.created_from)}-${stamp(filters.created_to)}.${format}`;
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return count;
}
