// @ts-check
/**
 * The detail drawer: every field of one event, its payload pretty-printed, and "Copy JSON"
 * (the clipboard, or where the browser refuses it the text selected for Ctrl+C). Closed by
 * Esc or its button, which give the focus back to the row.
 */
import { el, fmtTime } from './util.js';

/**
 * @typedef {import('./api.js').Event} Event
 * @typedef {import('./table.js').Tier} Tier
 */

const TIER_TEXT = {
  archive: 'archive (Parquet files)',
  mongodb: 'live store (MongoDB)',
  mixed: 'archive and live store (the page crossed from one to the other)',
};

export class Drawer {
  /** @param {HTMLElement} root the #drawer element */
  constructor(root) {
    this.root = root;
    this.fields = /** @type {HTMLElement} */ (root.querySelector('#drawer-fields'));
    this.payload = /** @type {HTMLElement} */ (root.querySelector('#drawer-payload'));
    this.note = /** @type {HTMLElement} */ (root.querySelector('#drawer-note'));
    /** @type {HTMLElement|null} */
    this.returnTo = null;
    this.json = '';
    root.querySelector('#drawer-close')?.addEventListener('click', () => this.close());
    root.querySelector('#drawer-copy')?.addEventListener('click', () => this.copy());
  }

  get isOpen() {
    return !this.root.hidden;
  }

  /**
   * @param {Event} ev
   * @param {Tier} tier
   * @param {import('./util.js').Tz} tz
   * @param {HTMLElement} returnTo
   */
  open(ev, tier, tz, returnTo) {
    this.returnTo = returnTo;
    this.json = JSON.stringify(ev, null, 2);
    /** @type {[string, string][]} */
    const rows = [
      ['id', ev.id],
      ['created_at', `${ev.created_at}  (${fmtTime(ev.created_at, tz)}${tz === 'utc' ? ' UTC' : ' local'})`],
      ['type', ev.type],
      ['consumer', ev.consumer],
      ['source', TIER_TEXT[tier]],
    ];
    for (const [k, v] of Object.entries(ev)) {
      if (!['id', 'created_at', 'type', 'consumer', 'payload'].includes(k)) rows.push([k, JSON.stringify(v)]);
    }
    this.fields.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
    this.payload.textContent = ev.payload === undefined ? '(no payload)' : JSON.stringify(ev.payload, null, 2);
    this.note.textContent = '';
    this.root.hidden = false;
    /** @type {HTMLElement|null} */ (this.root.querySelector('#drawer-close'))?.focus();
  }

  close() {
    if (this.root.hidden) return;
    this.root.hidden = true;
    this.returnTo?.focus({ preventScroll: true });
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.json);
      this.note.textContent = 'Copied the event as JSON.';
    } catch {
      // No clipboard (plain http, or refused): show the whole event selected, for Ctrl+C.
      this.payload.textContent = this.json;
      const range = document.createRange();
      range.selectNodeContents(this.payload);
      const sel = window.getSelection();
      sel?.removeAllRanges();
      sel?.addRange(range);
      this.payload.focus();
      this.note.textContent = 'The browser did not allow copying: the event is selected, press Ctrl+C (⌘C) to copy it.';
    }
  }
}
