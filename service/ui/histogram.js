// @ts-check
/**
 * The histogram above the results: one stacked SVG bar per bucket of `GET /v1/histogram`
 * (split by type or consumer, the rest as "other"), with axes, a legend and the total. A
 * click on a bar, or a drag across bars, narrows the view to that span (snapped to bucket
 * edges). Its height is fixed, so loading or failing never moves the page.
 */
import { el, svg, fmtTick, fmtTime, fmtCount } from './util.js';

/** @typedef {import('./api.js').Histogram} Histogram */

const HEIGHT = 140;
const M = { top: 10, right: 8, bottom: 24, left: 44 };
const COLORS = 10;

export class HistogramView {
  /**
   * @param {HTMLElement} box the #histogram element
   * @param {HTMLElement} legend
   * @param {HTMLElement} total
   * @param {(from: string, to: string) => void} onNarrow
   */
  constructor(box, legend, total, onNarrow) {
    this.box = box;
    this.legend = legend;
    this.total = total;
    this.onNarrow = onNarrow;
    /** @type {Histogram|null} */
    this.data = null;
    /** @type {import('./util.js').Tz} */
    this.tz = 'local';
    /** @type {{x0: number, i0: number, rect: SVGElement} | null} */
    this.drag = null;
    this.width = 0;
    new ResizeObserver(() => {
      if (this.data && Math.abs(this.box.clientWidth - this.width) > 4) this.render(this.data, this.tz);
    }).observe(box);
    window.addEventListener('mouseup', (e) => this.endDrag(e));
  }

  /** @param {string} text */
  message(text) {
    this.data = null;
    this.box.replaceChildren(el('p', { class: 'h-message' }, text));
    this.legend.replaceChildren();
  }

  loading() {
    this.box.classList.add('loading');
    if (!this.data) this.message('Loading…');
    this.total.textContent = '';
  }

  /**
   * @param {Histogram} h
   * @param {import('./util.js').Tz} tz
   */
  render(h, tz) {
    this.box.classList.remove('loading');
    this.data = h;
    this.tz = tz;
    const W = Math.max(this.box.clientWidth, 280);
    this.width = W;
    const n = h.buckets.length;
    const total = h.total ?? h.buckets.reduce((s, b) => s + b.count, 0);
    this.total.textContent = `${fmtCount(total)} event${total === 1 ? '' : 's'}`;
    this.total.dataset.total = String(total);
    const root = svg('svg', {
      width: W, height: HEIGHT, viewBox: `0 0 ${W} ${HEIGHT}`, role: 'img',
      'aria-label': `Histogram: ${fmtCount(total)} events in ${n} buckets of ${h.bucket}`,
    });
    const plotW = W - M.left - M.right;
    const plotH = HEIGHT - M.top - M.bottom;
    const max = Math.max(1, ...h.buckets.map((b) => b.count));
    const bw = n ? plotW / n : plotW;
    const gap = bw > 4 ? 1 : 0;
    // Grid and y labels: 0, half, max.
    for (const v of [0, Math.round(max / 2), max]) {
      const y = M.top + plotH - (v / max) * plotH;
      root.append(svg('line', { class: 'grid', x1: M.left, x2: W - M.right, y1: y, y2: y }));
      const t = svg('text', { class: 'axis', x: M.left - 6, y: y + 4, 'text-anchor': 'end' });
      t.textContent = fmtCount(v);
      root.append(t);
    }
    const series = h.series ?? [];
    const span = n * h.bucket_ms;
    const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plotW / 90))));
    h.buckets.forEach((b, i) => {
      const start = new Date(b.start);
      const end = new Date(start.getTime() + h.bucket_ms);
      const x = M.left + i * bw;
      const g = svg('g', {
        class: 'bar', 'data-start': start.toISOString(), 'data-end': end.toISOString(),
        'data-count': b.count, 'data-index': i,
      });
      const title = svg('title');
      const lines = [`${fmtTime(start, tz, false)} – ${fmtTime(end, tz, false)}${tz === 'utc' ? ' UTC' : ''}`,
        `${fmtCount(b.count)} events`];
      g.append(svg('rect', { class: 'hit', x, y: M.top, width: bw, height: plotH }));
      let y = M.top + plotH;
      /** @param {number} count @param {string} cls */
      const stack = (count, cls) => {
        if (!count) return;
        const hgt = (count / max) * plotH;
        y -= hgt;
        g.append(svg('rect', { class: cls, x: x + gap / 2, y, width: Math.max(bw - gap, 0.5), height: hgt }));
      };
      if (series.length && b.counts) {
        series.forEach((s, si) => {
          const c = b.counts?.[s] ?? 0;
          if (c) lines.push(`${s}: ${fmtCount(c)}`);
          stack(c, `s${si % COLORS}`);
        });
        if (b.other) lines.push(`other: ${fmtCount(b.other)}`);
        stack(b.other ?? 0, 'other');
      } else {
        stack(b.count, 's0');
      }
      title.textContent = lines.join('\n');
      g.prepend(title);
      root.append(g);
      if (i % every === 0 && x + 60 < W) {
        const t = svg('text', { class: 'axis', x, y: HEIGHT - 6 });
        t.textContent = fmtTick(start, tz, span, h.bucket_ms);
        root.append(t);
      }
    });
    root.append(svg('line', { class: 'baseline', x1: M.left, x2: W - M.right, y1: M.top + plotH, y2: M.top + plotH }));
    const sel = svg('rect', { class: 'selection', x: 0, y: M.top, width: 0, height: plotH, visibility: 'hidden' });
    root.append(sel);
    root.addEventListener('mousedown', (e) => this.startDrag(e, root, sel, bw));
    root.addEventListener('mousemove', (e) => this.moveDrag(e, root, bw));
    this.box.replaceChildren(root);
    this.renderLegend(series, h.buckets.some((b) => b.other));
  }

  /**
   * @param {string[]} series
   * @param {boolean} other
   */
  renderLegend(series, other) {
    const items = series.map((s, i) => el('span', { class: 'item' }, el('span', { class: `swatch s${i % COLORS}` }), s));
    if (other) items.push(el('span', { class: 'item' }, el('span', { class: 'swatch other' }), 'other'));
    this.legend.replaceChildren(...items);
  }

  /**
   * The bucket under a mouse event.
   * @param {MouseEvent} e
   * @param {SVGElement} root
   * @param {number} bw
   */
  indexAt(e, root, bw) {
    const r = root.getBoundingClientRect();
    const n = this.data?.buckets.length ?? 0;
    return Math.min(n - 1, Math.max(0, Math.floor((e.clientX - r.left - M.left) / bw)));
  }

  /**
   * @param {MouseEvent} e
   * @param {SVGElement} root
   * @param {SVGElement} rect
   * @param {number} bw
   */
  startDrag(e, root, rect, bw) {
    if (e.button !== 0 || !this.data?.buckets.length) return;
    e.preventDefault();
    const i0 = this.indexAt(e, root, bw);
    this.drag = { x0: e.clientX, i0, rect };
    this.showSelection(i0, i0, bw);
  }

  /**
   * @param {MouseEvent} e
   * @param {SVGElement} root
   * @param {number} bw
   */
  moveDrag(e, root, bw) {
    if (!this.drag) return;
    this.showSelection(this.drag.i0, this.indexAt(e, root, bw), bw);
  }

  /**
   * @param {number} a
   * @param {number} b
   * @param {number} bw
   */
  showSelection(a, b, bw) {
    if (!this.drag) return;
    const [lo, hi] = a <= b ? [a, b] : [b, a];
    const r = this.drag.rect;
    r.setAttribute('x', String(M.left + lo * bw));
    r.setAttribute('width', String((hi - lo + 1) * bw));
    r.setAttribute('visibility', 'visible');
  }

  /** @param {MouseEvent} e */
  endDrag(e) {
    const d = this.drag;
    this.drag = null;
    if (!d || !this.data) return;
    const root = /** @type {SVGElement} */ (d.rect.ownerSVGElement ?? d.rect.parentNode);
    const n = this.data.buckets.length;
    const bw = (this.width - M.left - M.right) / n;
    const i1 = root ? this.indexAt(e, root, bw) : d.i0;
    const [lo, hi] = d.i0 <= i1 ? [d.i0, i1] : [i1, d.i0];
    // A click on an empty bucket has nothing to show.
    if (lo === hi && !this.data.buckets[lo].count) {
      d.rect.setAttribute('visibility', 'hidden');
      return;
    }
    const from = new Date(this.data.buckets[lo].start);
    const to = new Date(Date.parse(this.data.buckets[hi].start) + this.data.bucket_ms);
    this.onNarrow(from.toISOString(), to.toISOString());
  }
}
