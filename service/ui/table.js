// @ts-check
/**
 * The results table: one fixed-height row per event, newest first, each with its tier badge;
 * rows are added at the bottom (next page) or the top (live), never twice (by id). Keeps the
 * selected row for the keyboard.
 */
import { el, fmtTime, summarize } from './util.js';

/**
 * @typedef {import('./api.js').Event} Event
 * @typedef {'archive'|'mongodb'|'mixed'} Tier
 */

const BADGE = { archive: 'archive', mongodb: 'live', mixed: 'archive+live' };
const BADGE_TITLE = {
  archive: 'Read from the archive (Parquet files)',
  mongodb: 'Read from the live store (MongoDB)',
  mixed: 'Its page was read from both the archive and the live store',
};

export class Table {
  /**
   * @param {HTMLTableElement} table
   * @param {(ev: Event, tier: Tier, row: HTMLTableRowElement) => void} onOpen
   */
  constructor(table, onOpen) {
    this.tbody = /** @type {HTMLTableSectionElement} */ (table.tBodies[0]);
    this.onOpen = onOpen;
    /** @type {Map<string, {ev: Event, tier: Tier}>} */
    this.rows = new Map();
    /** @type {HTMLTableRowElement|null} */
    this.selected = null;
    /** @type {import('./util.js').Tz} */
    this.tz = 'local';
    this.tbody.addEventListener('click', (e) => {
      const row = /** @type {HTMLElement} */ (e.target).closest('tr.event-row');
      if (row) this.open(/** @type {HTMLTableRowElement} */ (row));
    });
    this.tbody.addEventListener('keydown', (e) => {
      const row = /** @type {HTMLElement} */ (e.target).closest('tr.event-row');
      if (row && e.key === 'Enter') {
        e.preventDefault();
        this.open(/** @type {HTMLTableRowElement} */ (row));
      }
    });
  }

  get count() {
    return this.rows.size;
  }

  /** Events loaded, in table order. */
  events() {
    return [...this.rows.values()].map((r) => r.ev);
  }

  /**
   * Empty, with `skeleton` placeholder rows while the first page loads.
   * @param {number} [skeleton]
   */
  clear(skeleton = 0) {
    this.rows.clear();
    this.selected = null;
    const rows = [];
    for (let i = 0; i < skeleton; i++) {
      rows.push(el('tr', { class: 'skeleton', 'aria-hidden': 'true' },
        ...['c-time', 'c-type', 'c-consumer', 'c-payload', 'c-tier'].map((c) => el('td', { class: c }, el('span')))));
    }
    this.tbody.replaceChildren(...rows);
  }

  /**
   * A row for `ev`.
   * @param {Event} ev
   * @param {Tier} tier
   */
  row(ev, tier) {
    const summary = summarize(ev.payload);
    return /** @type {HTMLTableRowElement} */ (el('tr', {
      class: 'event-row', tabindex: -1, 'data-id': ev.id, 'data-created-at': ev.created_at, 'data-tier': tier,
      'aria-selected': 'false',
    },
    el('td', { class: 'c-time' }, el('time', { datetime: ev.created_at }, fmtTime(ev.created_at, this.tz))),
    el('td', { class: 'c-type', title: ev.type }, ev.type),
    el('td', { class: 'c-consumer', title: ev.consumer }, ev.consumer),
    el('td', { class: 'c-payload', title: summary }, summary),
    el('td', { class: 'c-tier' }, el('span', { class: `tier-badge tier-${tier}`, title: BADGE_TITLE[tier] }, BADGE[tier]))));
  }

  /**
   * Adds `events` (in table order) below or above the rows; returns how many were new.
   * @param {Event[]} events
   * @param {Tier} tier
   * @param {'bottom'|'top'} where
   */
  add(events, tier, where = 'bottom') {
    this.tbody.querySelectorAll('tr.skeleton').forEach((r) => r.remove());
    const fresh = [];
    for (const ev of events) {
      if (!ev || this.rows.has(ev.id)) continue;
      this.rows.set(ev.id, { ev, tier });
      fresh.push(this.row(ev, tier));
    }
    if (where === 'top') this.tbody.prepend(...fresh);
    else this.tbody.append(...fresh);
    return fresh.length;
  }

  /** The newest `created_at` loaded (the first row's), or null. */
  newest() {
    const first = this.tbody.querySelector('tr.event-row');
    return first ? /** @type {HTMLElement} */ (first).dataset.createdAt ?? null : null;
  }

  /**
   * @param {HTMLTableRowElement|null} row
   * @param {boolean} [focus]
   */
  select(row, focus = true) {
    if (!row) return;
    if (this.selected) {
      this.selected.setAttribute('aria-selected', 'false');
      this.selected.tabIndex = -1;
    }
    this.selected = row;
    row.setAttribute('aria-selected', 'true');
    row.tabIndex = 0;
    if (focus) {
      row.focus({ preventScroll: true });
      row.scrollIntoView({ block: 'nearest' });
    }
  }

  /** @param {number} delta +1 next (older), -1 previous */
  move(delta) {
    const cur = this.selected && this.selected.isConnected ? this.selected : null;
    let next = cur
      ? /** @type {HTMLTableRowElement|null} */ (delta > 0 ? cur.nextElementSibling : cur.previousElementSibling)
      : /** @type {HTMLTableRowElement|null} */ (this.tbody.querySelector('tr.event-row'));
    if (next && next.classList.contains('event-row')) this.select(next);
    else if (cur) this.select(cur);
  }

  openSelected() {
    if (this.selected && this.selected.isConnected) this.open(this.selected);
  }

  /** @param {HTMLTableRowElement} row */
  open(row) {
    const r = this.rows.get(row.dataset.id ?? '');
    if (!r) return;
    this.select(row);
    this.onOpen(r.ev, r.tier, row);
  }
}
