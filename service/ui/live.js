// @ts-check
/**
 * Live tail: every 2 s, `GET /v1/find?order=asc&created_from=<newest shown>` then its
 * `next_cursor`. Ascending pages stop at `complete_until`, so an event appears once every
 * event before it is visible, and the cursor never passes one that lands late. New events go
 * to the top — unless the reader has scrolled away from it: then they are held, and counted,
 * until the reader asks for them or scrolls back.
 */
import { find, pageTier } from './api.js';

/** @typedef {import('./api.js').Event} Event */

const EVERY_MS = 2000;

export class Live {
  /**
   * @param {{
   *   params: () => {type: string, consumer: string, created_from: string},
   *   deliver: (events: Event[], tier: import('./table.js').Tier) => void,
   *   shown: (id: string) => boolean,
   *   paused: () => boolean,
   *   status: (text: string, paused: boolean, held: number) => void,
   *   failed: (e: unknown) => void,
   * }} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.on = false;
    /** @type {string|undefined} */
    this.cursor = undefined;
    /** @type {{type: string, consumer: string, created_from: string}|undefined} */
    this.base = undefined;
    /** @type {{events: Event[], tier: import('./table.js').Tier}[]} */
    this.held = [];
    /** @type {ReturnType<typeof setTimeout>|undefined} */
    this.timer = undefined;
    /** @type {AbortController|null} */
    this.abort = null;
    this.gen = 0;
  }

  start() {
    if (this.on) return;
    this.on = true;
    this.cursor = undefined;
    this.base = undefined;
    this.held = [];
    this.gen++;
    this.schedule(0);
  }

  stop() {
    this.on = false;
    this.gen++;
    clearTimeout(this.timer);
    this.abort?.abort();
    this.held = [];
    this.hooks.status('', false, 0);
  }

  /** Restarts from the view's newest event (a new view was loaded). */
  restart() {
    if (!this.on) return;
    this.stop();
    this.start();
  }

  /** @param {number} ms */
  schedule(ms) {
    clearTimeout(this.timer);
    const gen = this.gen;
    this.timer = setTimeout(() => this.poll(gen), ms);
  }

  get heldCount() {
    return this.held.reduce((n, h) => n + h.events.length, 0);
  }

  /** Gives the held events to the table. */
  flush() {
    const held = this.held;
    this.held = [];
    for (const h of held) this.hooks.deliver(h.events, h.tier);
    this.report();
  }

  report() {
    const n = this.heldCount;
    const paused = this.on && this.hooks.paused() && n > 0;
    this.hooks.status(this.on ? (paused ? 'paused' : 'following new events') : '', paused, n);
  }

  /** @param {number} gen */
  async poll(gen) {
    if (!this.on || gen !== this.gen) return;
    this.abort = new AbortController();
    try {
      // The first poll starts at the newest event shown; the next ones follow the cursor with
      // the same filters, as the API wants.
      if (!this.base) this.base = this.hooks.params();
      for (let i = 0; i < 10; i++) {
        const params = { ...this.base, order: 'asc', limit: 100, cursor: this.cursor };
        const page = await find(params, { signal: this.abort.signal });
        if (gen !== this.gen) return;
        if (page.next_cursor) this.cursor = page.next_cursor;
        // The first page starts at the newest event shown (inclusive): it is not new.
        const fresh = page.events.filter((e) => !this.hooks.shown(e.id));
        if (fresh.length) {
          this.held.push({ events: fresh, tier: pageTier(page.tiers) });
        }
        if (page.events.length < 100 || !page.next_cursor) break;
      }
      if (!this.hooks.paused()) this.flush();
      else this.report();
    } catch (e) {
      if (gen !== this.gen || (e instanceof DOMException && e.name === 'AbortError')) return;
      this.hooks.failed(e);
    }
    if (this.on && gen === this.gen) this.schedule(EVERY_MS);
  }
}
